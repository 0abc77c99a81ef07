"""`make routers`: the task routers compared on the same trained runs (`--router mlp|lda|ncm|ensemble`).

    python -m benchmarks.routers RUN_DIR [RUN_DIR ...] [--json routers.json]

Each run must have been trained with `--router ensemble` (its stage-1 network then keeps the MLP and the class
statistics every router needs). The router changes nothing in training — stage 1 trains the same MLP, stage 2
trains each task's prompts with the true task — so every router's accuracy matrix is computed exactly from the
same checkpoints: after each task t, the run restored at t routes with each router and is evaluated on tasks
0..t. Also measured per router: the out-of-distribution signal (AUROC of the router's task confidence between
test images of learned classes and of classes not learned yet), routing throughput (the frozen backbone + the
router, torch, this machine) and the size of the router's state.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROUTERS = ("mlp", "lda", "ncm", "ensemble")


def use_router(method, kind: str) -> None:
    """Route a restored HiDe method with `kind` (its stage-1 network holds the MLP and the class statistics)."""
    if method.tii.gaussian is None:
        raise SystemExit("this run's stage 1 kept no class statistics: train it with --router ensemble")
    method.tii.router = kind
    method.tii.gaussian.refresh("ncm" if kind == "ncm" else "lda")


ANSWERS = ("seen", "routed_task")  # `--answer_scope`: argmax over every seen class (reference) or the routed task's


def evaluate_routers(run_dir: Path, timing_rounds: tuple[int, int] = (15, 100)) -> dict:
    """Every router × answer scope on the run's checkpoints; `timing_rounds`: rounds of the routing-throughput and
    the served-latency measurements."""
    from train import last_completed_task, load_trained
    from train.data.registry import load_dataset
    from train.distributed import DistContext
    from train.engine import evaluate
    from train.metrics import summarize

    last = last_completed_task(run_dir)
    tasks = last + 1
    cases = [(kind, answer) for kind in ROUTERS for answer in ANSWERS]
    A = {case: np.zeros((tasks, tasks)) for case in cases}
    T = {case: np.zeros((tasks, tasks)) for case in cases}
    auroc = {k: [] for k in ROUTERS}
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    data = None
    for task in range(tasks):
        run = load_trained(run_dir, task)
        data = data or load_dataset(run.config.data, run.backbone.spec, run_dir)
        for kind, answer in cases:
            use_router(run.method, kind)
            run.method.answers_within_routed_task = answer == "routed_task"
            accuracy, identity, _ = evaluate(run.method, task, data, run.split, run.config, ctx)
            A[kind, answer][: task + 1, task], T[kind, answer][: task + 1, task] = accuracy, identity
        for kind in ROUTERS:
            if task < last:
                use_router(run.method, kind)
                auroc[kind].append(novelty_auroc(run, data, task))
    final = load_trained(run_dir, last)
    rates, latency = routing_rates(final, data, rounds=timing_rounds[0]), served_latency_ms(final, timing_rounds[1])
    rows = {}
    for kind in ROUTERS:
        use_router(final.method, kind)
        rows[kind] = {**{answer: summarize(A[kind, answer], T[kind, answer], final.config.forgetting)
                         for answer in ANSWERS},
                      "novelty_auroc": float(np.mean(auroc[kind])) if auroc[kind] else None,
                      "routing_images_per_second": rates[kind],
                      "served_latency_ms": latency[kind],
                      "router_head_flops": head_flops(final.method.tii, kind),
                      "router_state_bytes": router_bytes(final.method.tii, kind)}
    return {"run": str(run_dir), "preset": final.config.preset, "seed": final.config.seed, "routers": rows,
            "oracle_final_accuracy": oracle_accuracy(final, data)}


@torch.no_grad()
def oracle_accuracy(run, data, batch: int = 256) -> float:
    """Final average accuracy with perfect routing: every test image classified with its own task's prompts, over
    its task's classes (the ceiling any router can reach with these prompts and heads)."""
    from train.data.splits import indices_of_classes
    from train.losses import mask_logits

    accuracies = []
    for task in range(run.split.num_tasks):
        rows = indices_of_classes(data.test_targets, run.split.task_classes[task])
        correct = 0
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            x = torch.stack([data.test[i][0] for i in chunk])
            logits = run.method.classify(x, torch.full((len(x),), task, dtype=torch.long))
            correct += int((mask_logits(logits, run.split.task_mask(task)).argmax(dim=1)
                            == data.test_targets[chunk]).sum())
        accuracies.append(100.0 * correct / len(rows))
    return float(np.mean(accuracies))


