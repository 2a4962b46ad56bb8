"""The loop pieces training and prediction share: batches, the runtime, test-time views, a trained fold reloaded.

`mlic.train` and `mlic.predict` both build on these and never import each other: validation, OOF and test
predictions, `mlic predict` and ONNX export all run `mlic.loop.tta.predict_loader` over `mlic.loop.batches` samples.
"""
