"""`python -m serve.client`: classify image files, show model info, reload, evaluate a labelled set, load-test.

    python -m serve.client classify a.png b.jpg [--top-k 3] [--task-hint 1]
    python -m serve.client info
    python -m serve.client reload [--version N] --token-file admin.token
    python -m serve.client evaluate test.npz            # pixel_values + labels → accuracy
    python -m serve.client bench --concurrency 8 --duration 10 [--batch 1] [--images a.png ...]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from .protos import load

pb, pb_grpc = load("continual")


def channel(target: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> grpc.Channel:
    """A channel with message limits for real batches; TLS when a CA is given (mTLS with cert + key)."""
    options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        Path(ca).read_bytes(), Path(key).read_bytes() if key else None, Path(cert).read_bytes() if cert else None)
    return grpc.secure_channel(target, credentials, options=options)


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def pixels_tensor(pixels: np.ndarray) -> pb.Tensor:
    return pb.Tensor(shape=list(pixels.shape), data=np.ascontiguousarray(pixels, "<f4").tobytes())


@dataclass
class Client:
    """Thin wrapper over the ContinualClassifier stubs."""

    stub: pb_grpc.ContinualClassifierStub
    admin: pb_grpc.ContinualAdminStub
    metadata: list[tuple[str, str]]
    timeout_s: float = 30.0

    @classmethod
    def connect(cls, target: str, token: str | None = None, **tls) -> Client:
        ch = channel(target, **tls)
        return cls(pb_grpc.ContinualClassifierStub(ch), pb_grpc.ContinualAdminStub(ch), bearer(token))

    def classify(self, images: list[bytes] | None = None, pixels: np.ndarray | None = None,
                 task_hint: int | None = None, top_k: int = 5) -> pb.ClassifyResponse:
        request = pb.ClassifyRequest(images=images or [], top_k=top_k)
        if pixels is not None:
            request.pixel_values.CopyFrom(pixels_tensor(pixels))
        if task_hint is not None:
            request.task_hint = task_hint
        return self.stub.Classify(request, timeout=self.timeout_s, metadata=self.metadata)

    def info(self) -> pb.ModelInfoResponse:
        return self.stub.ModelInfo(pb.ModelInfoRequest(), timeout=self.timeout_s, metadata=self.metadata)

    def reload(self, version: int = 0) -> pb.ReloadResponse:
        return self.admin.Reload(pb.ReloadRequest(version=version), timeout=600, metadata=self.metadata)


@dataclass
class Evaluation:
    accuracy: float  # % of all images
    average_task_accuracy: float  # mean over tasks of each task's accuracy (the training report's FAA)
    images: int
    version: int


def evaluate(client: Client, pixels: np.ndarray, labels: np.ndarray, batch: int = 64) -> Evaluation:
    """Top-1 accuracy of the served model on labelled `pixel_values` (class-incremental: no task hints)."""
    predicted, version = [], 0
    for start in range(0, len(labels), batch):
        response = client.classify(pixels=pixels[start:start + batch], top_k=1)
        predicted += [p.top[0].class_id for p in response.predictions]
        version = response.bundle_version
    hits = np.array(predicted) == labels
    task_of = np.asarray(client.info().class_to_task)[labels]
    per_task = [hits[task_of == t].mean() for t in np.unique(task_of)]
    return Evaluation(100.0 * hits.mean(), 100.0 * float(np.mean(per_task)), len(labels), version)


def wait_ready(client: Client, timeout_s: float) -> None:
    """Poll ModelInfo until the server answers (it loads and warms the bundle first), at most `timeout_s`."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            client.stub.ModelInfo(pb.ModelInfoRequest(), timeout=5, metadata=client.metadata)
            return
        except grpc.RpcError as error:
            if time.monotonic() > end or error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                                              grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            time.sleep(0.2)


def bench(client: Client, make_request, concurrency: int, duration_s: float | None, requests: int | None) -> dict:
    """Closed-loop load: `concurrency` threads send requests until the duration or request count is reached."""
    if duration_s is None and requests is None:
        raise ValueError("give --duration or --requests.")
    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    end = time.perf_counter() + (duration_s if duration_s is not None else 3600)
    budget = [requests if requests is not None else sys.maxsize]

    def worker() -> None:
        while time.perf_counter() < end:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            start = time.perf_counter()
            try:
                make_request()
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
            except grpc.RpcError as error:
                with lock:
                    failures[error.code().name] = failures.get(error.code().name, 0) + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"requests": len(latencies), "failures": failures, "seconds": wall,
            "throughput_rps": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}


