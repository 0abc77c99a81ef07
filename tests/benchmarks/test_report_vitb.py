"""The report's ViT-B, variant, training-probe and cost-growth sections say only what the run measured: every
figure moves with the run's figures, marks follow the figures, every miss gets a sentence built from them, and the
random-init weights are said loudly. Plus the pure parts of the section's harness (budget, statistics bytes)."""

from __future__ import annotations

import copy

import pytest

from benchmarks import report, report_vitb
from benchmarks.growth import statistics_bytes
from benchmarks.vitb import Budget, Section
from tests.benchmarks.test_bench import FIGURE, _row, integers, scaled, synthetic_figures


def _point(rate: float, p50: float) -> dict:
    return {"images_per_second": rate, "p50_ms": p50, "p99_ms": 1.7 * p50, "requests": 37, "failures": {}}


def _run(wall: float) -> dict:
    return {"preset": "folder_hideprompt", "run_dir": "run", "wall_seconds": wall, "world_size": 2,
            "stage2_images_per_second_per_rank": [0.413, 0.527], "rank_peak_rss_mib": [1811.3, 1797.1],
            "backbone_checkpoint": "random"}


def _export(seconds: float) -> dict:
    return {"root": "bundles", "version": 2, "seconds": seconds, "files_bytes": {"router.onnx": 1.1e6},
            "bundle_bytes": 3.517e8, "graph_bytes": {"router": 1.13e6, "classifier": 1.93e6},
            "largest_graph_bytes": 1.93e6, "protobuf_limit_bytes": 2**31, "random_init": True, "shared_weights": True,
            "parity": {"samples": 4, "class_agreement": 0.75, "max_abs_logit_diff": 3.1e-6, "passed": True},
            "export_images_per_second": 2.31, "export_batch": 4}


def _probe(precision: str, zero: int, rate: float, rss: float, counted: bool) -> dict:
    rank = lambda r: {"rank": r, "batch": 2, "steps": 2, "images_per_second": rate + 0.011 * r,
                      "peak_rss_mib": rss + 3.3 * r, "flops_per_image": 1.07e11 if counted else None,
                      "gemm_gflops_torch_1thread_before_after": [71.3, 73.9],
                      "efficiency": 0.417 + 0.01 * r if counted else None}
    return {"precision": precision, "zero_stage": zero, "ranks": [rank(0), rank(1)]}


