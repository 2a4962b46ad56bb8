"""mlic: a staged DVC pipeline for multi-label image classification, from raw Kaggle data to submissions."""

__version__ = "0.1.0"
