"""Serving benchmarks, torch-free in this process: the server at saturation vs bare onnxruntime on the same graphs,
latency at several concurrencies, the graphs' variants side by side, the server's peak RSS, and (with --run) our
server vs a plain PyTorch-eager gRPC server (benchmarks/eager_server.py, its own process) under the same load.

    python -m benchmarks.serving --bundle ROOT --version N --json serving.json [--run RUN] [--seconds 6] [--quick]

Every loop is bounded in rounds and seconds; the servers run as subprocesses on loopback (`python -m serve` as
deployed). The caller (`python -m benchmarks.suite`, `make bench`) adds the torch-side figures and writes the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.manifest import LOGITS, Manifest, load_manifest
from export.runtime import TwoStep

REPO = Path(__file__).resolve().parent.parent


# -- bare onnxruntime: the same two graphs, no server ---------------------------------------------------------
@dataclass
class BareTwoStep:
    """The server's two-step runner (export/runtime.py: its session options, one copy of shared weights) without
    the server around it; answers the classifier's logits."""

    runner: TwoStep

    @classmethod
    def open(cls, folder: Path, manifest: Manifest, variant: str | None = None) -> BareTwoStep:
        return cls(TwoStep.of_bundle(Path(folder), manifest, variant))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.runner(pixels)[LOGITS]


def timed_rate(step, images_per_call: int, seconds: float, max_rounds: int = 10_000) -> float:
    """Images per second of `step()` after one warm-up call, bounded in time and rounds."""
    step()
    done, start = 0, time.perf_counter()
    for _ in range(max_rounds):
        step()
        done += images_per_call
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


def bare_throughput(runner: BareTwoStep, shape: list[int], batch: int, seconds: float) -> float:
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    return timed_rate(lambda: runner(x), batch, seconds)


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used, all its threads (Linux /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_cost(runner: BareTwoStep, shape: list[int], batch: int, seconds: float, max_rounds: int = 10_000) -> dict:
    """Images/s and CPU seconds per image of bare onnxruntime at `batch` in this process (nothing else runs in it
    meanwhile), after one warm-up call, bounded in time and rounds."""
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    runner(x)
    done, cpu, start = 0, process_cpu_seconds(), time.perf_counter()
    for _ in range(max_rounds):
        runner(x)
        done += batch
        if time.perf_counter() - start >= seconds:
            break
    wall, cpu = time.perf_counter() - start, process_cpu_seconds() - cpu
    return {"images_per_second": done / wall, "cpu_seconds_per_image": cpu / done, "images": done}


def accuracy(runner: BareTwoStep, pixels: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
    """Top-1 % of the two-step graphs on labelled pixel_values (class-incremental: no task given)."""
    predicted = [runner(np.ascontiguousarray(pixels[i:i + batch])).argmax(1) for i in range(0, len(labels), batch)]
    return 100.0 * float((np.concatenate(predicted) == labels).mean())


# a parent launched by deepspeed, or that trained in-process, holds a rendezvous: its children must not inherit it
PROCESS_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in PROCESS_GROUP_ENV}, **extra}


# -- the server as deployed: `python -m serve` on loopback ----------------------------------------------------
def start_process(argv: list[str], timeout_s: float = 120) -> tuple[subprocess.Popen, str]:
    """Start a server that prints a line "serving ... on HOST:PORT ..." once it serves (import-time warnings may
    come first); the process and that line, or the reason it could not start. Ports are bound by the server
    itself (port 0: no races)."""
    process = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    timer = threading.Timer(timeout_s, process.kill)  # a server that hangs before that line is killed
    timer.start()
    before = []
    try:
        for line in process.stdout:  # ends when the process exits (or is killed)
            if line.startswith("serving"):
                break
            before.append(line)
        else:
            line = ""
    finally:
        timer.cancel()
    if not line:
        process.kill()
        raise RuntimeError(f"server did not start: {' '.join(argv)}\n{''.join(before[-40:])}")
    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()  # drain, never block the server
    return process, line


