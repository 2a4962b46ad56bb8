"""The default task: one logit per label, a multi-label loss from the registry, a sigmoid per label to predict.

Its config needs `loss` (a `mlic.tasks.losses` entry) and `loss_options` (that loss's keyword options), which every
architecture's config class has (`mlic.models.registry.ArchConfig`). A network may return its logits, or while
training a dict `{"logits": ..., "aux_logits": [...]}` (deep supervision): the auxiliary logits' mean loss is added,
and logged as its own part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mlic.tasks.base import StepOutput, Task
from mlic.tasks.losses import create_loss


def split_outputs(out: torch.Tensor | dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A network's final logits and its auxiliary logits (deep supervision returns a dict while training)."""
    if isinstance(out, dict):
        return out["logits"], list(out.get("aux_logits", []))
    return out, []


class MultiLabelTask(Task):
    """Independent labels: loss on the logits (plus deep supervision), sigmoid scores.

    Args:
        cfg: The architecture's config; its `loss` and `loss_options` pick the loss.
        sources: The batch entries the network's forward takes, in order.
    """

    def __init__(self, cfg, sources: Sequence[str] = ("image",)):
        super().__init__(cfg)
        self.sources = tuple(sources)
        self.loss_fn: nn.Module | None = None

    def setup(self, train_labels: np.ndarray) -> None:
        """Build the loss; frequency-weighted losses read the training rows' label frequencies."""
        self.loss_fn = create_loss(self.cfg.loss, train_labels.mean(axis=0), **self.cfg.loss_options)

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The loss on the final logits, plus the mean loss of any deeply supervised outputs (its own part)."""
        if self.loss_fn is None:
            raise RuntimeError("MultiLabelTask.setup(train_labels) builds the loss; call it before training")
        logits, aux = split_outputs(net(*self.inputs(batch)))
        target = batch["target"]
        loss = self.loss_fn(logits.float(), target)
        if not aux:
            return StepOutput(loss)
        aux_loss = sum(self.loss_fn(a.float(), target) for a in aux) / len(aux)
        return StepOutput(loss + aux_loss, {"main": loss.detach(), "deep_supervision": aux_loss.detach()})

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sigmoid of the final logits."""
        return torch.sigmoid(split_outputs(net(*self.inputs(batch)))[0].float())
