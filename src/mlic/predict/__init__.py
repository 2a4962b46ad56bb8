"""Prediction: the ensemble blend, threshold fitting, set decoding, `mlic predict` and ONNX export.

The views and loops it shares with training are `mlic.loop`'s; applying thresholds is `mlic.thresholds`.
"""