def vitb_figures() -> dict:
    figures = synthetic_figures()
    versus = {"rounds": 1, "request_batch": 1, "baselines": {"eager": 0, "eager_1thread": 1},
              "1": {"ours": _point(1.93, 517.3), "eager": _point(1.71, 553.1), "eager_1thread": _point(0.91, 1101.7)},
              "8": {"ours": _point(2.37, 3311.9), "eager": _point(1.83, 4301.3), "eager_1thread": _point(0.97, 8011.1)},
              "best_baseline_c8": "eager", "best_baseline_c1": "eager"}
    versus["throughput_ratio_c8"] = 2.37 / 1.83
    versus["p50_ratio_c1"] = 517.3 / 553.1
    figures["vitb"] = {
        "skipped": {}, "failed": {}, "backbone": "vit_base_patch16_224", "backbone_checkpoint": "random",
        "random_init": True, "budget": {"total_s": 300.0}, "seconds": 287.3,
        "data": {"tasks": 2, "classes_per_task": 2, "train_images_per_class": 2, "test_images_per_class": 1},
        "hideprompt_run": _run(71.3), "hideprompt_export": _export(41.7),
        "model": {"img_size": 224, "backbone_parameters": 85798656, "backbone_fp32_mib": 327.3,
                  "flops_per_image": {"router": 3.51e10, "classifier": 3.53e10, "two_step": 7.04e10}},
        "bare": {"images_per_second": {"1": 1.37, "8": 2.11}},
        "serving": {"start_seconds": 7.3, "peak_rss_mib": 801.3, "versus_eager": versus},
        "int8": {"build_seconds": 31.3, "bytes": 1.77e8, "agreement": 0.9375, "images": 16, "batch": 8,
                 "images_per_second": 3.71, "fp32_images_per_second": [2.03, 2.19], "speedup": 1.7583},
        "bf16": {"engine": "torch eager, CPU autocast bfloat16", "onnxruntime": "NotImplemented: no bf16 MatMul",
                 "agreement": 0.8125, "images": 16, "batch": 8, "images_per_second": 5.31,
                 "fp32_images_per_second": [1.91, 1.97], "speedup": 2.7371},
        "training": {"fp32_zero0": _probe("fp32", 0, 0.617, 1901.3, True),
                     "fp32_zero2": _probe("fp32", 2, 0.603, 1933.7, False),
                     "bf16_zero0": _probe("bf16", 0, 1.117, 1517.1, False)},
        "hidelora_run": _run(53.9), "hidelora_export": _export(39.1)}
    figures["ort_levels"] = {"batch": 32, "rounds": 2, "fused": ["router.onnx: fused {'SkipLayerNormalization': 12}"],
                             "server_level": "ORT_ENABLE_ALL",
                             "operators_changed": {"classifier": {"SkipLayerNormalization": [0, 12],
                                                                  "Transpose": [20, 35]}},
                             "by_level": {level: {"fp32": 1301.3 + i, "ort-optimized": 911.7 + i,
                                                  "ratio": (911.7 + i) / (1301.3 + i)}
                                          for i, level in enumerate(("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED",
                                                                     "ORT_ENABLE_ALL"))}}
    figures["growth"] = {
        "tasks": {"backbone": "vit_glyph_patch8_32", "classes_per_task": 2,
                  "by_tasks": {str(t): {"graph_bytes": {"router": 4.38e6 + 1.1e3 * t, "classifier": 4.23e6 + 2.1e4 * t},
                                        "bundle_bytes": 8.61e6 + 2.2e4 * t, "latency_ms_p50": 7.9 + 0.031 * t,
                                        "calls": 50, "peak_rss_mib": 87.9 + 0.061 * t} for t in (5, 20, 100)}},
        "statistics": {"n_centroids": 10, "samples_per_dimension": 2,
                       "bytes_per_class": {"768": {"multi-centroid": 61440.0, "covariance": 2362368.0,
                                                   "variance": 6144.0},
                                           "128": {"multi-centroid": 10240.0, "covariance": 66048.0,
                                                   "variance": 1024.0}}}}
    return figures


def test_every_vitb_figure_moves_with_the_run():
    figures = vitb_figures()
    first, second = report.render(figures), report.render(scaled(figures))
    assert "## ViT-B/16" in first and "## How cost grows" in first
    fixed = set(FIGURE.findall(first)) & set(FIGURE.findall(second))
    targets = {f"{report.SERVER_OVER_BARE:.2f}", f"{report.EAGER_THROUGHPUT_C8}", f"{report.EAGER_P50_C1:.2f}",
               f"{report.GRAPH_EFFICIENCY:.0%}".rstrip("%"), f"{report.DONE_OVER_NEEDED}",
               *(f"{t:.2f}" for t in report.SERVER_CPU_COST.values()), f"{report.SERVER_RSS_PER_BACKBONE}",
               f"{report_vitb.SECTION_TARGET_S:.0f}"}
    allowed = targets | integers(figures)
    assert fixed <= allowed, f"figures the run did not produce: {sorted(fixed - allowed)}"


def test_random_weights_are_said_and_a_weights_file_is_named():
    figures = vitb_figures()
    assert "NOT pretrained" in report.render(figures)
    figures["vitb"].update(random_init=False, backbone_checkpoint="/data/vit_b16.safetensors")
    text = report.render(figures)
    assert "NOT pretrained" not in text and "`/data/vit_b16.safetensors`" in text