def start_server(root: Path, version: int, *args: str) -> tuple[subprocess.Popen, str, int]:
    """`python -m serve` on loopback (gRPC and metrics), ports chosen by the server; (process, target, metrics
    port) once it serves."""
    process, line = start_process(
        [sys.executable, "-m", "serve", "--bundle", str(root), "--version", str(version), "--host", "127.0.0.1",
         "--port", "0", "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--poll-interval-s", "0",
         "--log-level", "WARNING", *args])
    found = re.search(r" on 127\.0\.0\.1:(\d+) \(metrics :(\d+)\)", line)
    if found is None:
        stop_server(process)
        raise RuntimeError(f"cannot read the ports from the server's first line: {line}")
    return process, f"127.0.0.1:{found.group(1)}", int(found.group(2))


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set so far (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def scrape(metrics_port: int, name: str, model: str = "classify") -> float:
    """One sample of the server's Prometheus exposition (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    pattern = rf'^{re.escape(name)}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def load(target: str, shape: list[int], batch: int, concurrency: int, seconds: float, max_requests: int,
         server_pid: int | None = None) -> dict:
    """Closed-loop Classify load (serve.client.bench) with random pixel_values of `batch` images per request; with
    `server_pid`, also the server's CPU seconds per answered image over the load, and the load generator's own (this
    process's), which does not count against the server but shares the machine's cores with it."""
    from serve.client import Client, bench, wait_ready

    client = Client.connect(target)
    wait_ready(client, 60)
    pixels = np.random.default_rng(2).standard_normal((batch, *shape)).astype(np.float32)
    client.classify(pixels=pixels, top_k=1)
    cpu = process_cpu_seconds(server_pid) if server_pid else None
    own = time.process_time()
    stats = bench(client, lambda: client.classify(pixels=pixels, top_k=1), concurrency, seconds, max_requests)
    if server_pid:
        images = max(1, stats["requests"] * batch)
        stats["server_cpu_seconds_per_image"] = (process_cpu_seconds(server_pid) - cpu) / images
        stats["client_cpu_seconds_per_image"] = (time.process_time() - own) / images
    return {**stats, "batch": batch, "concurrency": concurrency,
            "images_per_second": stats["throughput_rps"] * batch}


# -- the suite ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    seconds: float = 6.0  # per throughput / latency point
    max_requests: int = 20_000  # per load point
    batch: int = 32  # the executed batch at saturation (server --max-batch-size) and bare onnxruntime's
    request_batch: int = 8  # images per request at saturation
    saturation_concurrency: int = 8
    latency_concurrencies: tuple[int, ...] = (1, 8, 32)
    efficiency_batches: tuple[int, ...] = (1, 8, 32)
    rounds: int = 3  # bare/server alternations at saturation
    versus_rounds: int = 2  # our server / eager server alternations at each concurrency
    server_batch: int = 32  # --max-batch-size of the latency and versus-eager servers (the server's default)
    queue_delay_ms: float = 2.0  # --max-queue-delay-ms of every server here (the server's default)

    @classmethod
    def quick(cls) -> Plan:
        return cls(seconds=0.5, max_requests=200, batch=8, request_batch=4, saturation_concurrency=4,
                   latency_concurrencies=(1, 8, 32), efficiency_batches=(1, 8), rounds=1, versus_rounds=1)


def serving_suite(root: Path, version: int, plan: Plan, test_npz: Path | None = None, run: Path | None = None,
                  log=print) -> dict:
    folder = Path(root) / str(version)
    manifest = load_manifest(folder)
    shape = [3, manifest.preprocessing.img_size, manifest.preprocessing.img_size]
    out: dict = {"bundle": str(folder), "version": version, "method": manifest.method, "routing": manifest.routing,
                 "backbone": manifest.backbone.timm_arch, "onnxruntime": ort.__version__, "plan": plan.__dict__}
    bare = BareTwoStep.open(folder, manifest)
    out["bare"] = {str(b): bare_throughput(bare, shape, b, plan.seconds) for b in plan.efficiency_batches}
    log(f"bare onnxruntime two-step images/s by batch: {out['bare']}")
    out["saturation"] = saturation(root, version, shape, plan, bare, log)
    out["latency"] = latency(root, version, shape, plan, log)
    out["variants"] = variants(folder, manifest, shape, plan, test_npz, log)
    out["versus_eager"] = versus_eager(root, version, run, shape, plan, log) if run is not None else None
    return out


def saturation(root: Path, version: int, shape: list[int], plan: Plan, bare: BareTwoStep, log) -> dict:
    """Server images/s at saturation and bare onnxruntime at the same batch, alternated `plan.rounds` times
    (the idle server costs nothing while bare runs): the median of the per-round ratios is the overhead. Each
    round also prices an image in CPU seconds: the server process's over its load window vs bare onnxruntime's
    (this process, alone) — the overhead as cost, which the load generator's CPU does not blur."""
    process, target, metrics_port = start_server(root, version, "--max-batch-size", str(plan.batch),
                                                 "--max-queue-delay-ms", str(plan.queue_delay_ms))
    rounds = []
    try:
        for _ in range(plan.rounds):
            alone = bare_cost(bare, shape, plan.batch, plan.seconds)
            stats = load(target, shape, plan.request_batch, plan.saturation_concurrency, plan.seconds,
                         plan.max_requests, server_pid=process.pid)
            cost = stats["server_cpu_seconds_per_image"] / alone["cpu_seconds_per_image"]
            rounds.append({"bare": alone["images_per_second"], "server": stats["images_per_second"],
                           "ratio": stats["images_per_second"] / alone["images_per_second"],
                           "bare_cpu_s_per_image": alone["cpu_seconds_per_image"],
                           "server_cpu_s_per_image": stats["server_cpu_seconds_per_image"], "cpu_cost_ratio": cost,
                           "client_cpu_s_per_image": stats["client_cpu_seconds_per_image"],
                           "failures": stats["failures"], "p50_ms": stats["p50_ms"]})
        count = scrape(metrics_port, "hidecl_batch_size_count", "pipeline")
        total = scrape(metrics_port, "hidecl_batch_size_sum", "pipeline")
        rss = peak_rss_mib(process.pid)
    finally:
        stop_server(process)
    middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    by_cost = sorted(rounds, key=lambda r: r["cpu_cost_ratio"])[len(rounds) // 2]
    result = {"rounds": rounds, "ratio": middle["ratio"], "server_images_per_second": middle["server"],
              "bare_images_per_second": middle["bare"], "mean_executed_batch": total / count if count else None,
              "server_peak_rss_mib": rss, "cpu_cost_ratio": by_cost["cpu_cost_ratio"],
              "server_cpu_s_per_image": by_cost["server_cpu_s_per_image"],
              "bare_cpu_s_per_image": by_cost["bare_cpu_s_per_image"]}
    log(f"saturation: {rounds}, mean batch {result['mean_executed_batch']}")
    return result


def latency(root: Path, version: int, shape: list[int], plan: Plan, log) -> dict:
    """p50/p95/p99 of one-image requests at each concurrency (the plan's server batch and queue delay)."""
    process, target, _ = start_server(root, version, *server_args(plan))
    try:
        points = {str(c): load(target, shape, 1, c, plan.seconds, plan.max_requests)
                  for c in plan.latency_concurrencies}
    finally:
        stop_server(process)
    for c, s in points.items():
        log(f"latency c={c}: p50 {s['p50_ms']:.2f} p95 {s['p95_ms']:.2f} p99 {s['p99_ms']:.2f} ms, "
            f"{s['images_per_second']:.1f} images/s, failures {s['failures']}")
    return points


def server_args(plan: Plan) -> list[str]:
    return ["--max-batch-size", str(plan.server_batch), "--max-queue-delay-ms", str(plan.queue_delay_ms)]


def start_eager_server(run: Path, folder: Path, threads: int = 0) -> tuple[subprocess.Popen, str]:
    """benchmarks/eager_server.py on a loopback port it chooses; (process, target) once it serves."""
    process, line = start_process([sys.executable, "-m", "benchmarks.eager_server", "--run", str(run), "--bundle",
                                   str(folder), "--host", "127.0.0.1", "--port", "0", "--threads", str(threads)])
    found = re.search(r" on 127\.0\.0\.1:(\d+)", line)
    if found is None:
        stop_server(process)
        raise RuntimeError(f"cannot read the port from the eager server's first line: {line}")
    return process, f"127.0.0.1:{found.group(1)}"


# The PyTorch-eager baselines: torch's default threads (what a plain server gets) and one thread (which avoids
# OpenMP barrier stalls when the cores are shared). Ratios are taken against the better of the two.
EAGER_BASELINES = {"eager": 0, "eager_1thread": 1}


def versus_eager(root: Path, version: int, run: Path, shape: list[int], plan: Plan, log,
                 ours: str | None = None) -> dict:
    """Our server (the plan's settings; `ours`: one already serving the version) vs the plain PyTorch-eager gRPC
    servers on the same model, all up on loopback, driven in turn by the same load generator with one image per
    request: images/s at concurrency 8 and p50 at concurrency 1, the servers alternated `plan.versus_rounds` times
    (the median round of each is kept)."""
    processes, targets = [], {}
    try:
        if ours is None:
            process, ours, _ = start_server(root, version, *server_args(plan))
            processes.append(process)
        targets["ours"] = ours
        for name, threads in EAGER_BASELINES.items():
            process, targets[name] = start_eager_server(run, Path(root) / str(version), threads)
            processes.append(process)
        points: dict = {c: {name: [] for name in targets} for c in ("1", "8")}
        for _ in range(plan.versus_rounds):
            for c in points:
                for name, target in targets.items():
                    points[c][name].append(load(target, shape, 1, int(c), plan.seconds, plan.max_requests))
    finally:
        for process in processes:
            stop_server(process)
    out: dict = {"rounds": plan.versus_rounds, "request_batch": 1, "baselines": EAGER_BASELINES}
    for c, by_server in points.items():
        key = "images_per_second" if c == "8" else "p50_ms"
        kept = {name: sorted(runs, key=lambda r: r[key])[len(runs) // 2] for name, runs in by_server.items()}
        out[c] = {name: {k: r[k] for k in ("images_per_second", "p50_ms", "p99_ms", "requests", "failures")}
                  for name, r in kept.items()}
        out[c]["all_rounds"] = {name: [r[key] for r in runs] for name, runs in by_server.items()}
        log(f"versus eager c={c}: {out[c]}")
    best_rate = max(EAGER_BASELINES, key=lambda n: out["8"][n]["images_per_second"])
    best_p50 = min(EAGER_BASELINES, key=lambda n: out["1"][n]["p50_ms"])
    out["best_baseline_c8"], out["best_baseline_c1"] = best_rate, best_p50
    out["throughput_ratio_c8"] = out["8"]["ours"]["images_per_second"] / out["8"][best_rate]["images_per_second"]
    out["p50_ratio_c1"] = out["1"]["ours"]["p50_ms"] / out["1"][best_p50]["p50_ms"]  # ours / eager: ≤ 1 is no worse
    return out


def variants(folder: Path, manifest: Manifest, shape: list[int], plan: Plan, test_npz: Path | None, log) -> dict:
    """fp32 and each published variant: bare two-step images/s at the plan's batch, accuracy side by side."""
    data = np.load(test_npz) if test_npz else None
    rows = {"fp32": (None, manifest.measurement)}
    rows.update({v.name: (v.name, v.measurement) for v in manifest.variants if v.name != "fp16"})
    out = {}
    for name, (variant, measured) in rows.items():
        runner = BareTwoStep.open(folder, manifest, variant)
        out[name] = {"images_per_second": bare_throughput(runner, shape, plan.batch, plan.seconds),
                     "export_accuracy": measured.accuracy if measured else None,
                     "accuracy": accuracy(runner, data["pixel_values"], data["labels"]) if data is not None else None}
        log(f"variant {name}: {out[name]}")
    out["rejected"] = dict(manifest.rejected_variants)
    out["fp16_note"] = "fp16 is built for GPUs: this CPU suite does not compare it."
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle root")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--json", type=Path, required=True, help="where the raw figures go")
    p.add_argument("--test-npz", type=Path, help="pixel_values + labels: accuracy of each variant")
    p.add_argument("--run", type=Path, help="the trained run of the bundle: our server vs the PyTorch-eager server")
    p.add_argument("--seconds", type=float, default=6.0, help="per measured point")
    p.add_argument("--quick", action="store_true", help="tiny bounded mode (seconds in all) for tests")
    args = p.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan(seconds=args.seconds)
    figures = serving_suite(args.bundle, args.version, plan, args.test_npz, args.run,
                            log=lambda m: print(f"[benchmarks.serving] {m}", flush=True))
    figures["pid_rss_note"] = "server RSS is VmHWM of the `python -m serve` process after the saturation load"
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
