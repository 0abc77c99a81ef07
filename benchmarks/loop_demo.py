"""`python -m benchmarks.loop_demo`: the continual deployment loop, end to end, on Split-Digits.

Train tasks 1-3 → publish bundle version 3 → serve it → while a client keeps sending requests, learn task 4
and task 5 (`train/next_task.py` + `python -m export.promote`, the two halves of `make learn-next`) → the
server hot-swaps to versions 4 and 5. Prints the served per-task accuracy after each swap, and fails
unless every request succeeded and each new version was picked up. Training and export run as
subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from benchmarks.digits import write_test_npz
from serve.client import Client, wait_ready
from train import per_task_accuracy

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Load:
    """A client thread sending small batches until stopped (bounded by `max_requests`)."""

    client: Client
    pixels: np.ndarray
    max_requests: int = 100_000
    ok: int = 0
    failed: Counter = field(default_factory=Counter)  # status code → count
    versions: Counter = field(default_factory=Counter)  # answering version → requests
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(0)
        for _ in range(self.max_requests):
            if self.stop.is_set():
                return
            start = rng.randrange(len(self.pixels) - 8)
            try:
                response = self.client.classify(pixels=self.pixels[start:start + 8], top_k=1)
            except grpc.RpcError as error:
                self.failed[error.code().name] += 1
            else:
                self.ok += 1
                self.versions[response.bundle_version] += 1
            time.sleep(0.02)


def served_per_task_accuracy(client: Client, pixels: np.ndarray, labels: np.ndarray, class_to_task: np.ndarray):
    """(answering version, served top-1 accuracy % per task over the test images)."""
    predicted, version = [], 0
    for start in range(0, len(labels), 64):
        response = client.classify(pixels=pixels[start:start + 64], top_k=1)
        predicted += [p.top[0].class_id for p in response.predictions]
        version = response.bundle_version
    return version, per_task_accuracy(np.array(predicted), labels, class_to_task)


def step(title: str, command: list[str], env: dict[str, str], log: Path, allowed: tuple[int, ...] = (0,)) -> int:
    """Run one stage with its output in `log`; show the command and the stage's last lines."""
    print(f"── {title}: {' '.join([Path(command[0]).name, *command[1:]])}", flush=True)
    with open(log, "w") as f:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    lines = [line for line in log.read_text().splitlines() if line.strip() and not line.startswith("[")]
    print("   " + "\n   ".join(lines[-2:]), flush=True)
    if code not in allowed:
        raise SystemExit(f"'{title}' failed with exit code {code} (log: {log})")
    return code


