"""ONNX export of a trained model: its folds, the input normalisation, the test-time views and the sigmoid in one graph.

The exported graph takes what an image loader gives, `image`: uint8 (N, S, S, 3) RGB at `prepare.image_size`
(plus `hog`: float32 (N, D) raw HOG vectors of `mlic.hog.hog_of_views` for the HOG models), and returns `probs`:
float32 (N, C), the mean over folds and TTA views. The batch size is dynamic. The classes, image size and the
run's config ride along in the ONNX metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from mlic.augment import tta_views
from mlic.inference import FoldModel
from mlic.io import atomic_path
from mlic.training import forward


class ExportedModel(nn.Module):
    """Folds of one model behind the pipeline's input normalisation and TTA: uint8 NHWC images -> probabilities.

    The fold networks are moved to CPU float32 in place (exporting needs them there).
    """

    def __init__(self, folds: Sequence[FoldModel]):
        super().__init__()
        first = folds[0]
        self.nets = nn.ModuleList(fm.net.float().to("cpu", memory_format=torch.contiguous_format) for fm in folds)
        self.inputs = first.inputs
        self.image_size = first.cfg.prepare.image_size
        self.views = tta_views(first.cfg.train.tta) if "image" in self.inputs else tta_views("none")
        rt = first.runtime
        self.register_buffer("mean", rt.mean.detach().float().cpu())
        self.register_buffer("std", rt.std.detach().float().cpu())
        if rt.hog_mean is not None:
            self.register_buffer("hog_mean", rt.hog_mean.detach().float().cpu())
            self.register_buffer("hog_std", rt.hog_std.detach().float().cpu())

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Inputs in `self.inputs` order -> (N, C) probabilities averaged over folds and views."""
        x = dict(zip(self.inputs, tensors, strict=True))
        if "image" in x:
            image = x["image"].permute(0, 3, 1, 2).float() / 255.0
            x["image"] = (image - self.mean) / self.std
        if "hog" in x:
            x["hog"] = (x["hog"].float() - self.hog_mean) / self.hog_std
        total = 0.0
        for net in self.nets:
            for view in self.views:
                viewed = {**x, "image": view(x["image"])} if "image" in x else x
                total = total + torch.sigmoid(forward(net, viewed, self.inputs))
        return total / (len(self.nets) * len(self.views))


def example_inputs(model: ExportedModel, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random inputs of the exported graph's shapes and dtypes (uint8 images, float32 HOG)."""
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    examples = {"image": torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)}
    if "hog" in model.inputs:
        examples["hog"] = torch.randn(batch, model.hog_mean.numel(), generator=generator)
    return tuple(examples[name] for name in model.inputs)


def export_onnx(folds: Sequence[FoldModel], path: str | Path, opset: int | None = None) -> ExportedModel:
    """Export the folds of one model to an ONNX file (written atomically), with its metadata; returns the module.

    Args:
        folds: Fold models of one model key (one fold, or several averaged).
        path: The .onnx file to write.
        opset: ONNX opset version (default: the exporter's).
    """
    model = ExportedModel(folds).eval()
    first = folds[0]
    examples = example_inputs(model)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        examples,
        input_names=list(model.inputs),
        output_names=["probs"],
        dynamic_shapes=(tuple({0: batch} for _ in examples),),  # one entry: forward's *tensors
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    metadata = {
        "classes": json.dumps(first.classes),
        "model": first.model,
        "folds": json.dumps([fm.fold for fm in folds]),
        "image_size": str(model.image_size),
        "inputs": json.dumps(list(model.inputs)),
        "tta": first.cfg.train.tta,
        "mlic_config": json.dumps(first.cfg.to_dict()),
    }
    onnx_model = program.model_proto
    for key, value in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(onnx_model, tmp)
    return model
