"""Driving DVC experiments of the pipeline from outside it: `mlic tune` (tune.py). No stage imports this package."""
