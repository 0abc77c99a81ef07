"""Tests of train/: configs and presets, data, backbones, methods, the task loop, DeepSpeed runs, few-shot."""
