"""The house rules that imports can break: serve/ runs without torch or train/ (a small, fast server image)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.runs import REPO

SERVE_MODULES = sorted(p.stem for p in (REPO / "serve").glob("*.py") if p.stem != "__init__")


def test_no_serve_module_imports_torch_or_train():
    script = ("import importlib, json, sys\n"
              f"for name in {SERVE_MODULES!r}:\n"
              "    importlib.import_module('serve.' + name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'train', 'timm', "
              "'deepspeed', 'torchvision'))))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [], f"serve/ pulled in {json.loads(run.stdout)[:10]}"
    assert len(SERVE_MODULES) > 15  # every module, not an empty glob


def _imports_of(package: str) -> set[str]:
    """Top-level packages named by the import statements of every module of `package` (static, cheap)."""
    import ast

    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_the_flow_goes_one_way():
    """train → export → serve: train imports neither export nor serve; no product package imports benchmarks."""
    assert not _imports_of("train") & {"export", "serve", "benchmarks"}
    assert not _imports_of("export") & {"serve", "benchmarks"}
    assert not _imports_of("serve") & {"train", "torch", "benchmarks"}
    assert not _imports_of("contract") & {"train", "export", "serve", "benchmarks", "torch"}


def test_export_reaches_train_only_through_its_public_api():
    """export/ uses `from train import NAME` (train/__init__'s API: load_trained & co.), never train's modules."""
    import ast

    reaching_in = []
    for path in (REPO / "export").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                       else [])
            reaching_in += [f"{path.name}: {m}" for m in modules if m.startswith("train.")]
    assert reaching_in == []


def test_the_serve_image_holds_every_module_the_server_imports():
    """deploy/Containerfile.serve copies export/ file by file: each export module serve/ imports must be there."""
    import re

    script = ("import importlib, json, sys\n"
              f"for name in {SERVE_MODULES!r}:\n"
              "    importlib.import_module('serve.' + name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('export.'))))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    needed = {f"export/{m.removeprefix('export.').replace('.', '/')}.py" for m in json.loads(run.stdout)}
    copy = re.search(r"^COPY (export/.*) export/$", (REPO / "deploy" / "Containerfile.serve").read_text(), re.M)
    copied = set(copy.group(1).split())
    assert needed and needed <= copied, f"Containerfile.serve lacks {sorted(needed - copied)}"
