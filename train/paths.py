"""Where the project keeps caches (embedded backbone weights, rendered data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HIDECL_CACHE`, else `~/.cache/hide-cl`."""
    root = Path(os.environ.get("HIDECL_CACHE", Path.home() / ".cache" / "hide-cl"))
    root.mkdir(parents=True, exist_ok=True)
    return root
