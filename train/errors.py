"""Errors meant for people: the entry points print the message alone and exit non-zero."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """An expected mistake (bad flag, missing folder, wrong checkpoint) with a message naming the fix."""


def exit_code_of(action: Callable[[], object]) -> int:
    """Run an entry point's work: 0 when done, 2 with the message alone when it is an expected mistake."""
    try:
        action()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
