"""Batched beam search over label sequences, `cnn_rnn`'s decoding: all images and beams in one tensor, no loop.

A decoder emits one label per step from C labels plus END (index C). `beam_search` keeps the B most probable paths of
each image, scored by the sum of their steps' log-probabilities:
- a label already on a path is masked for that path, so no path repeats a label;
- a path ends when it emits END; a finished path keeps its slot and its score (it competes with the open ones);
- decoding stops when, for every image, every open path is less probable than every finished one (log-probabilities
  only fall, so no open path can overtake a finished one any more), or at `max_steps`, whose last step allows only
  END (so no path holds more than `max_steps - 1` labels).
B = 1 is greedy decoding. The step function is the decoder's: previous tokens and state in, log-probabilities and the
new state out, for N * B rows (image-major: rows i * B .. i * B + B - 1 are image i's beams).

While exporting (torch.export / ONNX) the early stop is skipped: the loop runs all `max_steps` steps, which gives the
same best path, since finished paths only carry over. On a GPU the stop flag is read without waiting for the device
(`DoneFlags`): the search may run a step or two past the stop, and then returns the paths of the step that stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

State = tuple[torch.Tensor, ...]
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]


@dataclass(frozen=True)
class BestPaths:
    """The best path of each image: its tokens and their log-probabilities, step by step.

    Attributes:
        tokens: (N, T) long, the label emitted at each step; END (= C) at its end and after it.
        log_probs: (N, T) float32, the log-probability of each step's token; 0 after the END step.
    """

    tokens: torch.Tensor
    log_probs: torch.Tensor

    def score(self) -> torch.Tensor:
        """(N,) the path's sum of log-probabilities (END's included)."""
        return self.log_probs.sum(dim=1)

    def label_probs(self, num_classes: int) -> torch.Tensor:
        """(N, C) each label's step probability on the path, 0 for the labels it does not hold."""
        probs = torch.where(self.tokens < num_classes, self.log_probs.exp(), torch.zeros_like(self.log_probs))
        out = torch.zeros(self.tokens.shape[0], num_classes + 1, dtype=probs.dtype, device=probs.device)
        return out.scatter_add(1, self.tokens, probs)[:, :num_classes]  # labels are unique on a path; END dropped

    def path_floor(self, num_classes: int) -> torch.Tensor:
        """(N, C) for each label on the path, the lowest path probability P_s = exp(mean log p_1..s) over s <= its step.

        The iMet study's stop rule ends the path at the first step whose P falls below tau: a label survives exactly
        when its floor is at least tau. Labels not on the path get 0.
        """
        steps = torch.arange(1, self.tokens.shape[1] + 1, device=self.tokens.device, dtype=self.log_probs.dtype)
        running = torch.cummin((self.log_probs.cumsum(dim=1) / steps).exp(), dim=1).values
        floor = torch.where(self.tokens < num_classes, running, torch.zeros_like(running))
        out = torch.zeros(self.tokens.shape[0], num_classes + 1, dtype=floor.dtype, device=floor.device)
        return out.scatter_add(1, self.tokens, floor)[:, :num_classes]

    def label_sets(self, num_classes: int) -> torch.Tensor:
        """(N, C) bool: the labels on the path, before its END."""
        out = torch.zeros(self.tokens.shape[0], num_classes + 1, dtype=torch.bool, device=self.tokens.device)
        return out.scatter(1, self.tokens, True)[:, :num_classes]


