"""`python -m export.promote RUN --bundle ROOT [--max-drop 5]`: publish a run's newest task as a bundle version
only if it holds up against the version being served, and record the decision.

Guard rails, checked before anything is published (a running server follows only published versions):
- the backbone is the served one (same weights SHA-256);
- export parity passes (see export/parity.py);
- the mean served accuracy on the tasks the previous version knew drops by at most `--max-drop` points.
Each decision is appended to `ROOT/decisions.jsonl`; the server exposes them as metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train import UserError, last_completed_task

from .bundle import Refused, export_bundle
from .manifest import DECISIONS, Manifest, bundle_versions, load_manifest


@dataclass
class Decision:
    run_dir: str
    tasks_learned: int
    previous_version: int | None
    accepted: bool = False
    version: int | None = None
    reason: str = ""
    old_tasks_accuracy_before: float | None = None  # mean % on the previous version's tasks, served by it
    old_tasks_accuracy_after: float | None = None  # the same tasks, served by the candidate
    accuracy_per_task: list[float] = field(default_factory=list)  # the candidate's, every learned task
    time: float = field(default_factory=time.time)


def previous_manifest(root: Path) -> Manifest | None:
    versions = bundle_versions(root)
    return load_manifest(root / str(versions[-1]), verify_files=False) if versions else None


def guard(previous: Manifest | None, max_drop: float, decision: Decision) -> Callable[[Manifest], None]:
    """The gate export_bundle applies to the finished candidate before publishing it."""
    def check(candidate: Manifest) -> None:
        decision.accuracy_per_task = candidate.measurement.accuracy_per_task or []
        if previous is None:
            return
        if candidate.backbone.sha256 != previous.backbone.sha256:
            raise Refused(f"the backbone differs from served version {previous.version}'s "
                          f"({candidate.backbone.sha256[:12]}… vs {previous.backbone.sha256[:12]}…)")
        known = previous.tasks_learned
        before = previous.measurement.accuracy_per_task[:known]
        after = decision.accuracy_per_task[:known]
        decision.old_tasks_accuracy_before = sum(before) / known
        decision.old_tasks_accuracy_after = sum(after) / known
        drop = decision.old_tasks_accuracy_before - decision.old_tasks_accuracy_after
        if drop > max_drop:
            raise Refused(f"accuracy on tasks 1..{known} would drop {drop:.2f} points "
                          f"({decision.old_tasks_accuracy_before:.2f}% → {decision.old_tasks_accuracy_after:.2f}%), "
                          f"more than --max-drop {max_drop}")
    return check


def promote(run_dir: str | Path, root: str | Path, max_drop: float = 5.0, variants: tuple[str, ...] = (),
            log: Callable[[str], None] = print) -> Decision:
    """Export the run's newest task behind the guard rails; record and return the decision."""
    run_dir, root = Path(run_dir), Path(root)
    previous = previous_manifest(root)
    decision = Decision(str(run_dir.resolve()), last_completed_task(run_dir) + 1,
                        previous.version if previous else None)
    if previous is not None and decision.tasks_learned <= previous.tasks_learned:
        raise UserError(f"'{run_dir}' has learned {decision.tasks_learned} task(s); served version "
                        f"{previous.version} already has {previous.tasks_learned}: learn the next task first "
                        f"(deepspeed train/next_task.py {run_dir}).")
    if previous is not None and previous.measurement.accuracy_per_task is None:
        raise UserError(f"served version {previous.version} records no per-task accuracy to compare with: "
                        "export it again with this version of export/.")
    try:
        folder = export_bundle(run_dir, root, variants=variants, log=log,
                               gate=guard(previous, max_drop, decision))
        decision.accepted, decision.version = True, int(folder.name)
        decision.reason = "passed parity and every guard rail"
    except Refused as refusal:
        decision.reason = str(refusal)
    record(root, decision)
    log(("published" if decision.accepted else "refused") + f": {decision.reason}")
    return decision


def record(root: Path, decision: Decision) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / DECISIONS, "a") as f:
        f.write(json.dumps(asdict(decision)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.promote", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--bundle", required=True, help="the bundle root the server watches")
    parser.add_argument("--max-drop", type=float, default=5.0,
                        help="largest allowed drop (points) of the mean accuracy on already-served tasks")
    parser.add_argument("--variants", default="", help="variants to build too (comma-separated; default none)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        decision = promote(args.run_dir, args.bundle, args.max_drop, tuple(v for v in args.variants.split(",") if v))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if decision.accepted else 3


if __name__ == "__main__":
    sys.exit(main())
