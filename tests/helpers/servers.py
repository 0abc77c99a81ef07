"""Servers for the tests: `serve.server.build_server` in process (its own event loop in a thread; tests use
ordinary sync stubs) or `python -m serve` in a subprocess, their configuration on loopback, Open Inference
Protocol requests and responses, and the Prometheus samples they expose."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serve.config import ServeConfig
from tests.helpers.runs import REPO


def local_config(root: Path, **overrides) -> ServeConfig:
    """A server of the bundle root `root` on 127.0.0.1, a port it picks, no metrics port and no polling (one scan
    at start); `overrides` are other ServeConfig fields."""
    return ServeConfig(root, **{"host": "127.0.0.1", "port": 0, "metrics_port": None, "poll_interval_s": 0}
                       | overrides)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` every 20 ms until it holds; AssertionError naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class ServerThread:
    """`serve.server.build_server(config)` on a private event loop; `stop()` drains it."""

    def __init__(self, config: ServeConfig) -> None:
        from serve.server import build_server

        self.loop = asyncio.new_event_loop()
        self.server = None
        ready = threading.Event()
        self.error: BaseException | None = None

        async def start():
            self.server = build_server(config)
            await self.server.start()

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(start())
            except BaseException as error:  # reported to the test by __init__
                self.error = error
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(60):
            raise TimeoutError("server did not start within 60 s")
        if self.error is not None:
            raise self.error
        self.target = f"127.0.0.1:{self.server.port}"

    def call(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def metrics_text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.server.metrics.registry).decode()

    def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def oip_request(pb, model: str, inputs: dict, version: str = "", outputs: tuple[str, ...] = ()):
    """A ModelInferRequest with raw inputs (numpy arrays; a list of bytes becomes a BYTES tensor)."""
    import numpy as np

    from serve.tensors import datatype_of, encode_bytes, to_raw

    request = pb.ModelInferRequest(model_name=model, model_version=version, id="t")
    for name, value in inputs.items():
        if isinstance(value, list):
            request.inputs.add(name=name, datatype="BYTES", shape=[len(value)])
            request.raw_input_contents.append(encode_bytes(value))
        else:
            value = np.asarray(value)
            request.inputs.add(name=name, datatype=datatype_of(value), shape=list(value.shape))
            request.raw_input_contents.append(to_raw(value))
    for name in outputs:
        request.outputs.add(name=name)
    return request


def oip_outputs(response) -> dict:
    """Raw outputs of a ModelInferResponse as numpy arrays by name (BYTES: a list of bytes)."""
    import numpy as np

    from serve.tensors import DTYPES, decode_bytes

    return {o.name: decode_bytes(raw, o.name) if o.datatype == "BYTES" else
            np.frombuffer(raw, DTYPES[o.datatype]).reshape(list(o.shape))
            for o, raw in zip(response.outputs, response.raw_output_contents)}


def start_server_process(root: Path, *args: str, timeout: float = 60.0):
    """`python -m serve --bundle ROOT` on ports the server picks itself (no free-port race); returns (process,
    port, metrics port) once it serves, read from the line that says so."""
    process = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(root), "--host", "127.0.0.1",
                                "--port", "0", "--metrics-port", "0", "--log-level", "WARNING", *args],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []  # log lines (warnings) may come before the line that says it serves
    while not (line := process.stdout.readline()).startswith("serving"):
        seen.append(line)
        if not line:
            process.kill()
            raise RuntimeError(f"server did not start: {''.join(seen)}")
    ports = re.search(r" on [^ ]+:(\d+) \(metrics :(\d+|None)\)", line)
    return process, int(ports[1]), None if ports[2] == "None" else int(ports[2])
