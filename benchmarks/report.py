"""BENCHMARKS.md from the raw figures of `python -m export.bench` (pure formatting: no measuring here)."""

from __future__ import annotations

# Targets of issue #8: (figure, threshold); a figure at or above its threshold is "met".
SERVER_OVER_BARE, SERVED_OVER_EAGER, GRAPH_EFFICIENCY = 0.90, 1.3, 0.80
GPU_COMMAND = "python -m export.bench_gpu --out /tmp/gpu_bench.json   # ≤ 10 min on one H200 (device tool)"

# What profiling found and what was changed, with each change's prediction and measured outcome. Kept here so
# that every regeneration of BENCHMARKS.md carries them; the figures above them are the ones of the last run.
NOTES = """\
- **Noise.** Check the load average in the machine table: when other jobs share the two cores (load 6-15 during
  this project's busy hours), absolute rates (GEMM included) swing by 2-4× between runs. Each ratio is
  measured side by side in one process and time window (the server/bare ratio alternates bare and server
  rounds and takes the median round; eager is measured before and after onnxruntime), so ratios are the
  figures to read; absolute times are context only.
- **Change 1 — onnxruntime intra-op spinning off in the server (serve/runtime.py).** Profile: the torch profiler
  on the step (below) showed thread contention stretching every op to a scheduler slice; onnxruntime's idle
  intra-op workers spin-wait by default between ops and between the two graphs, on the cores the gRPC event
  loop, the clients and other jobs need, and the c=1 p99 was 4-10× its p50. Prediction:
  `session.intra_op.allow_spinning=0` raises saturated throughput by ≥ 1.3× and cuts the c=1 p99 on this shared
  2-core CPU, with no accuracy change (same kernels). Measured (A/B, both servers up, alternated 3 rounds of
  2.5 s, output/bench/spinning_ab.json): server 181/213/239 → 565/391/449 images/s (≈ 2×), c=1 p99
  41/44/40 → 15/25/11 ms, bare onnxruntime at batch 32 166/167/185 → 366/290/651 images/s (that A/B ran while
  other jobs shared the cores). The tables above include the change. On an idle machine spinning costs less;
  most of the gain is under contention.
- **Server vs bare onnxruntime.** On an idle machine the server reaches about 0.8 of bare onnxruntime at
  saturation (target 0.90 missed), although the batcher fills its batches (mean executed batch in the table).
  The rest is not graph time: the load generator (8 client threads serialising 98 KB requests), the gRPC
  event loop decoding them and encoding replies, and the batcher's concatenation all run on the same two
  cores as onnxruntime's two intra-op threads; loopback-only, the clients cannot be moved to another machine
  to separate the server's own cost from theirs. When other jobs load the machine the ratio can exceed 1
  (the server process gets its own scheduler share; an earlier run at load 15 measured 1.78, commit 99c6c80),
  which bounds the overhead rather than measuring it.
- **Served vs eager.** On an idle machine PyTorch eager runs this 17-token model about as fast as onnxruntime
  at batch 32 and 0.75× as fast at batch 8 (table above): per-op overhead dominates such thin graphs, and
  onnxruntime's fused kernels gain little, so the served two-step (server overhead included) misses the
  1.3× target. Under contention the picture flips: eager's 2 OpenMP threads stall at every barrier (see
  below) and onnxruntime's larger kernels do not (11.4× in the loaded run of commit 99c6c80). ENVIRONMENT-FACTS
  measured onnxruntime 1.26× faster than eager for vit_tiny at 224 (batch 1); the gap grows with width.
- **ISA.** /proc/cpuinfo on this run's machine lists avx512f and avx512_vnni (ENVIRONMENT-FACTS describes an
  AVX2-only EPYC): the int8 variant's 2× speed fits VNNI; on an AVX2-only CPU expect less.
- **Two threads under contention.** The torch profiler on the in-process stage-2 step with 2 threads showed
  every op, even a 32×10 log-softmax, taking ~10-15 ms: one OpenMP thread waits at each barrier for its
  descheduled sibling (a scheduler time slice). That is why a training rank runs one thread on this CPU
  (train/distributed.py already does this) and why the step efficiency is measured at one thread against
  the one-thread GEMM rate.
- **Why the served graphs miss 80% of GEMM peak.** The embedded backbone (vit_glyph_patch8_32: 17 tokens,
  width 128, depth 6) does ~35 MFLOP per graph per image; its matmuls are [17·N × 128] × [128 × 128..384],
  far too thin to reach GEMM peak, and LayerNorm/GELU/softmax/attention-reshape (memory-bound, not counted
  as FLOPs) take a large share of the time. The ≥ 80% target is a ViT-B/16 target (ENVIRONMENT-FACTS:
  onnxruntime bs8 ViT-B/16 at 224 reaches 87% here); ViT-B/16 figures come from the GPU profile script.
- **Training efficiency.** Same cause, stronger: the backward of a frozen backbone still runs every
  activation-gradient matmul (input grads through all prompted layers), plus Adam, DeepSpeed's step and
  the data loader per 32-image step. No target is set for it by the issue; it is context.
- **No discarded forward.** The FLOPs counted in one stage-2 step equal one prompted forward + its backward
  (the difference is the contrastive term's centroid similarity). The reference also runs the frozen model
  on every stage-2 step and discards the result; that forward would add the "reference" row's FLOPs.
"""