@torch.no_grad()
def novelty_auroc(run, data, task: int) -> float:
    """How well the router's confidence tells learned classes (tasks ≤ task) from classes not learned yet."""
    from sklearn.metrics import roc_auc_score

    from train.data.splits import indices_of_classes

    learned = indices_of_classes(data.test_targets, tuple(run.split.seen_classes(task)))
    future = indices_of_classes(data.test_targets, tuple(c for t in range(task + 1, run.split.num_tasks)
                                                         for c in run.split.task_classes[t]))
    seen = run.split.seen_mask(task)
    confidence = [run.method.route(torch.stack([data.test[i][0] for i in rows]), seen).confidence.numpy()
                  for rows in (learned, future)]
    labels = np.concatenate([np.ones(len(learned)), np.zeros(len(future))])
    return float(roc_auc_score(labels, np.concatenate(confidence)))


@torch.no_grad()
def routing_rates(run, data, batch: int = 64, rounds: int = 15) -> dict[str, float]:
    """Images/s of the router step (frozen backbone + router) at `batch`: the routers alternate round by round,
    so a busy machine slows them alike; best round of each."""
    x = torch.stack([data.test[i][0] for i in range(batch)])
    seen = run.split.seen_mask(run.task)
    best = dict.fromkeys(ROUTERS, 0.0)
    for _ in range(rounds):
        for kind in ROUTERS:
            use_router(run.method, kind)
            start = time.perf_counter()
            run.method.route(x, seen)
            best[kind] = max(best[kind], batch / (time.perf_counter() - start))
    return best


def served_latency_ms(run, rounds: int = 100) -> dict[str, float]:
    """Median ms of the exported router graph (as `python -m export` writes it) on onnxruntime, one image per call,
    one thread; the routers alternate call by call."""
    import tempfile

    import onnxruntime as ort

    from export.graphs import RouterGraph, export_onnx

    seen = run.split.seen_mask(run.task)
    x = torch.zeros(1, 3, run.backbone.spec.img_size, run.backbone.spec.img_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ROUTERS:
            use_router(run.method, kind)
            graph, path = RouterGraph(run.method, seen).eval(), Path(folder) / f"{kind}.onnx"
            export_onnx(graph, (x,), ["pixel_values"], graph.output_names(x), path)
            sessions[kind] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"pixel_values": x.numpy()}
    times = {kind: [] for kind in ROUTERS}
    for _ in range(rounds):
        for kind, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[kind].append(time.perf_counter() - start)
    return {kind: 1e3 * float(np.median(t)) for kind, t in times.items()}


def head_flops(tii, kind: str) -> int:
    """Multiply-adds ×2 per image of the router on top of the backbone's features (matmuls only)."""
    mlp = sum(2 * m.weight.numel() for m in tii.modules() if isinstance(m, torch.nn.Linear))
    lda = 2 * tii.gaussian.weight.numel()
    return {"mlp": mlp, "lda": lda, "ncm": lda, "ensemble": mlp + lda}[kind]


def router_bytes(tii, kind: str) -> int:
    """Bytes of what the router needs: the MLP's parameters, the class statistics (counts, sums, scatter) and
    the closed-form layer."""
    mlp = sum(p.numel() * p.element_size() for p in tii.parameters())
    gaussian = sum(b.numel() * b.element_size() for b in tii.gaussian.buffers())
    return {"mlp": mlp, "lda": gaussian, "ncm": gaussian, "ensemble": mlp + gaussian}[kind]


def table(results: list[dict]) -> str:
    """Mean ± sample std over the runs (seeds), one row per router."""
    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        spread = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
        return f"{np.mean(values):.2f}{spread}" if values else "—"

    accuracy = {"FAA": ("seen", "final_average_accuracy"),
                "FAA, answer within the routed task": ("routed_task", "final_average_accuracy"),
                "Acc@task": ("seen", "task_identity_accuracy"), "forgetting": ("seen", "final_forgetting"),
                "forgetting, answer within the routed task": ("routed_task", "final_forgetting")}
    cost = {"novelty AUROC": "novelty_auroc", "routing images/s": "routing_images_per_second",
            "served router ms": "served_latency_ms"}
    lines = [f"| router | {' | '.join([*accuracy, *cost])} | router kFLOP/image | state KiB |",
             "|---" * (len(accuracy) + len(cost) + 3) + "|"]
    for kind in ROUTERS:
        rows = [r["routers"][kind] for r in results]
        cells = [cell([row[answer][key] for row in rows]) for answer, key in accuracy.values()]
        cells += [cell([row[key] for row in rows]) for key in cost.values()]
        lines.append(f"| {kind} | {' | '.join(cells)} | {rows[0]['router_head_flops'] / 1e3:.0f} | "
                     f"{rows[0]['router_state_bytes'] / 1024:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routers", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="stage-2 runs trained with --router ensemble")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [evaluate_routers(run) for run in args.runs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"{len(results)} run(s): {', '.join(str(r['run']) for r in results)} (seeds "
          f"{', '.join(str(r['seed']) for r in results)}); accuracies in %, routing on 1 thread\n")
    print(table(results))
    oracle = [r["oracle_final_accuracy"] for r in results]
    spread = f" ± {np.std(oracle, ddof=1):.2f}" if len(oracle) > 1 else ""
    print(f"\nperfect routing (every image with its own task's prompts and classes): FAA {np.mean(oracle):.2f}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
