"""Training: the engine loop, one fold's run (with a distilled student's teacher), sampling, augmentation, multi-GPU.

The batches, runtime and test-time views it shares with prediction are `mlic.loop`'s.
"""
