"""The baseline a user would otherwise write: a plain PyTorch-eager gRPC server for the same model.

    python -m benchmarks.eager_server --run RUN_DIR --bundle BUNDLE_VERSION_DIR [--port 0] [--threads N]

A `grpc.aio` servicer of `hidecl.v1.ContinualClassifier` (Classify with `pixel_values`, and ModelInfo so that
the load generator's readiness check works) that runs the eager two-step of the restored run (export/graphs.py
RouterGraph → ClassifierGraph, torch.no_grad) once per request, on the event loop: no batching, no queue, no
ONNX. The bundle version folder names the task (its manifest's tasks_learned) and the class names, so both
servers answer with the same model. --threads sets torch's intra-op threads (default: torch's own choice,
every core). Its "serving" line is "serving ... on HOST:PORT", as `python -m serve` prints.
Benchmark code only: the product never runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
import numpy as np
import torch

from export.graphs import ClassifierGraph, RouterGraph
from export.manifest import load_manifest
from serve.protos import load
from train import load_trained

pb, pb_grpc = load("continual")


class EagerTwoStep:
    """router → classifier as torch modules; probabilities, task ids and task confidences as numpy."""

    def __init__(self, run: Path, task: int):
        trained = load_trained(run, task)
        self.method = trained.method
        self.router = RouterGraph(self.method, trained.seen).eval()
        self.classifier = ClassifierGraph(self.method, trained.seen).eval()

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.from_numpy(pixels)
        if self.method.routing == "none":
            _, probabilities, tasks, confidence = self.classifier(x)
            return probabilities.numpy(), tasks.numpy(), confidence.numpy()
        condition, confidence = self.router(x)[:2]
        probabilities = self.classifier(x, condition)[1]
        tasks = condition if self.method.routing == "task" else self.method.class_to_task[probabilities.argmax(1)]
        return probabilities.numpy(), tasks.numpy(), confidence.numpy()


class EagerServicer(pb_grpc.ContinualClassifierServicer):
    def __init__(self, model: EagerTwoStep, names: list[str], version: int, shape: list[int]):
        self.model, self.names, self.version, self.shape = model, names, version, shape

    async def Classify(self, request, context):
        shape = list(request.pixel_values.shape)
        if len(shape) != 4 or shape[1:] != self.shape or len(request.pixel_values.data) != 4 * int(np.prod(shape)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"send pixel_values FP32 [N, {', '.join(map(str, self.shape))}]; got shape {shape}.")
        pixels = np.frombuffer(request.pixel_values.data, "<f4").reshape(shape)
        probabilities, tasks, confidence = self.model(pixels)
        k = min(request.top_k or 5, len(self.names))
        predictions = []
        for probs, task, conf in zip(probabilities, tasks, confidence):
            top = np.argsort(-probs, kind="stable")[:k]
            predictions.append(pb.Prediction(
                top=[pb.ClassScore(class_id=int(c), name=self.names[c], probability=float(probs[c])) for c in top],
                task_id=int(task), task_confidence=float(conf)))
        return pb.ClassifyResponse(predictions=predictions, bundle_version=self.version)

    async def ModelInfo(self, request, context):
        return pb.ModelInfoResponse(bundle_version=self.version, class_names=self.names,
                                    input_shape=[-1, *self.shape], providers=["torch-eager"])


async def serve(args: argparse.Namespace) -> None:
    manifest = load_manifest(args.bundle)
    model = EagerTwoStep(args.run, manifest.tasks_learned - 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = manifest.preprocessing.img_size
    model(np.zeros((1, 3, size, size), np.float32))  # warm-up, as our server warms its sessions
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    pb_grpc.add_ContinualClassifierServicer_to_server(
        EagerServicer(model, manifest.class_names, manifest.version, [3, size, size]), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    print(f"serving {args.run} (torch eager, task {manifest.tasks_learned}) on {args.host}:{port}, "
          f"{torch.get_num_threads()} torch threads", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eager_server", description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the trained run (output_dir)")
    p.add_argument("--bundle", type=Path, required=True, help="the bundle version folder exported from that run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed on the serving line)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    asyncio.run(serve(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
