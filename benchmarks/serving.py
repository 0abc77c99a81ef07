"""Serving benchmarks, torch-free: the server at saturation vs bare onnxruntime on the same graphs, latency at
several concurrencies, the graphs' variants side by side, the server's peak RSS, and the GEMM rate.

    python -m serve.bench --bundle ROOT [--version N] --json serving.json [--seconds 6] [--quick]

Every loop is bounded in rounds and seconds; the server runs as `python -m serve` on loopback (a subprocess, as
deployed). The caller (`python -m export.bench`, `make bench`) adds the torch-side figures and writes the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.manifest import PIXEL_VALUES, PROMPT_IDS, TASK_ID, Manifest, load_manifest

REPO = Path(__file__).resolve().parent.parent
CONDITION = {"task": TASK_ID, "prompt_set": PROMPT_IDS, "none": None}


def gemm_gflops(seconds: float = 1.0, n: int = 1024, max_rounds: int = 200) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of numpy's BLAS on every core, n×n×n, bounded in time and rounds."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    for _ in range(max_rounds):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
        if time.perf_counter() > end:
            break
    return best / 1e9


# -- bare onnxruntime: the same two graphs, no server ---------------------------------------------------------
@dataclass
class BareTwoStep:
    """router → condition → classifier on plain sessions (the server's session options, nothing else: intra-op
    spinning off, as serve/runtime.py sets it)."""

    router: ort.InferenceSession | None
    classifier: ort.InferenceSession
    condition: str | None

    @classmethod
    def open(cls, folder: Path, manifest: Manifest, variant: str | None = None, spinning: bool = False) -> BareTwoStep:
        graphs = manifest.graphs if variant is None else next(v.graphs for v in manifest.variants
                                                               if v.name == variant)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = {name: ort.InferenceSession(str(folder / g.file), options, providers=["CPUExecutionProvider"])
                    for name, g in graphs.items()}
        return cls(sessions.get("router"), sessions["classifier"], CONDITION[manifest.routing])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.condition is None:
            return self.classifier.run(None, {PIXEL_VALUES: pixels})[0]
        condition = self.router.run([self.condition], {PIXEL_VALUES: pixels})[0]
        return self.classifier.run(None, {PIXEL_VALUES: pixels, self.condition: condition})[0]


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


def accuracy(runner: BareTwoStep, pixels: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
    """Top-1 % of the two-step graphs on labelled pixel_values (class-incremental: no task given)."""
    predicted = [runner(np.ascontiguousarray(pixels[i:i + batch])).argmax(1) for i in range(0, len(labels), batch)]
    return 100.0 * float((np.concatenate(predicted) == labels).mean())


# -- the server as deployed: `python -m serve` on loopback ----------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `python -m serve` exactly, with the metrics endpoint on loopback too (the CLI binds it to every interface)
_LOOPBACK_SERVE = ("import asyncio, dataclasses, logging, sys; "
                   "from serve.__main__ import config_from, parse_args, serve; "
                   "a = parse_args(sys.argv[1:]); logging.basicConfig(level=a.log_level); "
                   "asyncio.run(serve(dataclasses.replace(config_from(a), metrics_host='127.0.0.1')))")


def start_server(root: Path, version: int, *args: str, timeout_s: float = 90) -> tuple[subprocess.Popen, str, int]:
    """The server on free loopback ports; returns (process, target, metrics port) once it serves."""
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _LOOPBACK_SERVE, "--bundle", str(root), "--version", str(version), "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", str(metrics_port), "--poll-interval-s", "0", "--log-level", "WARNING",
         *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + timeout_s
    line = process.stdout.readline()  # the server's first line says it serves (or why it could not start)
    if not line.startswith("serving") or time.monotonic() > end:
        process.kill()
        raise RuntimeError(f"server did not start: {line}{process.stdout.read()}")
    return process, f"127.0.0.1:{port}", metrics_port


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


def load(target: str, shape: list[int], batch: int, concurrency: int, seconds: float, max_requests: int) -> dict:
    """Closed-loop Classify load (serve.client.bench) with random pixel_values of `batch` images per request."""
    from .client import Client, bench, wait_ready

    client = Client.connect(target)
    wait_ready(client, 60)
    pixels = np.random.default_rng(2).standard_normal((batch, *shape)).astype(np.float32)
    client.classify(pixels=pixels, top_k=1)
    stats = bench(client, lambda: client.classify(pixels=pixels, top_k=1), concurrency, seconds, max_requests)
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

    @classmethod
    def quick(cls) -> Plan:
        return cls(seconds=0.5, max_requests=200, batch=8, request_batch=4, saturation_concurrency=4,
                   latency_concurrencies=(1, 8, 32), efficiency_batches=(1, 8), rounds=1)


def serving_suite(root: Path, version: int, plan: Plan, test_npz: Path | None = None, log=print) -> dict:
    folder = Path(root) / str(version)
    manifest = load_manifest(folder)
    shape = [3, manifest.preprocessing.img_size, manifest.preprocessing.img_size]
    out: dict = {"bundle": str(folder), "version": version, "method": manifest.method, "routing": manifest.routing,
                 "onnxruntime": ort.__version__, "plan": plan.__dict__}
    out["gemm_gflops_numpy"] = gemm_gflops(min(plan.seconds, 2.0))
    bare = BareTwoStep.open(folder, manifest)
    out["bare"] = {str(b): bare_throughput(bare, shape, b, plan.seconds) for b in plan.efficiency_batches}
    log(f"bare onnxruntime two-step images/s by batch: {out['bare']}")
    out["saturation"] = saturation(root, version, shape, plan, bare, log)
    out["latency"] = latency(root, version, shape, plan, log)
    out["variants"] = variants(folder, manifest, shape, plan, test_npz, log)
    return out


def saturation(root: Path, version: int, shape: list[int], plan: Plan, bare: BareTwoStep, log) -> dict:
    """Server images/s at saturation and bare onnxruntime at the same batch, alternated `plan.rounds` times
    (the idle server costs nothing while bare runs): the median of the per-round ratios is the overhead."""
    process, target, metrics_port = start_server(root, version, "--max-batch-size", str(plan.batch),
                                                 "--max-queue-delay-ms", "2")
    rounds = []
    try:
        for _ in range(plan.rounds):
            alone = bare_throughput(bare, shape, plan.batch, plan.seconds)
            stats = load(target, shape, plan.request_batch, plan.saturation_concurrency, plan.seconds,
                         plan.max_requests)
            rounds.append({"bare": alone, "server": stats["images_per_second"], "ratio": stats["images_per_second"]
                           / alone, "failures": stats["failures"], "p50_ms": stats["p50_ms"]})
        count = scrape(metrics_port, "hidecl_batch_size_count", "pipeline")
        total = scrape(metrics_port, "hidecl_batch_size_sum", "pipeline")
        rss = peak_rss_mib(process.pid)
    finally:
        stop_server(process)
    middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    result = {"rounds": rounds, "ratio": middle["ratio"], "server_images_per_second": middle["server"],
              "bare_images_per_second": middle["bare"], "mean_executed_batch": total / count if count else None,
              "server_peak_rss_mib": rss}
    log(f"saturation: {rounds}, mean batch {result['mean_executed_batch']}")
    return result


def latency(root: Path, version: int, shape: list[int], plan: Plan, log) -> dict:
    """p50/p95/p99 of one-image requests at each concurrency (server defaults: batch 32, 2 ms delay)."""
    process, target, _ = start_server(root, version)
    try:
        points = {str(c): load(target, shape, 1, c, plan.seconds, plan.max_requests)
                  for c in plan.latency_concurrencies}
    finally:
        stop_server(process)
    for c, s in points.items():
        log(f"latency c={c}: p50 {s['p50_ms']:.2f} p95 {s['p95_ms']:.2f} p99 {s['p99_ms']:.2f} ms, "
            f"{s['images_per_second']:.1f} images/s, failures {s['failures']}")
    return points


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
    out["fp16_note"] = "fp16 is a GPU variant (float16 compute is emulated on this CPU): not compared here."
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.bench", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle root")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--json", type=Path, required=True, help="where the raw figures go")
    p.add_argument("--test-npz", type=Path, help="pixel_values + labels: accuracy of each variant")
    p.add_argument("--seconds", type=float, default=6.0, help="per measured point")
    p.add_argument("--quick", action="store_true", help="tiny bounded mode (seconds in all) for tests")
    args = p.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan(seconds=args.seconds)
    figures = serving_suite(args.bundle, args.version, plan, args.test_npz,
                            log=lambda m: print(f"[serve.bench] {m}", flush=True))
    figures["pid_rss_note"] = "server RSS is VmHWM of the `python -m serve` process after the saturation load"
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