def _vitb_row(text: str, start: str) -> str:
    section = text[text.index("## ViT-B/16"):]
    return _row(section, start)


def test_vitb_marks_follow_the_figures_and_each_miss_is_explained():
    figures = vitb_figures()
    text = report.render(figures)
    assert _vitb_row(text, "| served two-step / PyTorch-eager gRPC server").endswith("**missed** |")  # 1.30 < 1.5
    assert _vitb_row(text, "| p50 at concurrency 1").endswith("**met** |")  # 517 ms ≤ 553 ms
    # 70.4 GFLOP × 2.11 images/s = 148.5 GFLOP/s of the 203.7 peak: 72.9% < 80%
    assert _vitb_row(text, "| bare two-step onnxruntime / fp32 peak").endswith("**missed** |")
    assert ("- **Throughput vs eager missed:** at concurrency 8 ours served 2.37 images/s, the eager server "
            "1.83.") in text
    # eager: 1.83 images/s × 70.4 GFLOP = 63% of 203.7; 1.5× needs 95%, onnxruntime's MatMul reached 100%
    assert "at 63% of the 203.7 GFLOP/s fp32 peak; 1.5× its rate needs 95% of the peak, against 100% for " \
           "onnxruntime's own large square MatMul in this run: within reach, so the gap lies in how fast" in text
    slow_matmul = copy.deepcopy(figures)
    slow_matmul["peak"]["start"]["onnxruntime"] = slow_matmul["peak"]["end"]["onnxruntime"] = 180.0  # 88% < 95%
    assert "against 88% for onnxruntime's own large square MatMul in this run: the graphs' arithmetic, the same " \
           "in both servers, bounds the ratio." in report.render(slow_matmul)
    assert "- **Efficiency missed:** the two graphs ran at 148.5 GFLOP/s, 73% of the 203.7 GFLOP/s peak" in text
    assert "p50 vs eager missed" not in text

    met = copy.deepcopy(figures)
    v = met["vitb"]["serving"]["versus_eager"]
    v["throughput_ratio_c8"], v["p50_ratio_c1"] = 1.61, 1.13
    met["vitb"]["bare"]["images_per_second"]["8"] = 2.51  # 176.7 GFLOP/s: 86.7%
    text = report.render(met)
    assert _vitb_row(text, "| served two-step / PyTorch-eager gRPC server").endswith("**met** |")
    assert _vitb_row(text, "| bare two-step onnxruntime / fp32 peak").endswith("**met** |")
    assert _vitb_row(text, "| p50 at concurrency 1").endswith("**missed** |")
    assert "Throughput vs eager missed" not in text and "Efficiency missed" not in text
    assert "- **p50 vs eager missed:** at concurrency 1 ours took 517 ms at the median, eager 553 ms." in text
    # 1000 / 1.37 = 730 ms > 553 ms: the graphs alone are slower than eager
    assert "Bare onnxruntime needed 730 ms per image at batch 1 for the two graphs alone (no server), more than " \
           "the eager server's median: the gap lies in the graphs themselves." in text
    met["vitb"]["bare"]["images_per_second"]["1"] = 2.07  # 483 ms < 553 ms: the server adds the gap
    assert "483 ms per image at batch 1 for the two graphs alone (no server), less than the eager server's median: " \
           "the gap lies in what the server adds around them." in report.render(met)


