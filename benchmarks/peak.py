"""The machine's fp32 peak as this run can reach it: the best large square fp32 MatMul of three engines.

Each engine (torch, onnxruntime on a one-MatMul ONNX graph, numpy's BLAS) multiplies two n×n fp32 matrices on
every core, best of `rounds` calls after a warm-up; the peak is the best of the three. Any single BLAS can be
held back (numpy's OpenBLAS is pinned to Haswell kernels by OPENBLAS_CORETYPE in this environment), so no one
engine is taken as the machine's limit.
"""

from __future__ import annotations

import os
import time

import numpy as np


def best_gflops(matmul, n: int, rounds: int) -> float:
    """Best rate of `matmul()` (one n×n×n product) over `rounds` timed calls after one warm-up."""
    matmul()
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        matmul()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e9


def torch_gflops(a: np.ndarray, b: np.ndarray, rounds: int) -> float:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.no_grad():
            return best_gflops(lambda: ta @ tb, len(a), rounds)
    finally:
        torch.set_num_threads(previous)


def onnxruntime_gflops(a: np.ndarray, b: np.ndarray, rounds: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = len(a)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    # IR version 8 (opset 17): what every onnxruntime of the constraints loads, whatever onnx writes by default
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return best_gflops(lambda: session.run(None, {"a": a, "b": b}), n, rounds)


def numpy_gflops(a: np.ndarray, b: np.ndarray, rounds: int) -> float:
    return best_gflops(lambda: a @ b, len(a), rounds)


ENGINES = {"torch": torch_gflops, "onnxruntime": onnxruntime_gflops, "numpy": numpy_gflops}


def engine_rates(n: int = 2048, rounds: int = 4) -> dict[str, float]:
    """{engine: best GFLOP/s of an n×n fp32 MatMul on every core}."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    return {name: measure(a, b, rounds) for name, measure in ENGINES.items()}


def fp32_peak(measurements: dict[str, float]) -> dict:
    """The peak: the best fp32 GEMM rate measured anywhere in the run (every engine at the start and at the end of
    the run on every core, and torch on one thread around the training step: any of them is a lower bound of what
    the machine can do, and other load can hold back any single one); {"best_gflops", "source"}."""
    source = max(measurements, key=measurements.get)
    return {"best_gflops": measurements[source], "source": source}
