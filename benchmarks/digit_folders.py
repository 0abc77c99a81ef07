"""`python -m benchmarks.digit_folders ROOT`: Split-Digits as ImageFolder task folders of PNG files.

Writes `ROOT/task<k>/{train,test}/<class name>/<index>.png` for the five tasks (0, 1), (2, 3), … (8, 9), classes
named "zero".."nine": the layout `folder_<method>` presets read, on data whose answers are known.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.data.digits import write_digit_folders

SPLIT_DIGITS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def write_task_folders(root: Path, tasks: tuple[tuple[int, ...], ...] = SPLIT_DIGITS) -> list[Path]:
    return [write_digit_folders(root / f"task{t + 1}", digits) for t, digits in enumerate(tasks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.digit_folders", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write the task folders into")
    folders = write_task_folders(parser.parse_args(argv).root)
    print(f"wrote {len(folders)} task folders: {', '.join(str(f) for f in folders)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
