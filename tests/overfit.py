"""Checks shared by the head tests: bf16 training stays finite; can a model memorise 8 images of coloured squares?"""

from __future__ import annotations

import torch
from conftest import one_torch_thread

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # one label each
OVERFIT_LABELS = len(COLOURS)  # the classes of the model to overfit


def squares_batch(n: int = 8, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """`n` grey images, each with a square of the colour of each of its labels (1-3 of 4) at a random place."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), 0.5)
    target = torch.zeros(n, len(COLOURS))
    side = size // 4
    for i in range(n):
        labels = torch.randperm(len(COLOURS), generator=gen)[: 1 + i % 3]
        target[i, labels] = 1.0
        for label in labels.tolist():
            y, x = torch.randint(0, size - side, (2,), generator=gen).tolist()
            images[i, :, y : y + side, x : x + side] = COLOURS[label][:, None, None]
    return {"image": (images - 0.5) / 0.25, "target": target}


class FixedFeatures(torch.nn.Module):
    """Stands in for a frozen features_only backbone on one fixed batch: its feature maps, computed once."""

    def __init__(self, backbone: torch.nn.Module, images: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            self.features = [f.detach() for f in backbone(images)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.features


def overfit_losses(model: torch.nn.Module, task, steps: int = 50, lr: float = 1e-3) -> tuple[float, float]:
    """The task's training loss on the 8 images at the first of `steps` Adam steps and after the last.

    Only the head trains, on the maps of the backbone at its random init computed once: the backbone's forward and
    backward would make this 10x slower on a shared CPU, and the shape tests check that gradients reach the backbone.
    """
    batch = squares_batch()
    task.setup(batch["target"].numpy())
    model.train()
    model.backbone = FixedFeatures(model.backbone, batch["image"])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with one_torch_thread():  # the head's ops are tiny: thread hand-offs cost more than they save on a busy CPU
        for _ in range(steps):
            loss = task.training_step(model, batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            final = task.training_step(model, batch).loss.item()
    return losses[0], final


def assert_bf16_training_finite(model: torch.nn.Module, task, num_classes: int, size: int = 64) -> None:
    """One training step of a B=2 batch under CPU bf16 autocast gives a finite loss and finite gradients."""
    target = (torch.rand(2, num_classes) > 0.5).float()
    task.setup(target.numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.training_step(model.train(), {"image": torch.randn(2, 3, size, size), "target": target}).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
