"""ONNX export of a trained model: its folds, the input normalisation, the TTA views and its task's scores, one graph.

The exported graph takes each source the model reads, in the layout an application has at hand (`mlic.sources`:
`image` as uint8 (N, S, S, 3) RGB at `prepare.image_size`; `hog` as float32 (N, D) raw HOG vectors of
`mlic.features.hog.hog_of_views`), and returns `probs`: float32 (N, C), the mean over folds of `predict_views`, the
same function the pipeline predicts with. The batch size is dynamic. The classes, image size and the run's config
ride along in the ONNX metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from mlic.io import atomic_path
from mlic.loop.fold_model import FoldModel
from mlic.loop.tta import predict_views, task_views, tta_views
from mlic.sources import SOURCES, normalisers


class ExportedModel(nn.Module):
    """Folds of one model behind the pipeline's normalisation, TTA and task: raw sources -> scores.

    The fold networks are moved to CPU float32 in place (exporting needs them there).
    """

    def __init__(self, folds: Sequence[FoldModel]):
        super().__init__()
        first = folds[0]
        self.task, self.cfg = first.task, first.cfg
        self.nets = nn.ModuleList(fm.net.float().to("cpu", memory_format=torch.contiguous_format) for fm in folds)
        self.inputs = first.sources
        self.image_size = first.cfg.prepare.image_size
        self.stats = first.stats
        self.normalise = normalisers(first.stats).float().cpu()
        self.views = task_views(first.task, tta_views(first.cfg.train.tta))

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Raw sources in `self.inputs` order -> (N, C) scores averaged over folds and views."""
        x = {name: self.normalise[name](SOURCES.get(name).to_batch(t)) for name, t in zip(self.inputs, tensors,
                                                                                        strict=True)}  # fmt: skip
        total = 0.0
        for net in self.nets:
            total = total + predict_views(self.task, net, x, self.views)
        return total / len(self.nets)

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Example inputs of the exported graph's shapes and dtypes, one per source."""
        return tuple(SOURCES.get(name).example(batch, self.cfg, self.stats[name]) for name in self.inputs)


def export_onnx(folds: Sequence[FoldModel], path: str | Path, opset: int | None = None) -> ExportedModel:
    """Export the folds of one model to an ONNX file (written atomically), with its metadata; returns the module.

    Args:
        folds: Fold models of one model key (one fold, or several averaged).
        path: The .onnx file to write.
        opset: ONNX opset version (default: the exporter's).
    """
    model = ExportedModel(folds).eval()
    first = folds[0]
    examples = model.example_inputs()
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
