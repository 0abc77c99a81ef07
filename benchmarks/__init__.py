"""Demonstrations that span training, export and serving (run from the repository root: python -m demos.<name>)."""
