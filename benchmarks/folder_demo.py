"""`python -m benchmarks.folder_demo`: bring your own classes, end to end, on image files.

Split-Digits is written out as PNG files in the layout people have (`ROOT/<task>/{train,test}/<class>/<image>`,
classes named "zero".."nine"); HiDe-Prompt learns the task folders (`folder_hideprompt`); the run is published
and served; then, while a client keeps sending requests, `make learn-next DATA=<one more folder>` teaches the
served model that folder's classes and the server hot-swaps to a version with more outputs. Prints the served
accuracy per class, by the names the server answers with, before and after, and fails unless every request
succeeded, the new version was picked up and its new classes are recognised.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.digit_folders import SPLIT_DIGITS, write_task_folders
from benchmarks.loop_demo import step, wait_for_version
from serve.client import Client, wait_ready
from train.data.digits import DIGIT_NAMES, write_digit_folders

REPO = Path(__file__).resolve().parent.parent
TASKS, NEW_TASK = SPLIT_DIGITS[:-1], SPLIT_DIGITS[-1]  # the task folders trained first; the one learned while serving


@dataclass
class Load:
    """A client thread sending small batches of encoded images until stopped (bounded by `max_requests`)."""

    client: Client
    images: list[bytes]
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
            try:
                response = self.client.classify(images=rng.sample(self.images, 8), top_k=1)
            except grpc.RpcError as error:
                self.failed[error.code().name] += 1
            else:
                self.ok += 1
                self.versions[response.bundle_version] += 1
            time.sleep(0.02)


def test_images(folders: list[Path]) -> list[tuple[str, bytes]]:
    """(class folder name, file bytes) of every test image of the task folders."""
    return [(path.parent.name, path.read_bytes()) for folder in folders
            for path in sorted((folder / "test").glob("*/*.png"))]


def served_accuracy(client: Client, samples: list[tuple[str, bytes]]) -> tuple[int, dict[str, float]]:
    """(answering version, % of each class's images the server names right)."""
    hits, totals, version = defaultdict(int), Counter(), 0
    for start in range(0, len(samples), 32):
        chunk = samples[start:start + 32]
        response = client.classify(images=[data for _, data in chunk], top_k=1)
        version = response.bundle_version
        for (name, _), prediction in zip(chunk, response.predictions):
            totals[name] += 1
            hits[name] += prediction.top[0].name == name
    return version, {name: 100.0 * hits[name] / totals[name] for name in totals}


def start_server(bundles: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`python -m serve` on a free port; returns it and its port once it serves (its output goes to `log`)."""
    server = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundles), "--host", "127.0.0.1",
                               "--port", "0", "--metrics-port", "-1", "--poll-interval-s", "1", "--log-level",
                               "WARNING"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    first = server.stdout.readline()
    port = re.search(r" on [^ ]*:(\d+) ", first)
    if not first.startswith("serving") or port is None:
        server.kill()
        raise SystemExit(f"the server did not start: {first}{server.stdout.read()}")

    def keep() -> None:
        with open(log, "w") as f:
            f.write(first)
            for line in server.stdout:
                f.write(line)

    threading.Thread(target=keep, daemon=True).start()
    return server, int(port.group(1))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.folder_demo", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("output/demo-folder"))
    p.add_argument("--ranks", type=int, default=2, help="DeepSpeed ranks for training")
    p.add_argument("--max-drop", type=float, default=5.0, help="guard rail: points of accuracy old tasks may lose")
    p.add_argument("--min-new-accuracy", type=float, default=50.0,
                   help="least served accuracy (%%) on the new classes for the demo to pass")
    p.add_argument("train_overrides", nargs="*", help="key=value overrides for training (e.g. optim.epochs=1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work, env = args.workdir.resolve(), {**os.environ, "PYTHONUNBUFFERED": "1"}
    root, new, run, bundles = work / "folders", work / "new_classes", work / "run", work / "bundles"
    folders = write_task_folders(root, TASKS)
    write_digit_folders(new, NEW_TASK)
    print(f"── wrote Split-Digits as PNG class folders: {len(TASKS)} task folders under {root}, one more in {new} "
          f"({', '.join(DIGIT_NAMES[d] for d in NEW_TASK)})", flush=True)
    deepspeed = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.ranks)]
    step(f"train the {len(TASKS)} task folders", deepspeed + ["train/main.py", "folder_hideprompt", "--data-path",
         str(root), "--output_dir", str(run), *args.train_overrides], env, work / "train.log")
    step(f"publish version {len(TASKS)}", [sys.executable, "-m", "export.promote", str(run), "--bundle", str(bundles),
         "--max-drop", str(args.max_drop)], env, work / "publish.log")
    server, port = start_server(bundles, work / "server.log", env)
    try:
        return serve_and_learn(args, Client.connect(f"127.0.0.1:{port}"), folders + [new], work, env)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def serve_and_learn(args, client: Client, folders: list[Path], work: Path, env: dict[str, str]) -> int:
    wait_ready(client, 120)
    samples = test_images(folders)
    before = served_accuracy(client, samples)
    load = Load(client, [data for _, data in samples])
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    learn = ["make", "--no-print-directory", "learn-next", f"RUN={work / 'run'}", f"BUNDLE={work / 'bundles'}",
             f"DATA={work / 'new_classes'}", f"RANKS={args.ranks}", f"MAX_DROP={args.max_drop}"]
    try:
        step("learn the new folder while serving: make learn-next DATA=new_classes", learn, env, work / "learn.log")
        swap = wait_for_version(client, before[0] + 1, 120)
        after = served_accuracy(client, samples)
    finally:
        load.stop.set()
        thread.join(timeout=30)
    report(before, after, load, swap, client)
    recognised = min(after[1][DIGIT_NAMES[d]] for d in NEW_TASK) >= args.min_new_accuracy
    return 0 if not load.failed and recognised else 1


def mean(accuracy: dict[str, float], digits: list[int]) -> float:
    return sum(accuracy[DIGIT_NAMES[d]] for d in digits) / len(digits)


def report(before, after, load: Load, swap: float, client: Client) -> None:
    (v0, a0), (v1, a1) = before, after
    print("\nserved accuracy per class (%), the folders' test images sent as PNG files, no task hints "
          "(right = the server answers with the image's folder name):")
    print(f"{'class':>9} | version {v0:<3} | version {v1:<3}")
    for name in sorted(a1, key=DIGIT_NAMES.index):
        print(f"{name:>9} | {a0[name]:11.2f} | {a1[name]:11.2f}")
    old, new = [d for task in TASKS for d in task], list(NEW_TASK)
    print(f"{'old mean':>9} | {mean(a0, old):11.2f} | {mean(a1, old):11.2f}")
    print(f"{'new mean':>9} | {mean(a0, new):11.2f} | {mean(a1, new):11.2f}")
    failed = sum(load.failed.values())
    print(f"\nclient during learn-next: {load.ok} requests answered, {failed} failed"
          + (f" {dict(load.failed)}" if failed else "")
          + f"; answered by versions {dict(sorted(load.versions.items()))}")
    print(f"hot swap {v0} → {v1}: serving within {swap:.1f} s of the publish step's end")
    for task in client.info().tasks:
        print(f"  task {task.task_id + 1} ({'learned' if task.learned else 'not yet'}): {', '.join(task.class_names)}")


if __name__ == "__main__":
    sys.exit(main())
