"""Training library: continual methods on pretrained ViTs, run through DeepSpeed."""
