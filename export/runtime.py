"""The exported two-step pipeline on onnxruntime, as export checks and measures it (serve/ has its own)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .manifest import PIXEL_VALUES, PROMPT_IDS, TASK_ID


class OnnxTwoStep:
    """router.onnx → condition → classifier.onnx (classifier alone when there is no router)."""

    def __init__(self, graphs: dict[str, Path], routing: str, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(str(path), options, providers=list(providers))
                         for name, path in graphs.items()}
        self.condition = {"task": TASK_ID, "prompt_set": PROMPT_IDS, "none": None}[routing]

    @staticmethod
    def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def __call__(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs of both graphs by name (the classifier's win where names repeat)."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self.condition is None:
            return self._run(self.sessions["classifier"], {PIXEL_VALUES: pixel_values})
        routed = self._run(self.sessions["router"], {PIXEL_VALUES: pixel_values})
        feeds = {PIXEL_VALUES: pixel_values, self.condition: routed[self.condition]}
        return {**routed, **self._run(self.sessions["classifier"], feeds)}


def throughput(runner: OnnxTwoStep, images: np.ndarray, batch: int, seconds: float = 1.0,
               max_rounds: int = 200) -> float:
    """Images per second of the two-step pipeline at `batch`, after one warm-up call (bounded loop)."""
    x = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
    runner(x)
    done, started = 0, time.perf_counter()
    for _ in range(max_rounds):
        runner(x)
        done += batch
        if time.perf_counter() - started >= seconds:
            break
    return done / (time.perf_counter() - started)