def beam_search(step: StepFn, state: State, num_classes: int, beam: int, max_steps: int, start: int) -> BestPaths:
    """The most probable label path of each image, decoded B paths at a time (see the module's docstring).

    Args:
        step: The decoder step `(tokens (N*B,), state) -> (log-probs (N*B, C+1), state)`; log-probs need not be
            normalised over the unmasked tokens (the decoder's log-softmax is taken as is).
        state: The initial state, tensors with N rows each (repeated for the beams here).
        num_classes: C; END is token C.
        beam: B, the paths kept per image (1: greedy).
        max_steps: Most steps a path takes, END included.
        start: The token fed at the first step (START).

    Returns:
        The best path of each image.
    """
    n, width, tokens_per_step = state[0].shape[0], beam, num_classes + 1
    device = state[0].device
    state = tuple(s.repeat_interleave(width, dim=0) for s in state)
    scores = torch.full((n, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live path to start from; the others fill up at the first step
    emitted = torch.zeros(n, width, num_classes, dtype=torch.bool, device=device)
    finished = torch.zeros(n, width, dtype=torch.bool, device=device)
    tokens = torch.full((n, width, max_steps), num_classes, dtype=torch.long, device=device)
    log_probs = torch.zeros(n, width, max_steps, device=device)
    carry = torch.full((tokens_per_step,), float("-inf"), device=device)
    carry[num_classes] = 0.0  # a finished path's only continuation: END again, at no cost
    previous = torch.full((n * width,), start, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)[:, None] * width
    flags, kept = DoneFlags(device), {}
    for t in range(max_steps):
        step_log_probs, state = step(previous, state)
        step_log_probs = step_log_probs.float().view(n, width, tokens_per_step)
        labels = step_log_probs[..., :num_classes].masked_fill(emitted, float("-inf"))
        if t == max_steps - 1:
            labels = torch.full_like(labels, float("-inf"))  # the last step may only end the path
        step_log_probs = torch.cat([labels, step_log_probs[..., num_classes:]], dim=-1)
        step_log_probs = torch.where(finished[..., None], carry, step_log_probs)
        scores, picked = (scores[..., None] + step_log_probs).view(n, -1).topk(width, dim=1)
        source, token = picked // tokens_per_step, picked % tokens_per_step
        tokens = tokens.gather(1, source[..., None].expand_as(tokens))
        tokens[:, :, t] = token
        log_probs = log_probs.gather(1, source[..., None].expand_as(log_probs))
        log_probs[:, :, t] = step_log_probs.view(n, -1).gather(1, picked)
        emitted = emitted.gather(1, source[..., None].expand_as(emitted))
        emitted = emitted | torch.nn.functional.one_hot(token, tokens_per_step)[..., :num_classes].bool()
        finished = finished.gather(1, source) | (token == num_classes)
        state = tuple(s[(rows + source).reshape(-1)] for s in state)
        previous = token.reshape(-1)
        if torch.compiler.is_exporting():
            continue
        kept[t] = (scores, tokens, log_probs)  # each step's are new tensors, so keeping them copies nothing
        done = flags.push(t, search_done(scores, finished).all())
        if done is not None:
            scores, tokens, log_probs = kept[done]
            break
        kept = {step: kept[step] for step in flags.pending_steps()}
    best = scores.argmax(dim=1)
    pick = best[:, None, None].expand(n, 1, max_steps)
    return BestPaths(tokens.gather(1, pick)[:, 0], log_probs.gather(1, pick)[:, 0])


def search_done(scores: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
    """(N,) whether each image's search may stop.

    It may when it has a finished path and every open path is less probable than every finished one. Dead slots
    (score -inf: fewer candidates than beams) count as neither.
    """
    alive = torch.isfinite(scores)
    inf = torch.full_like(scores, float("inf"))
    lowest_finished = torch.where(finished & alive, scores, inf).amin(dim=1)
    highest_open = torch.where(~finished & alive, scores, -inf).amax(dim=1)
    return (finished & alive).any(dim=1) & (highest_open < lowest_finished)


@dataclass
class DoneFlags:
    """Per-step stop flags read without making the host wait for the device.

    On the CPU a flag is read at once. On CUDA each is copied to pinned memory behind an event, and read once the
    event has passed, a step or more later; the search then returns the results of the flagged step, which are what
    an immediate read would have returned.
    """

    device: torch.device
    pending: deque = field(default_factory=deque)  # (step, pinned bool, event), oldest first

    def push(self, step: int, flag: torch.Tensor) -> int | None:
        """Record step `step`'s flag; the earliest step known to be done, if any, else None."""
        if self.device.type != "cuda":
            return step if bool(flag) else None
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((step, host, event))
        while self.pending and self.pending[0][2].query():
            done_step, done, _ = self.pending.popleft()
            if bool(done):
                return done_step
        return None

    def pending_steps(self) -> list[int]:
        """The steps whose flags are not read yet (their results must be kept)."""
        return [step for step, _, _ in self.pending]
