"""Markdown table of finished runs, one row per run plus mean ± std: the README's results table.

`python -m train.results_table output/results/seed42 output/results/seed40 ...` (what `make results` runs).
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


def table(runs: list[dict]) -> str:
    lines = ["| seed | " + " | ".join(COLUMNS) + " | ranks | stage-2 train s | stage-2 total s |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for r in runs:
        values = " | ".join(f"{r[key]:.2f}" for key in COLUMNS.values())
        lines.append(f"| {r['config']['seed']} | {values} | {r['world_size']} | {r['train_seconds']:.0f} | "
                     f"{r['total_seconds']:.0f} |")
    if len(runs) > 1:
        stats = " | ".join(f"{np.mean([r[k] for r in runs]):.2f} ± {np.std([r[k] for r in runs]):.2f}"
                           for k in COLUMNS.values())
        lines.append(f"| mean ± std | {stats} | | | |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(table([json.loads((Path(d) / "results.json").read_text()) for d in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
