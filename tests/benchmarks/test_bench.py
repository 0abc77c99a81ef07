"""`make bench`'s report says only what its run measured, and the harness runs end to end in its bounded mode.

The report tests render synthetic figures: every figure in BENCHMARKS.md must move when the run's figures move
(fixed text may hold only the targets), machine statements follow what the run recorded, and every met/missed
mark follows the figures. The end-to-end tests run `python -m benchmarks.suite --quick` (no timing assertions:
the figures depend on the machine and its load).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from benchmarks import report
from benchmarks.suite import cpu_flags
from tests.helpers.bundles import write_bundle
from tests.helpers.runs import FAST, REPO, child_env, run_main


def synthetic_figures() -> dict:
    """Figures shaped as benchmarks.suite writes them, every float distinct and away from rounding edges."""
    latency = {c: {"p50_ms": 3.41 * i, "p95_ms": 5.17 * i, "p99_ms": 7.23 * i, "images_per_second": 151.3 * i,
                   "failures": {}} for i, c in enumerate(("1", "8", "32"), start=1)}
    point = lambda rate, p50: {"images_per_second": rate, "p50_ms": p50, "p99_ms": 2.3 * p50, "requests": 421,
                               "failures": {}}
    return {
        "command": "make bench", "quick": False, "started": "today", "seconds": 311.7,
        "machine": {"cpu": "Some CPU", "cores": 2, "cpu_flags": ["avx2", "fma", "avx512f", "avx512_vnni"],
                    "memory_gib": 23.7, "cuda_available": False, "gpu": None, "load_average_start": [0.53, 0.61, 0.77],
                    "load_average_end": [0.91, 0.67, 0.79], "python": "py", "versions": {"torch": "t", "numpy": "n"}},
        "peak": {"n": 2048, "rounds": 4, "start": {"torch": 181.3, "onnxruntime": 203.7, "numpy": 97.9},
                 "end": {"torch": 171.9, "onnxruntime": 197.3, "numpy": 93.1},
                 "source": "onnxruntime, every core, start of the run", "best_gflops": 203.7},
        "training": {"run_dir": "run", "wall_seconds": 41.3, "world_size": 2, "final_average_accuracy": 91.37,
                     "train_images_per_second": 1233.1, "stage1_train_images_per_second": 2207.9,
                     "per_task": [{"task": 0, "train_images_per_second": 1201.7, "train_seconds": 2.19,
                                   "statistics": 0.117, "alignment": 0.031}],
                     "rank_peak_rss_mib": [611.3, 608.9], "rank_threads": [1, 1]},
        "step": {"backbone": "vit_glyph_patch8_32", "img_size": 32,
                 "flops": {"batch": 32, "forward": 1.09e9, "backward": 1.01e9, "done": 2.1e9, "needed_forward": 1.09e9,
                           "needed": 2.1e9, "reference_frozen_forward": 1.07e9, "reference": 3.17e9,
                           "discarded_forward": 3.1e7},
                 "in_process": {"images_per_second": 811.3}, "gemm_gflops_torch_1thread": 101.9,
                 "gemm_gflops_torch_1thread_before_after": [99.7, 101.9], "achieved_gflops": 53.23,
                 "efficiency": 0.5224},
        "export_seconds": 23.9,
        "eager": {"flops_per_image": {"router": 3.43e7, "classifier": 3.51e7, "two_step": 6.94e7},
                  "by_batch": {"8": {"eager": 701.3, "eager_again": 713.9, "onnxruntime": 911.7, "ratio": 1.2887},
                               "32": {"eager": 1101.3, "eager_again": 1097.1, "onnxruntime": 1511.9,
                                      "ratio": 1.3753}}},
        "serving": {
            "bundle": "bundles/5", "version": 5, "method": "hideprompt", "routing": "task", "onnxruntime": "o",
            "plan": {"seconds": 6.5, "batch": 32, "request_batch": 8, "saturation_concurrency": 8, "rounds": 1,
                     "server_batch": 32, "queue_delay_ms": 2.5},
            "bare": {"1": 317.9, "8": 911.7, "32": 1511.9},
            "saturation": {"rounds": [{"bare": 1511.9, "server": 1283.3, "ratio": 0.8488}], "ratio": 0.8488,
                           "server_images_per_second": 1283.3, "bare_images_per_second": 1511.9,
                           "mean_executed_batch": 31.7, "server_peak_rss_mib": 287.3},
            "latency": latency,
            "variants": {"fp32": {"images_per_second": 1511.9, "accuracy": 91.37, "export_accuracy": 91.37},
                         "int8": {"images_per_second": 2711.3, "accuracy": 90.13, "export_accuracy": 90.13},
                         "rejected": {"ort-optimized": "slower than fp32"}, "fp16_note": "fp16 is a GPU variant."},
            "versus_eager": {"rounds": 1, "request_batch": 1, "baselines": {"eager": 0, "eager_1thread": 1},
                             "1": {"ours": point(171.3, 5.71), "eager": point(91.9, 9.87),
                                   "eager_1thread": point(201.9, 4.87),
                                   "all_rounds": {"ours": [5.71], "eager": [9.87], "eager_1thread": [4.87]}},
                             "8": {"ours": point(617.3, 12.9), "eager": point(213.7, 37.1),
                                   "eager_1thread": point(191.3, 41.9),
                                   "all_rounds": {"ours": [617.3], "eager": [213.7], "eager_1thread": [191.3]}},
                             "best_baseline_c8": "eager", "best_baseline_c1": "eager_1thread",
                             "throughput_ratio_c8": 617.3 / 213.7, "p50_ratio_c1": 5.71 / 4.87}}}


def scaled(value, counter: list[int] | None = None):
    """Every float of the figures times its own factor (1.113, 1.226, ...: ratios of two figures move too); ints —
    batches, counts, indices — stay."""
    counter = [0] if counter is None else counter
    if isinstance(value, dict):
        return {k: scaled(v, counter) for k, v in value.items()}
    if isinstance(value, list):
        return [scaled(v, counter) for v in value]
    if isinstance(value, float):
        counter[0] += 1
        return value * (1 + 0.113 * counter[0])
    return value


# a figure: a decimal, or a number followed by a unit or a ratio sign
FIGURE = re.compile(r"(?<![A-Za-z_.\d])(?:\d+\.\d+|\d+(?=\s*(?:×|%|ms\b|s\b|GiB|MiB|GFLOP|M\b)))")


def integers(value) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(integers(v) for v in value.values())) | {k for k in value if k.isdigit()}
    if isinstance(value, list):
        return set().union(*(integers(v) for v in value)) if value else set()
    return {str(value)} if isinstance(value, int) and not isinstance(value, bool) else set()


def test_every_figure_in_the_report_moves_with_the_run():
    """Render the figures and the same figures with every float scaled: a figure present in both renders is fixed
    text, and only the targets and the run's own integers (batches, cores, rounds) may be (the old report's notes
    printed "1.78", "11.4×", "0.75×", "87%" whatever the run measured)."""
    figures = synthetic_figures()
    first, second = report.render(figures), report.render(scaled(figures))
    fixed = set(FIGURE.findall(first)) & set(FIGURE.findall(second))
    targets = {f"{report.SERVER_OVER_BARE:.2f}", f"{report.EAGER_THROUGHPUT_C8}", f"{report.EAGER_P50_C1:.2f}",
               f"{report.GRAPH_EFFICIENCY:.0%}".rstrip("%"), f"{report.DONE_OVER_NEEDED}",
               *(f"{t:.2f}" for t in report.SERVER_CPU_COST.values()), f"{report.SERVER_RSS_PER_BACKBONE}"}
    allowed = targets | integers(figures)
    assert fixed <= allowed, f"figures the run did not produce: {sorted(fixed - allowed)}"
    assert "1.29×" in first and "2.89×" in first  # eager ratio (in-process) and 617.3/213.7 (served vs eager)


def test_machine_statements_follow_what_the_run_recorded():
    figures = synthetic_figures()
    text = report.render(figures)
    assert "no CUDA device was visible to this run" in text
    assert "no GPU was lent" not in text and "shared the cores" not in text
    assert _row(text, "| CPU flags read from /proc/cpuinfo").endswith("| avx2 fma avx512f avx512_vnni |")
    assert "start 0.53, 0.61, 0.77; end 0.91, 0.67, 0.79" in text

    busy = copy.deepcopy(figures)
    busy["machine"]["load_average_end"] = [5.63, 3.1, 2.2]
    text = report.render(busy)
    assert "the 1-minute load reached 5.63, above the 2 cores, so other processes shared the cores" in text

    gpu = copy.deepcopy(figures)
    gpu["machine"].update(cuda_available=True, gpu="Some GPU")
    text = report.render(gpu)
    assert "no CUDA device" not in text and "Some GPU" in text


def test_cpu_flags_are_read_as_whole_tokens_of_the_flags_line():
    cpuinfo = ("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx2 fma avx512f avx512fp16 avx512_bf16 "
               "amx_tile amx_int8\nbugs\t\t: avx512_vnni\n")
    assert cpu_flags(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_int8"]
    assert cpu_flags("model name: X\n") == []


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_marks_follow_the_figures():
    figures = synthetic_figures()
    text = report.render(figures)
    row = _row(text, "| served two-step / PyTorch-eager gRPC server")
    assert row.endswith("**met** |") and "617.3 vs 213.7, PyTorch eager, torch default threads" in row  # 2.89 ≥ 1.5
    row = _row(text, "| p50 at concurrency 1")  # against the better baseline: 4.87 ms (1 thread), not 9.87 ms
    assert row.endswith("**missed** |") and "5.71 vs 4.87 ms, PyTorch eager, 1 thread)" in row
    assert _row(text, "| server at saturation").endswith("**missed** |")  # 0.849 < 0.90
    assert _row(text, "| stage-2 step FLOPs done").endswith("**met** |")

    v = figures["serving"]["versus_eager"]
    v["throughput_ratio_c8"], v["p50_ratio_c1"] = 1.49, 0.97
    figures["serving"]["saturation"]["ratio"] = 0.93
    text = report.render(figures)
    assert _row(text, "| served two-step / PyTorch-eager gRPC server").endswith("**missed** |")
    assert _row(text, "| p50 at concurrency 1").endswith("**met** |")
    assert _row(text, "| server at saturation").endswith("**met** |")


def test_an_efficiency_above_the_measured_peak_is_reported_as_an_unreliable_peak():
    figures = synthetic_figures()
    figures["peak"]["best_gflops"] = 50.0  # batch 32: 69.4 MFLOP × 1511.9 images/s = 104.9 GFLOP/s > the peak
    text = report.render(figures)
    row = _row(text, "| served graphs' FLOP/s / fp32 peak, batch 32")
    assert "above the measured peak 50.0 GFLOP/s" in row and "unreliable" in row and "not assessable |" in row
    percents = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)%", text)]
    assert percents and max(percents) <= 100.0


def test_quick_mode_without_a_run_says_what_it_did_not_measure():
    figures = synthetic_figures()
    for key in ("training", "eager"):
        figures.pop(key)
    figures["serving"]["versus_eager"] = None
    text = report.render(figures)
    assert "| 2-rank DeepSpeed run | not measured (quick mode) |" in text
    assert _row(text, "| served two-step / PyTorch-eager gRPC server").endswith("not measured |")


REQUIRED_ROWS = [
    "## Machine", "| command |", "## fp32 peak (this run)", "server at saturation / bare onnxruntime",
    "served two-step / PyTorch-eager gRPC server", "| p50 at concurrency 1",
    "served graphs' FLOP/s / fp32 peak, batch 8", "stage-2 step FLOPs done / needed", "stage-2 step compute efficiency",
    "reference: + a frozen-model forward per step",
    "### Latency", "| 1 |", "| 8 |", "| 32 |", "### Variants", "| fp32 |", "## Memory",
    "| server (`python -m serve`", "| training ranks", "The GPU figures were not measured", "python -m benchmarks.gpu",
    "## Notes",
]


def quick_suite(tmp_path, root, version: int, *extra: str) -> tuple[str, dict]:
    report_path, raw = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--quick", "--bundle", str(root), "--version",
                           str(version), "--out", str(tmp_path / "work"), "--report", str(report_path), "--json",
                           str(raw), *extra], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report_path.read_text()
    missing = [row for row in REQUIRED_ROWS if row not in text]
    assert not missing, f"missing rows {missing}\n{text}"
    figures = json.loads(raw.read_text())
    assert text == report.render(figures)  # the report is its JSON, formatted
    return text, figures


def test_bench_quick_on_a_bundle_writes_every_row(tmp_path):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    text, figures = quick_suite(tmp_path, root, 1)
    assert set(figures["serving"]["latency"]) == {"1", "8", "32"}
    assert figures["step"]["flops"]["discarded_forward"] <= 0.01 * figures["step"]["flops"]["needed_forward"]
    peak = figures["peak"]
    one_thread = figures["step"]["gemm_gflops_torch_1thread_before_after"]
    measured = [*peak["start"].values(), *peak["end"].values(), *one_thread]
    assert set(peak["start"]) == set(peak["end"]) == {"torch", "onnxruntime", "numpy"}
    assert peak["best_gflops"] == max(measured) > 0
    assert figures["machine"]["cpu_flags"] == cpu_flags(open("/proc/cpuinfo").read())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_backbone):
    """A quick Split-Digits HiDe-Prompt run and its bundle root (version 5)."""
    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    exported = subprocess.run([sys.executable, "-m", "export", str(run), "--out", str(root / "bundles"),
                               "--variants", ""], cwd=REPO, env=child_env(), capture_output=True, text=True,
                              timeout=600)
    assert exported.returncode == 0, exported.stderr[-2000:]
    return run, root / "bundles"


@pytest.mark.slow  # a quick training run and its export first (minutes on a shared 2-core machine)
@pytest.mark.timeout(900)
def test_the_eager_server_answers_with_the_bundle_s_model(trained):
    """The baseline serves the same model as the bundle: its top-1 classes are bare onnxruntime's."""
    import numpy as np

    from benchmarks.digits import write_test_npz
    from benchmarks.serving import BareTwoStep, start_eager_server, stop_server
    from export.manifest import load_manifest
    from serve.client import Client, wait_ready

    run, root = trained
    folder = root / "5"
    data = np.load(write_test_npz(run.parent / "test.npz"))
    pixels = np.ascontiguousarray(data["pixel_values"][:64], np.float32)
    expected = BareTwoStep.open(folder, load_manifest(folder))(pixels).argmax(1)
    process, target = start_eager_server(run, folder, threads=1)
    try:
        client = Client.connect(target)
        wait_ready(client, 60)
        response = client.classify(pixels=pixels, top_k=1)
    finally:
        stop_server(process)
    assert [p.top[0].class_id for p in response.predictions] == expected.tolist()
    assert response.bundle_version == 5


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_quick_with_a_run_measures_our_server_against_the_eager_servers(trained, tmp_path):
    """The suite with the run behind the bundle: our server and both PyTorch-eager baselines answer the same load
    side by side, and the ratios are taken against the better baseline."""
    run, root = trained
    text, figures = quick_suite(tmp_path, root, 5, "--run", str(run))
    versus = figures["serving"]["versus_eager"]
    for c in ("1", "8"):
        for server in ("ours", "eager", "eager_1thread"):
            assert versus[c][server]["requests"] > 0 and not versus[c][server]["failures"], versus
    best = max(versus["8"][n]["images_per_second"] for n in ("eager", "eager_1thread"))
    assert versus["throughput_ratio_c8"] == pytest.approx(versus["8"]["ours"]["images_per_second"] / best)
    fastest = min(versus["1"][n]["p50_ms"] for n in ("eager", "eager_1thread"))
    assert versus["p50_ratio_c1"] == pytest.approx(versus["1"]["ours"]["p50_ms"] / fastest)
    row = _row(text, "| served two-step / PyTorch-eager gRPC server")
    assert f"{versus['throughput_ratio_c8']:.2f}×" in row and ("**met**" in row or "**missed**" in row)


def test_gpu_profile_is_prepared(tmp_path):
    """The GPU script prints its plan anywhere; without a GPU a run exits 2 naming the reason (not run here)."""
    plan = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--plan"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert plan.returncode == 0 and "bf16" in plan.stdout and "fp16" in plan.stdout
    import torch

    if torch.cuda.is_available():
        return  # a GPU machine: the profile itself takes minutes, run it by hand
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path / "gpu.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs a GPU" in done.stderr
