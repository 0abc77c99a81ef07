"""Errors meant for people: the entry points print the message alone and exit non-zero."""


class UserError(Exception):
    """An expected mistake (bad flag, missing folder, wrong checkpoint) with a message naming the fix."""
