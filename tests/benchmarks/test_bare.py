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
