"""Every training command the README and docs/ show parses: run as `--dry-run` (flags, presets, overrides)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.runs import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ENTRY = re.compile(r"^(?:deepspeed|torchrun|python)\b.*?\btrain/(main|fsl)\.py\s+(.*)$")


def shell_commands(page: Path) -> list[str]:
    """Commands of the page's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()
                     and not line.lstrip().startswith("#")]
    return commands


def training_commands() -> list[tuple[str, str, str]]:
    """(page, entry point, arguments) of every `train/main.py` / `train/fsl.py` command with concrete values."""
    found = []
    for page in PAGES:
        for command in shell_commands(page):
            match = ENTRY.match(command)
            if match and "..." not in match[2] and "<" not in match[2]:
                found.append((page.name, match[1], match[2]))
    return found


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    """A minimal ImageFolder tree for the commands that name ROOT."""
    root = tmp_path_factory.mktemp("ROOT")
    for task, classes in (("1_a", ("cat", "dog")), ("2_b", ("owl", "fox"))):
        for name in classes:
            (root / task / name).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (12, 10), (40 * i, 80, 120)).save(root / task / name / f"{i}.png")
    return root


def test_the_docs_show_training_commands():
    assert len(training_commands()) >= 6


@pytest.mark.parametrize("page, entry, arguments", training_commands())
def test_a_documented_command_parses(page, entry, arguments, folder_root, tmp_path):
    from train.cli import parse_few_shot_invocation, parse_invocation

    argv = [a.replace("ROOT", str(folder_root)) if a == "ROOT" else a for a in shlex.split(arguments)]
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    parse = parse_invocation if entry == "main" else parse_few_shot_invocation
    invocation = parse([*argv, "--dry-run"])
    assert invocation.dry_run and invocation.config is not None
