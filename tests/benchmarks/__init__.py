"""Tests of benchmarks/: the bench report and harness."""