def _print_predictions(names: list[str], response: pb.ClassifyResponse) -> None:
    for name, p in zip(names, response.predictions):
        top = ", ".join(f"{s.name} ({s.class_id}) {s.probability:.3f}" for s in p.top)
        source = "hint" if p.task_from_hint else f"router, confidence {p.task_confidence:.3f}"
        print(f"{name}: task {p.task_id} ({source}) → {top}")
    print(f"bundle version {response.bundle_version}")


def _print_info(info: pb.ModelInfoResponse) -> None:
    print(f"bundle version {info.bundle_version} of {list(info.available_versions)}: {info.method} "
          f"(routing {info.routing}, backbone {info.backbone}), {info.tasks_learned}/{info.num_tasks} tasks learned, "
          f"providers {list(info.providers)}, input {list(info.input_shape)}")
    for task in info.tasks:
        state = "learned" if task.learned else "not learned yet"
        print(f"  task {task.task_id} ({state}): {', '.join(task.class_names)}")


def _evaluate(client: Client, npz: Path, results: Path | None) -> int:
    data = np.load(npz)
    e = evaluate(client, data["pixel_values"].astype(np.float32), data["labels"].astype(np.int64))
    print(f"served accuracy on {e.images} test images (bundle version {e.version}): {e.accuracy:.2f}% of images, "
          f"average over tasks {e.average_task_accuracy:.2f}%")
    if results is None:
        return 0
    import json

    trained = json.loads(results.read_text())["final_average_accuracy"]
    same = abs(trained - e.average_task_accuracy) < 0.005
    print(f"trained model (results.json final average accuracy): {trained:.2f}% → served "
          f"{'equals' if same else 'DIFFERS FROM'} trained")
    return 0 if same else 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serve.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:8001")
    p.add_argument("--token-file", type=Path, help="bearer token (first line of the file)")
    p.add_argument("--tls-ca", type=Path, help="CA to verify the server (enables TLS)")
    p.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    p.add_argument("--tls-key", type=Path, help="client key (mTLS)")
    p.add_argument("--wait-s", type=float, default=0, help="wait up to this long for the server to be ready")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="classify image files")
    c.add_argument("images", nargs="+", type=Path)
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--task-hint", type=int)
    sub.add_parser("info", help="tasks, classes, versions, providers")
    r = sub.add_parser("reload", help="admin: load and switch to a bundle version")
    r.add_argument("--version", type=int, default=0, help="0: the newest under the bundle root")
    e = sub.add_parser("evaluate", help="accuracy on an .npz with pixel_values [N,3,H,W] and labels [N]")
    e.add_argument("npz", type=Path)
    e.add_argument("--results", type=Path, help="the training run's results.json: compare with its final accuracy")
    b = sub.add_parser("bench", help="bounded load generator: throughput and p50/p95/p99")
    b.add_argument("--concurrency", type=int, default=8)
    b.add_argument("--duration", type=float, help="seconds")
    b.add_argument("--requests", type=int, help="total requests")
    b.add_argument("--batch", type=int, default=1, help="images per request")
    b.add_argument("--images", nargs="*", type=Path, help="encoded images to send (default: random pixel_values)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    token = args.token_file.read_text().splitlines()[0].strip() if args.token_file else None
    client = Client.connect(args.target, token, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    if args.wait_s:
        wait_ready(client, args.wait_s)
    if args.command == "classify":
        response = client.classify([f.read_bytes() for f in args.images], task_hint=args.task_hint, top_k=args.top_k)
        _print_predictions([str(f) for f in args.images], response)
    elif args.command == "info":
        _print_info(client.info())
    elif args.command == "reload":
        print(client.reload(args.version))
    elif args.command == "evaluate":
        return _evaluate(client, args.npz, args.results)
    else:
        if args.images:
            payload = [f.read_bytes() for f in args.images]
            make = lambda: client.classify(images=(payload * args.batch)[:args.batch], top_k=1)
        else:
            shape = [args.batch, *client.info().input_shape[1:]]
            pixels = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            make = lambda: client.classify(pixels=pixels, top_k=1)
        stats = bench(client, make, args.concurrency, args.duration, args.requests)
        print(f"{stats['requests']} requests in {stats['seconds']:.1f} s: {stats['throughput_rps']:.1f} req/s "
              f"({stats['throughput_rps'] * args.batch:.1f} images/s), latency p50 {stats['p50_ms']:.2f} ms, "
              f"p95 {stats['p95_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, failures {stats['failures'] or 0}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