def test_variants_training_and_growth_rows():
    text = report.render(vitb_figures())
    assert "| int8 | onnxruntime, dynamic int8 MatMul/Gemm | 3.71 (batch 8) | 1.76× (fp32 2.03, 2.19) | 0.938 " \
           "(16 images) | 168.8 MiB |" in text
    assert "NotImplemented: no bf16 MatMul" in text
    assert "At the server's level the offline build is not faster (0.70× the plain graphs" in text
    assert "classifier graph whose count the offline build changed (plain → offline): SkipLayerNormalization 0 → 12, " \
           "Transpose 20 → 35." in text
    assert ("| fp32_zero0 | fp32 | 0 | 0.62, 0.63 | 1901 MiB, 1905 MiB | 107.0 GFLOP | 42% of 73.9 GFLOP/s, 43% of "
            "73.9 GFLOP/s |") in text
    assert "| fp32_zero2 | fp32 | 2 |" in text and "| bf16_zero0 | bf16 | 0 |" in text
    assert _row(text, "| 100 |").startswith("| 100 | 4.3 MiB | 6.0 MiB | 10.3 MiB | 11.00 ms (50 calls) | 94 MiB |")
    assert "| server at concurrency 8, one image per request | 2.37 images/s, p50 3312 ms" in text
    assert "| covariance | 2307.0 KiB | 64.5 KiB |" in text


def test_left_out_skipped_and_failed_steps_are_said():
    figures = vitb_figures()
    figures["vitb"]["skipped"] = {"hidelora_run": "the section's 300 s budget was spent (301 s) before it"}
    figures["vitb"]["failed"] = {"int8": "CalledProcessError: boom"}
    for key in ("hidelora_run", "hidelora_export", "int8"):
        figures["vitb"].pop(key)
    text = report.render(figures)
    assert "- **hidelora_run skipped**: the section's 300 s budget was spent (301 s) before it" in text
    assert "- **int8 failed**: CalledProcessError: boom" in text
    assert "| HiDe-LoRA run | not measured |" in text and "| int8 | not measured |" in text
    figures["vitb"]["training"]["bf16_zero0"] = {"precision": "bf16", "zero_stage": 0,
                                                 "failed": "TimeoutExpired: probe timed out"}
    assert "| bf16_zero0 | bf16 | 0 | not measured: TimeoutExpired: probe timed out |" in report.render(figures)
    figures["vitb_error"] = "TimeoutExpired: the section ran past 420 s"
    assert "**The ViT-B section did not finish:** TimeoutExpired: the section ran past 420 s" in report.render(figures)
    figures.pop("vitb")
    assert "| HiDe-Prompt run" not in report.render(figures)
    figures.pop("vitb_error")
    assert "Not measured in this run (quick mode or `--skip-vitb`)." in report.render(figures)


def test_the_section_skips_steps_past_its_budget_and_records_failures():
    section = Section(Budget(total_s=3600))
    assert section.step("first", lambda: {"x": 1}) == {"x": 1}
    assert section.step("broken", lambda: (_ for _ in ()).throw(RuntimeError("no server"))) is None
    section.budget = Budget(total_s=-1)
    assert section.step("late", lambda: pytest.fail("a step past the budget must not run")) is None
    figures = section.finish()
    assert figures["first"] == {"x": 1} and "broken" not in figures and "late" not in figures
    assert figures["failed"] == {"broken": "RuntimeError: no server"}
    assert "budget was spent" in figures["skipped"]["late"]


def test_statistics_bytes_are_the_stored_tensors_of_each_mode():
    width, centroids = 96, 4
    sizes = statistics_bytes(width, centroids)
    assert sizes == {"multi-centroid": 2 * centroids * width * 4, "covariance": (width + width * width) * 4,
                     "variance": 2 * width * 4}


def test_the_section_time_is_a_target_and_a_miss_names_its_steps():
    figures = vitb_figures()
    label = "| the ViT-B section's wall time (`python -m benchmarks.vitb`, every step) |"
    assert _row(report.render(figures), label).endswith("| 287 s | ≤ 300 s | **met** |")
    figures["vitb"].update(seconds=413.2, step_seconds={"serving": 77.4, "training": 76.1, "bf16": 19.0})
    text = report.render(figures)
    assert _row(text, label).endswith("| 413 s | ≤ 300 s | **missed** |")
    assert "**Section time missed:** 413 s against 300 s. Its steps, longest first: serving 77 s, training 76 s, " \
           "bf16 19 s." in text
