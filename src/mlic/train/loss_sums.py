"""An epoch's loss sums and its first non-finite step, kept on the device: no host sync per training step.

Reading a loss with `.item()` after every step makes the host wait for the device, so a GPU's queue drains once a
step. `LossSums` adds each step's loss and parts on the device instead, in float64 as the host did (the means are
the same bytes), and records the first step whose loss is not finite. The engine reads it with one copy every
`train.log_every` steps and at the end of the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossSums:
    """Sums of `train_loss` and `train_loss_<part>` times batch size, the samples counted, and the first bad step.

    Args:
        device: Where the sums live (the training device).
    """

    device: torch.device
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    first_bad_step: torch.Tensor | None = None  # int64 scalar: the first step (1-based) with a non-finite loss, or 0

    def add(self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor | float], size: int) -> None:
        """Add one step's loss (a scalar tensor) and parts for a batch of `size` samples; nothing is read back."""
        loss = loss.detach()
        bad = ~torch.isfinite(loss)
        if self.first_bad_step is None:
            self.first_bad_step = torch.zeros((), dtype=torch.int64, device=self.device)
        self.first_bad_step = torch.where(bad & (self.first_bad_step == 0), step, self.first_bad_step)
        self._add("train_loss", loss, size)
        for part, value in parts.items():
            self._add(f"train_loss_{part}", value, size)
        self.count += size

    def _add(self, key: str, value: torch.Tensor | float, size: int) -> None:
        term = torch.as_tensor(value, device=self.device).detach().to(torch.float64) * size
        self.sums[key] = self.sums[key] + term if key in self.sums else term

    def read(self) -> tuple[dict[str, float], int]:
        """The means so far (key -> mean over the samples counted) and the first bad step (0: none), in one copy."""
        if self.first_bad_step is None:
            return {}, 0
        keys = list(self.sums)
        values = torch.stack([self.first_bad_step.to(torch.float64), *(self.sums[k] for k in keys)]).tolist()
        return {key: total / max(self.count, 1) for key, total in zip(keys, values[1:], strict=True)}, int(values[0])