def wait_for_version(client: Client, version: int, timeout_s: float) -> float:
    started = time.monotonic()
    while client.info().bundle_version != version:
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"the server did not pick up version {version} within {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loop_demo", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("output/loop"))
    p.add_argument("--test-npz", type=Path, help="pixel_values + labels of the test split (default: Split-Digits' "
                   "test split, written to WORKDIR/test_digits.npz)")
    p.add_argument("--ranks", type=int, default=2, help="DeepSpeed ranks for training")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--metrics-port", type=int, default=8012)
    p.add_argument("--max-drop", type=float, default=5.0, help="guard rail: points of accuracy old tasks may lose")
    p.add_argument("--first-tasks", type=int, default=3, help="tasks learned before serving starts")
    p.add_argument("train_overrides", nargs="*", help="key=value overrides for training (e.g. optim.epochs=1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run, bundles, env = args.workdir / "run", args.workdir / "bundles", {**os.environ, "PYTHONUNBUFFERED": "1"}
    deepspeed = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.ranks)]
    promote = [sys.executable, "-m", "export.promote", str(run), "--bundle", str(bundles), "--max-drop",
               str(args.max_drop)]
    if args.test_npz is None:
        args.test_npz = write_test_npz(args.workdir / "test_digits.npz")
    data = np.load(args.test_npz)
    pixels, labels = data["pixel_values"].astype(np.float32), data["labels"].astype(np.int64)

    args.workdir.mkdir(parents=True, exist_ok=True)
    step(f"train tasks 1-{args.first_tasks}", deepspeed + ["train/main.py", "digits_hideprompt", "--output_dir",
         str(run), "--until_task", str(args.first_tasks), *args.train_overrides], env, args.workdir / "train.log")
    step(f"publish version {args.first_tasks}", promote, env, args.workdir / "publish.log")
    server = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundles), "--host", "127.0.0.1",
                               "--port", str(args.port), "--metrics-host", "127.0.0.1",
                               "--metrics-port", str(args.metrics_port),
                               "--poll-interval-s", "1", "--log-level", "WARNING"], cwd=REPO, env=env)
    try:
        return serve_and_learn(args, server, deepspeed, promote, pixels, labels, env)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def serve_and_learn(args, server, deepspeed, promote, pixels, labels, env) -> int:
    client = Client.connect(f"127.0.0.1:{args.port}")
    wait_ready(client, 120)
    info = client.info()
    class_to_task = np.asarray(info.class_to_task)
    rows = [served_per_task_accuracy(client, pixels, labels, class_to_task)]
    load = Load(Client.connect(f"127.0.0.1:{args.port}"), pixels)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    swaps = []
    for task in range(args.first_tasks + 1, info.num_tasks + 1):
        step(f"learn task {task} while serving", deepspeed + ["train/next_task.py", str(args.workdir / "run"),
             *args.train_overrides], env, args.workdir / f"task{task}.log")
        if step(f"publish version {task}", promote, env, args.workdir / f"publish{task}.log", (0, 3)) == 3:
            continue  # refused by a guard rail: the server keeps the version it has
        swaps.append(wait_for_version(client, task, 120))
        rows.append(served_per_task_accuracy(client, pixels, labels, class_to_task))
    load.stop.set()
    thread.join(timeout=30)
    report(rows, load, swaps, args.first_tasks)
    trained = json.loads((args.workdir / "run" / "results.json").read_text())["final_average_accuracy"]
    served = float(np.mean(rows[-1][1]))
    print(f"served = trained: {served:.2f}% vs the training run's FAA {trained:.2f}% (mean over tasks)")
    expected = info.num_tasks - args.first_tasks
    new_recognised = all(rows[-1][1][t] > 50 for t in range(args.first_tasks, info.num_tasks))
    same = abs(served - trained) < 1e-6
    return 0 if not load.failed and len(swaps) == expected and new_recognised and same else 1


def report(rows, load: Load, swaps: list[float], first: int) -> None:
    tasks = len(rows[-1][1])
    print("\nserved accuracy per task (%), Split-Digits test set, no task hints:")
    print("version | " + " | ".join(f"task {t + 1}" for t in range(tasks)) + f" | tasks 1-{first} mean")
    for version, accuracy in rows:
        cells = [f"{a:6.2f}" for a in accuracy] + [f"{np.mean(accuracy[:first]):6.2f}"]
        print(f"{version:7d} | " + " | ".join(cells))
    failed = sum(load.failed.values())
    print(f"\nclient during the swaps: {load.ok} requests answered, {failed} failed"
          + (f" {dict(load.failed)}" if failed else "")
          + f"; answered by versions {dict(sorted(load.versions.items()))}")
    print(f"hot swaps: {' → '.join(str(v) for v, _ in rows)} (each new version was serving within "
          f"{max(swaps, default=0):.1f} s of its publish step's end)")
    old_before, old_after = np.mean(rows[0][1][:first]), np.mean(rows[-1][1][:first])
    print(f"old classes (tasks 1-{first}): {old_before:.2f}% before → {old_after:.2f}% after; new classes "
          f"(tasks {first + 1}-{tasks}): " + ", ".join(f"{a:.2f}%" for a in rows[-1][1][first:]))


if __name__ == "__main__":
    sys.exit(main())
