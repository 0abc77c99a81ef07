"""The one two-step runner on onnxruntime: router → condition → classifier, as the server runs it.

The server (serve/runtime.py adds its per-request checks on top), export's parity, accuracy and variant checks,
and the benchmarks all run the graphs through `TwoStep`, with the session options defined once here, so every
published figure is measured the way the server runs. Torch- and onnx-free: numpy, onnxruntime and this package's
manifest and weights-file reader only (the server imports it).

A bundle with a shared weights file (export/shared_weights.py) is loaded once: both sessions get the same
OrtValues (`SessionOptions.add_initializer`, used in place on CPU), so the backbone is in memory once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .manifest import PIXEL_VALUES, PROMPT_IDS, TASK_ID, GraphSpec, Manifest
from .weights_file import read_weights

CPU = "CPUExecutionProvider"
CONDITION = {"task": TASK_ID, "prompt_set": PROMPT_IDS, "none": None}  # what the router hands the classifier


_arena_lock = threading.Lock()
_arena_registered = False


def _register_shared_cpu_arena() -> None:
    """One CPU arena for every session of this process (onnxruntime's environment allocator), registered once.

    Each session otherwise grows its own arena to its peak activations: the router's and the classifier's peaks
    then add up although the two steps run one after the other (ViT-B/16 at batch 8: 85 MiB less resident)."""
    global _arena_registered
    with _arena_lock:
        if not _arena_registered:
            cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # onnxruntime's defaults
            _arena_registered = True


def session_options(threads: int = 0, shared_weights: bool = False) -> ort.SessionOptions:
    """The session options of every two-step session (server, export checks, benchmarks)."""
    _register_shared_cpu_arena()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
    options.log_severity_level = 3  # a missing GPU provider is reported through `providers`, not logs
    # Idle intra-op workers sleep instead of spinning: spinning burns the cores the event loop, the other
    # graph and co-located processes need (make bench: 2-3× the throughput on a shared 2-core CPU).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.use_env_allocators", "1")  # the process's one CPU arena
    if shared_weights:
        # Pre-packing copies every MatMul weight into each session's own packed buffer: one backbone per session
        # again. Unpacked, MLAS packs per call (≪ 1% of a ViT forward) and the shared tensors are used in place.
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def usable_providers(requested: tuple[str, ...]) -> list[str]:
    """The requested providers this onnxruntime build has, best first; CPU when none is."""
    available = set(ort.get_available_providers())
    return [p for p in requested if p in available] or [CPU]


@dataclass
class TwoStep:
    """One session per graph ("router" unless routing is "none", "classifier"), numpy in, numpy out."""

    sessions: dict[str, ort.InferenceSession]
    routing: str
    # The shared tensors' memory: onnxruntime uses it in place, so it lives as long as the sessions.
    shared: dict[str, ort.OrtValue] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: Path, graphs: dict[str, GraphSpec], routing: str, weights: str | None = None,
             providers: tuple[str, ...] = (CPU,), threads: int = 0) -> TwoStep:
        """Sessions on `folder / graph.file`; `weights` (a file in `folder`) is read once and shared by all."""
        shared = {}
        if weights is not None:
            shared = {name: ort.OrtValue.ortvalue_from_numpy(array)
                      for name, array in read_weights(Path(folder) / weights).items()}
        sessions = {}
        for name, graph in graphs.items():
            options = session_options(threads, shared_weights=bool(shared))
            for tensor, value in shared.items():
                options.add_initializer(tensor, value)
            sessions[name] = ort.InferenceSession(str(Path(folder) / graph.file), options,
                                                  providers=usable_providers(providers))
        return cls(sessions, routing, shared)

    @classmethod
    def of_bundle(cls, folder: Path, manifest: Manifest, variant: str | None = None,
                  providers: tuple[str, ...] = (CPU,), threads: int = 0) -> TwoStep:
        """The bundle's graphs (or a published variant's, which are self-contained) as the server opens them."""
        if variant is None:
            weights = manifest.shared_weights.file if manifest.shared_weights is not None else None
            return cls.open(folder, manifest.graphs, manifest.routing, weights, providers, threads)
        graphs = next(v.graphs for v in manifest.variants if v.name == variant)
        return cls.open(folder, graphs, manifest.routing, None, providers, threads)

    @property
    def condition(self) -> str | None:
        return CONDITION[self.routing]

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One graph, every output by name."""
        session = self.sessions[name]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def __call__(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs of both graphs by name (the classifier's win where names repeat)."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self.condition is None:
            return self.run("classifier", {PIXEL_VALUES: pixel_values})
        routed = self.run("router", {PIXEL_VALUES: pixel_values})
        feeds = {PIXEL_VALUES: pixel_values, self.condition: routed[self.condition]}
        return {**routed, **self.run("classifier", feeds)}

    def close(self) -> None:
        self.sessions = {}
        self.shared = {}


def throughput(runner: TwoStep, images: np.ndarray, batch: int, seconds: float = 1.0, max_rounds: int = 200) -> float:
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
