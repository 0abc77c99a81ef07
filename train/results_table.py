"""Markdown tables of finished runs: the README's results and comparison tables.

`python -m train.results_table DIR...`: one row per run plus mean ± sample std (ddof 1) (what `make results` runs);
`python -m train.results_table --by-preset DIR...`: one row per preset, mean ± std over its runs
(what `make compare` runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = {
    "FAA": "final_average_accuracy",
    "CAA": "cumulative_average_accuracy",
    "Acc@task": "task_identity_accuracy",
    "forgetting": "final_forgetting",
    "BWT": "backward_transfer",
}


def _mean_std(values: list[float]) -> str:
    """Mean ± sample standard deviation (ddof 1, as the few-shot study reports it)."""
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(runs: list[dict]) -> str:
    lines = ["| seed | " + " | ".join(COLUMNS) + " | ranks | stage-2 train s | stage-2 total s |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for r in runs:
        values = " | ".join(f"{r[key]:.2f}" for key in COLUMNS.values())
        lines.append(f"| {r['config']['seed']} | {values} | {r['world_size']} | {r['train_seconds']:.0f} | "
                     f"{r['total_seconds']:.0f} |")
    if len(runs) > 1:
        stats = " | ".join(_mean_std([r[k] for r in runs]) for k in COLUMNS.values())
        lines.append(f"| mean ± std | {stats} | | | |")
    return "\n".join(lines)


def preset_table(runs: list[dict]) -> str:
    """One row per preset (in first-seen order), mean ± std over its runs (seeds)."""
    by_preset: dict[str, list[dict]] = {}
    for r in runs:
        by_preset.setdefault(r["preset"], []).append(r)
    lines = ["| preset | seeds | " + " | ".join(COLUMNS) + " | train s (all stages) |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for name, group in by_preset.items():
        cells = " | ".join(_mean_std([r[k] for r in group]) for k in COLUMNS.values())
        seconds = _mean_std([r["train_seconds"] + r.get("stage1_train_seconds", 0.0) for r in group])
        lines.append(f"| {name} | {len(group)} | {cells} | {seconds} |")
    return "\n".join(lines)


def load_run(folder: Path) -> dict:
    """A run's results, with the training time of the stage-1 run it started itself (HiDe)."""
    run = json.loads((folder / "results.json").read_text())
    stage1 = folder / "tii" / "results.json"
    if stage1.is_file():
        run["stage1_train_seconds"] = json.loads(stage1.read_text())["train_seconds"]
    return run


def main(argv: list[str]) -> int:
    by_preset = "--by-preset" in argv
    dirs = [a for a in argv if a != "--by-preset"]
    if not dirs:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [load_run(Path(d)) for d in dirs]
    print(preset_table(runs) if by_preset else table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
