"""Prediction: test-time views, the ensemble blend, thresholds, `mlic predict` and ONNX export."""
