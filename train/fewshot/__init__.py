"""The few-shot LoRA study (`train/fsl.py`): upstream continual LoRA, then few-shot episodes on held-out classes."""
