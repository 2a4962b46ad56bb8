"""Order-free targets for a label-sequence decoder (Chen et al., AAAI 2018): the model's own order, step by step.

A multi-label image has a set of labels, not a sequence. Rather than impose an order (by frequency, say), each step's
target is the label of the image's remaining pool that the decoder itself finds most probable; it leaves the pool, and
once the pool is empty the target is END. So a decoder trained this way learns whichever order suits it, and every
true label is the target exactly once, END coming right after the last one (step |Y| + 1).
"""

from __future__ import annotations

import torch


def pick_targets(log_probs: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Each row's target at this step: its pool's label of highest probability, or END (= C) when its pool is empty.

    Args:
        log_probs: (N, C + 1) the step's scores over the C labels and END (only their order among labels matters).
        pool: (N, C) bool, the true labels not yet used as targets.

    Returns:
        (N,) long targets in [0, C].
    """
    num_classes = pool.shape[1]
    in_pool = log_probs[:, :num_classes].float().masked_fill(~pool, float("-inf"))
    best = in_pool.argmax(dim=1)
    return torch.where(pool.any(dim=1), best, torch.full_like(best, num_classes))


def leave_pool(pool: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The pool without this step's targets (END takes nothing out)."""
    num_classes = pool.shape[1]
    taken = torch.nn.functional.one_hot(targets, num_classes + 1)[:, :num_classes].bool()
    return pool & ~taken
