"""Training: the engine loop, one fold's run, batches and sampling, augmentation, runtime, multi-GPU."""
