"""What tests share besides fixtures: run helpers, synthetic bundles, in-process and subprocess servers, datasets."""
