"""benchmarks/bare.py: the bare onnxruntime figures the ViT-B server is compared with, from a torch-free process."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.bundles import write_bundle
from tests.helpers.runs import REPO


def test_bare_measures_a_bundle_in_a_process_that_never_imports_torch(tmp_path):
    folder = write_bundle(tmp_path / "bundles", 1)
    out = tmp_path / "bare.json"
    script = ("import json, runpy, sys\n"
              f"sys.argv = ['bare', '--bundle', {str(folder)!r}, '--batch', '4', '--seconds', '0.2', "
              f"'--json', {str(out)!r}]\n"
              "try:\n"
              "    runpy.run_module('benchmarks.bare', run_name='__main__')\n"
              "except SystemExit as done:\n"
              "    assert not done.code, done.code\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'train'))))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1]) == [], "benchmarks.bare pulled in torch or train"
    figures = json.loads(out.read_text())
    assert set(figures["images_per_second"]) == {"1", "4"} and min(figures["images_per_second"].values()) > 0
    assert set(figures["cpu_seconds_per_image"]) == {"4"} and figures["cpu_seconds_per_image"]["4"] > 0


def test_the_paired_cost_reads_the_server_s_cpu_for_the_same_batch(tmp_path):
    from benchmarks.bare import paired_cost
    from tests.helpers.servers import start_server_process

    folder = write_bundle(tmp_path / "bundles", 1)
    process, port, _ = start_server_process(folder.parent)
    try:
        cost = paired_cost(folder, batch=4, rounds=3, target=f"127.0.0.1:{port}", server_pid=process.pid)
    finally:
        process.kill()
        process.wait()
    assert cost["batch"] == 4 and len(cost["rounds"]) == 3
    for r in cost["rounds"]:  # the ratio is the pair's (a tiny graph's server CPU may round to 0 ticks)
        assert r["bare_cpu_seconds_per_image"] > 0 and r["server_cpu_seconds_per_image"] >= 0
        assert r["ratio"] == r["server_cpu_seconds_per_image"] / r["bare_cpu_seconds_per_image"]
    assert cost["ratio"] == sorted(r["ratio"] for r in cost["rounds"])[1]
