"""Imported first by an entry point run as a script (`deepspeed train/main.py ...`, as DeepSpeed's launcher and the
reference's commands start it): Python then puts the script's own folder first on sys.path, where its modules
(config, data, peft, report, ...) would shadow installed packages of the same names and the repository's
packages would not import without an install. This makes the script import as `python -m` would: the
repository root first, the script's folder gone. Imported any other way, it changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

_REPOSITORY = Path(__file__).resolve().parent.parent
_script = getattr(sys.modules["__main__"], "__file__", None)
_folder = Path(_script).resolve().parent if _script else None
if _folder is not None and _folder.parent == _REPOSITORY:
    sys.path[:] = [str(_REPOSITORY)] + [p for p in sys.path if Path(p or ".").resolve() != _folder]
