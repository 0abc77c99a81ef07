"""Few-shot files: one JSON record per finished episode and backbone, written atomically, and results.json.

`<output_dir>/episodes/<backbone>/episode{k:04d}.json` holds the episode's accuracy and what it was computed
from (`fingerprint`: the episode settings, the seed, the backbone weights and the upstream checkpoint used).
A record appears only when whole (written to a temporary name and renamed), so a killed run never leaves a
broken one; `--resume` reuses the records whose fingerprint matches and recomputes the others.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# The few-shot settings that decide which episodes are drawn and how they are fitted: part of every record's
# fingerprint, and what makes two backbones' summaries comparable.
EPISODE_SETTINGS = ("datasets", "continual_classes_per_dataset", "few_shot_classes_per_dataset", "few_shot_dataset_idx",
                    "few_class_idx", "num_ways", "num_shots", "num_queries", "num_episodes", "num_fs_epochs", "fs_lr")


def episode_settings(fewshot) -> dict:
    """The EPISODE_SETTINGS of a FewShotConfig, by name."""
    return {name: getattr(fewshot, name) for name in EPISODE_SETTINGS}


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def backbone_dir(output_dir: str | Path, backbone: str) -> Path:
    return Path(output_dir) / "episodes" / backbone


def record_path(output_dir: str | Path, backbone: str, episode: int) -> Path:
    return backbone_dir(output_dir, backbone) / f"episode{episode:04d}.json"


def write_json_atomic(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)
    return path


def load_record(output_dir: str | Path, backbone: str, episode: int, expected: str) -> dict | None:
    """The episode's record if it exists and was computed from the same inputs (`expected` fingerprint)."""
    path = record_path(output_dir, backbone, episode)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("fingerprint") == expected else None


def load_summaries(output_dir: str | Path) -> dict[str, dict]:
    """`summary.json` of every backbone evaluated in `output_dir`."""
    root = Path(output_dir) / "episodes"
    found = sorted(root.glob("*/summary.json")) if root.is_dir() else []
    return {path.parent.name: json.loads(path.read_text()) for path in found}