def _f(value, spec: str = ".1f", none: str = "not measured") -> str:
    return none if value is None else format(value, spec)


def _mark(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "**met**" if value >= target else "**missed**"


def _machine(figures: dict) -> list[str]:
    m = figures["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = ", ".join(f"{x:.1f}" for x in m["load_average"])
    return ["| | |", "|---|---|", f"| CPU | {m['cpu']}, {m['cores']} cores ({' '.join(m['isa'])}) |",
            f"| memory | {m['memory_gib']} GiB |", f"| GPU | {m['gpu'] or 'none'} |",
            f"| load average at start | {load} (other jobs shared the cores) |",
            f"| Python, versions | {m['python']}; {versions} |",
            f"| command | `{figures['command']}` ({figures['seconds']:.0f} s, started {figures['started']}) |"]


def _targets(figures: dict) -> tuple[list[str], dict]:
    serving, eager = figures["serving"], figures.get("eager")
    sat = serving["saturation"]
    ratio_eager = None
    if eager and str(serving["plan"]["batch"]) in eager["by_batch"]:
        ratio_eager = sat["ratio"] * eager["by_batch"][str(serving["plan"]["batch"])]["ratio"]
    gemm = serving["gemm_gflops_numpy"]
    flops = eager["flops_per_image"]["two_step"] if eager else None
    eff = {b: (flops * rate / 1e9 / gemm if flops else None) for b, rate in serving["bare"].items()}
    rows = ["| figure | measured | target | |", "|---|---|---|---|",
            f"| server at saturation / bare onnxruntime, same graphs, batch {serving['plan']['batch']} | "
            f"{sat['ratio']:.3f} ({sat['server_images_per_second']:.1f} vs {sat['bare_images_per_second']:.1f} "
            f"images/s; mean executed batch {_f(sat['mean_executed_batch'])}) | ≥ {SERVER_OVER_BARE:.2f} | "
            f"{_mark(sat['ratio'], SERVER_OVER_BARE)} |",
            f"| served two-step / PyTorch-eager two-step | {_f(ratio_eager, '.2f')}× | ≥ {SERVED_OVER_EAGER}× | "
            f"{_mark(ratio_eager, SERVED_OVER_EAGER)} |"]
    for batch, value in eff.items():
        target = f"≥ {GRAPH_EFFICIENCY:.0%}" if int(batch) >= 8 else "— (batch < 8)"
        mark = _mark(value, GRAPH_EFFICIENCY) if int(batch) >= 8 else ""
        rows.append(f"| served graphs' FLOP/s / GEMM rate, batch {batch} (bare onnxruntime) | "
                    f"{_f(value and 100 * value, '.1f')}% | {target} | {mark} |")
    step = figures["step"]
    rows.append(f"| stage-2 step FLOPs done / needed (no discarded forward) | "
                f"{step['flops']['done'] / step['flops']['needed']:.3f} | ≤ 1.01 | "
                f"{'**met**' if step['flops']['done'] <= 1.01 * step['flops']['needed'] else '**missed**'} |")
    rows.append(f"| stage-2 step compute efficiency (in-process, 1 thread, vs 1-thread GEMM) | "
                f"{100 * step['efficiency']:.1f}% | none set | context |")
    return rows, {"ratio_eager": ratio_eager, "efficiency": eff}


def _training(figures: dict) -> list[str]:
    step, flops = figures["step"], figures["step"]["flops"]
    batch = flops["batch"]
    g = 1e9 * batch
    rows = ["### FLOPs per stage-2 step (HiDe-Prompt, counted by torch.utils.flop_counter)", "",
            f"Batch {batch}, {step['backbone']} at {step['img_size']}×{step['img_size']}; GFLOP per image.", "",
            "| | GFLOP/image |", "|---|---|",
            f"| forward done in our step | {flops['forward'] / g:.4f} |",
            f"| backward done | {flops['backward'] / g:.4f} |",
            f"| **done** | **{flops['done'] / g:.4f}** |",
            f"| needed: one prompted forward + the backward | {flops['needed'] / g:.4f} |",
            f"| discarded forward in our step | {flops['discarded_forward'] / g:.4f} |",
            f"| reference: + a frozen-model forward per step, discarded | {flops['reference'] / g:.4f} "
            f"({flops['reference'] / flops['needed']:.2f}× needed) |", "",
            "### Training throughput and efficiency", "", "| figure | value |", "|---|---|",
            f"| in-process step, 1 thread (torch Adam) | {step['in_process']['images_per_second']:.1f} images/s, "
            f"{step['achieved_gflops']:.2f} GFLOP/s = {100 * step['efficiency']:.1f}% of the 1-thread GEMM rate "
            f"{step['gemm_gflops_torch_1thread']:.1f} GFLOP/s (measured before and after: "
            f"{', '.join(f'{x:.1f}' for x in step['gemm_gflops_torch_1thread_before_after'])}) |"]
    train = figures.get("training")
    if not train:
        return rows + ["| 2-rank DeepSpeed run | not measured (quick mode) |", ""]
    per_image = flops["done"] / batch
    achieved = train["train_images_per_second"] * per_image / 1e9
    # Two one-thread ranks: the machine's rate is at least twice the best one-thread GEMM seen in this run (a short
    # 2-thread measurement under contention can read far lower, which would flatter the efficiency).
    gemm = max(train["gemm_gflops_torch_2threads"], 2 * max(step["gemm_gflops_torch_1thread_before_after"]))
    rows += [f"| stage-2 HiDe-Prompt, {train['world_size']} DeepSpeed ranks (fp32, 1 thread each) | "
             f"{train['train_images_per_second']:.1f} images/s (mean over tasks) = {achieved:.2f} GFLOP/s, "
             f"{100 * achieved / gemm:.1f}% of the GEMM rate {gemm:.1f} GFLOP/s (max of the 2-thread rate "
             f"measured right after, {train['gemm_gflops_torch_2threads']:.1f}, and 2× the best 1-thread rate) |",
             f"| stage-1 (task identity) training | {_f(train['stage1_train_images_per_second'])} images/s |",
             f"| final average accuracy of the run | {train['final_average_accuracy']:.2f}% |",
             f"| whole run (stage 1 + stage 2, launcher included) | {train['wall_seconds']:.0f} s |",
             "", "### Per task (stage 2)", "",
             "| task | train images/s | train s | class statistics s | classifier alignment s |",
             "|---|---|---|---|---|"]
    rows += [f"| {t['task'] + 1} | {t['train_images_per_second']:.1f} | {t['train_seconds']:.2f} | "
             f"{t['statistics']:.3f} | {t['alignment']:.3f} |" for t in train["per_task"]]
    return rows + [""]


def _serving(figures: dict, derived: dict) -> list[str]:
    s = figures["serving"]
    sat = s["saturation"]
    rows = [f"Bundle `{s['bundle']}` ({s['method']}, routing {s['routing']}), onnxruntime {s['onnxruntime']} "
            f"CPU; server = `python -m serve` on loopback; load = `serve.client.bench` (Classify, closed loop, "
            f"{s['plan']['seconds']:g} s per point). GEMM rate (numpy, all cores): "
            f"{s['gemm_gflops_numpy']:.1f} GFLOP/s.", "",
            "### Saturation (server --max-batch-size "
            f"{s['plan']['batch']}, {s['plan']['saturation_concurrency']} clients × {s['plan']['request_batch']} "
            "images per request), alternated with bare onnxruntime", "",
            "| round | bare onnxruntime images/s | server images/s | ratio |", "|---|---|---|---|"]
    rows += [f"| {i + 1} | {r['bare']:.1f} | {r['server']:.1f} | {r['ratio']:.3f} |"
             for i, r in enumerate(sat["rounds"])]
    rows += ["", "### Latency (one image per request, server defaults: batch 32, 2 ms queue delay)", "",
             "| concurrency | p50 ms | p95 ms | p99 ms | images/s | failures |", "|---|---|---|---|---|---|"]
    rows += [f"| {c} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['p99_ms']:.2f} | {p['images_per_second']:.1f} | "
             f"{sum(p['failures'].values()) if p['failures'] else 0} |" for c, p in s["latency"].items()]
    eager = figures.get("eager")
    rows += ["", "### Bare onnxruntime two-step by batch, and PyTorch eager", "",
             "| batch | onnxruntime images/s | GFLOP/s | % of GEMM rate | eager images/s (before, after) | "
             "onnxruntime / eager |", "|---|---|---|---|---|---|"]
    for batch, rate in s["bare"].items():
        flops = eager["flops_per_image"]["two_step"] if eager else None
        pair = eager["by_batch"].get(batch) if eager else None
        rows.append(f"| {batch} | {rate:.1f} | {_f(flops and flops * rate / 1e9, '.2f')} | "
                    f"{_f(derived['efficiency'][batch] and 100 * derived['efficiency'][batch], '.1f')} | "
                    + (f"{pair['eager']:.1f}, {pair['eager_again']:.1f} | {pair['ratio']:.2f}× |" if pair
                       else "not measured | |"))
    if eager:
        f = eager["flops_per_image"]
        rows += ["", f"FLOPs per image: router {f['router'] / 1e6:.1f} M, classifier {f['classifier'] / 1e6:.1f} M, "
                 f"two-step {f['two_step'] / 1e6:.1f} M (torch.utils.flop_counter on the exported modules)."]
    v = s["variants"]
    rows += ["", f"### Variants (bare onnxruntime two-step, batch {s['plan']['batch']})", "",
             "| variant | images/s | speed vs fp32 | accuracy (Split-Digits test, here) | accuracy at export |",
             "|---|---|---|---|---|"]
    base = v["fp32"]["images_per_second"]
    for name, row in v.items():
        if name in ("rejected", "fp16_note"):
            continue
        rows.append(f"| {name} | {row['images_per_second']:.1f} | {row['images_per_second'] / base:.2f}× | "
                    f"{_f(row['accuracy'], '.2f')} | {_f(row['export_accuracy'], '.2f')} |")
    rows += [""] + [f"- not published: {k}: {why}" for k, why in v["rejected"].items()] + [f"- {v['fp16_note']}", ""]
    return rows


def _memory(figures: dict) -> list[str]:
    train = figures.get("training")
    ranks = ", ".join(f"{x:.0f}" for x in train["rank_peak_rss_mib"]) if train else "not measured (quick mode)"
    return ["| process | peak RSS MiB |", "|---|---|",
            f"| server (`python -m serve`, after the saturation load) | "
            f"{figures['serving']['saturation']['server_peak_rss_mib']:.0f} |",
            f"| training ranks (DeepSpeed, each) | {ranks} |", ""]


def render(figures: dict) -> str:
    targets, derived = _targets(figures)
    parts = ["# Benchmarks", "",
             "Regenerated by `make bench` (`python -m export.bench`, bounded to 15 min, loopback only); the raw "
             "figures are in `output/bench/benchmarks.json` (git-ignored). Ratios are measured side by side in "
             "one run; absolute rates are context (see the notes on noise).", "",
             "## Machine", "", *_machine(figures), "", "## Targets (issue #8)", "", *targets, "",
             "## Training", "", *_training(figures), "## Serving", "", *_serving(figures, derived),
             "## Memory", "", *_memory(figures),
             "## GPU profile", "",
             "**The GPU figures have not been measured**: no GPU was lent to this task. The prepared script "
             "(ViT-B/16 at 224: bf16 and fp16 DeepSpeed training steps, CUDA onnxruntime two-step throughput) "
             "runs as one command, sized for ≤ 10 minutes on an H200:", "", f"    {GPU_COMMAND}", "",
             "## Notes", "", NOTES]
    return "\n".join(parts)
