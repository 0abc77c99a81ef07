"""Tests, grouped by the package they test: train/, export/, serve/, benchmarks/, deploy/; system/ holds the
cross-cutting ones (package boundaries, the docs' commands, train → export → serve end to end). Shared helpers
live in tests/helpers/, fixtures in conftest.py."""
