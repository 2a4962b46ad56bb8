"""The iMet study's attention CNN-RNN: labels decoded one at a time, trained order-free, beam-searched at test time.

A timm CNN gives the final feature map V, N positions of D channels. A preliminary prediction v_prob = sigmoid(fc(GAP
V)), trained with the entry's loss (BCE by default), starts the decoder: h0 = tanh(W_h v_prob), c0 = tanh(W_c v_prob).
At each step an LSTM cell (hidden 512) reads [E(previous label); z_t], where z_t is V under additive attention
(Show-Attend-Tell: e_ti = w . tanh(W_v v_i + W_h h_{t-1}), alpha_t = softmax(e_t), z_t = sum_i alpha_ti v_i, optionally
gated by sigmoid(f_beta(h_{t-1}))), and outputs p_t, a softmax over the C labels and END. E embeds the labels, END and
START. Labels already emitted are masked out of p_t, in training and in decoding alike, so no label repeats.

Training (`CnnRnnTask`) is order-free (`mlic.tasks.order_free`): each step's target is the remaining true label the
model finds most probable, END once none remains; the loss is rnn_weight * sum_t -log p_t[target] (mean over images)
plus prelim_weight * loss(v_prob). The next input is the target, or with `feed: argmax` the model's own choice (Yazici
et al., CVPR 2020). Prediction is batched beam search (`mlic.models.beam_search`); the scores everything downstream
reads are, per label, the `score_rule` of its step probability on the best path and v_prob (`max` by default). The
decoded label sets themselves come from `CnnRnnTask.decode_step` (see `mlic.predict.decoding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone, feature_channels, feature_map
from mlic.models.beam_search import BestPaths, beam_search
from mlic.models.registry import ModelDims, register_arch
from mlic.registry import Registry
from mlic.tasks.base import StepOutput
from mlic.tasks.multilabel import MultiLabelTask
from mlic.tasks.order_free import leave_pool, pick_targets

ScoreRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SCORE_RULES: Registry[ScoreRule] = Registry("score rule", "models.<entry>.score_rule")
SCORE_RULES.register("max")(torch.maximum)  # a label scores high if either the beam's path or v_prob says so
SCORE_RULES.register("beam")(lambda path, prelim: path)
SCORE_RULES.register("prelim")(lambda path, prelim: prelim)
FEEDS = ("target", "argmax")  # the decoder's next input while training


@dataclass(frozen=True)
class CnnRnnConfig(BackboneConfig):
    """`arch: cnn_rnn`."""

    backbone: str = "resnet50"
    embed_dim: int = 256  # E, the embedding of the previous label (C labels, END, START)
    hidden_size: int = 512  # the LSTM cell's
    attention_dim: int = 512  # of the additive attention's W_v v_i + W_h h
    gate: bool = True  # gate z_t by sigmoid(f_beta(h_{t-1})), as Show-Attend-Tell
    decoder_dropout: float = 0.2  # on h before the output layer
    feed: str = "target"  # the next input while training: the step's target, or `argmax`, the model's own choice
    rnn_weight: float = 1.0  # weight of the sequence loss sum_t -log p_t[target]
    prelim_weight: float = 1.0  # weight of the preliminary prediction's loss (the entry's `loss`)
    beam_size: int = 3  # paths kept per image while decoding; 1 is greedy
    score_rule: str = "max"  # scores per label from its path probability and v_prob: max, beam or prelim

    def __post_init__(self):
        super().__post_init__()
        for key in ("embed_dim", "hidden_size", "attention_dim", "beam_size"):
            if getattr(self, key) < 1:
                invalid(key, f"must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.decoder_dropout < 1.0:  # check_drop_rate would name the backbone's `drop_rate` key
            invalid("decoder_dropout", f"must be in [0, 1), got {self.decoder_dropout}")
        if self.feed not in FEEDS:
            invalid("feed", f"unknown feed {self.feed!r}", f"one of: {', '.join(FEEDS)}")
        if self.score_rule not in SCORE_RULES:
            invalid("score_rule", f"unknown rule {self.score_rule!r}", f"one of: {', '.join(SCORE_RULES.names())}")
        for key in ("rnn_weight", "prelim_weight"):
            if getattr(self, key) < 0:
                invalid(key, f"must be >= 0, got {getattr(self, key)}")
        if self.rnn_weight + self.prelim_weight == 0:
            invalid("rnn_weight", "rnn_weight and prelim_weight cannot both be 0")


def masked_log_softmax(logits: torch.Tensor, emitted: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the C labels and END (float32), with the labels already emitted masked out (-inf)."""
    num_classes = emitted.shape[1]
    labels = logits[:, :num_classes].float().masked_fill(emitted, float("-inf"))
    return torch.log_softmax(torch.cat([labels, logits[:, num_classes:].float()], dim=1), dim=1)


def mark(emitted: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`emitted` with `tokens` added (END and START, indices C and C + 1, add nothing)."""
    num_classes = emitted.shape[1]
    return emitted | F.one_hot(tokens, num_classes + 2)[:, :num_classes].bool()


class CnnRnn(nn.Module):
    """timm CNN -> V; v_prob; an attention LSTM decoding labels. Submodules are named as in the module docstring.

    `max_steps` (a buffer, so checkpoints carry it) is the longest path decoded: the training set's largest label
    count + 1, set by the task while training; C + 1 before that.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: CnnRnnConfig):
        super().__init__()
        channels = feature_channels(backbone)
        self.backbone = backbone
        self.num_classes = num_classes
        self.prelim = nn.Linear(channels, num_classes)
        self.init_h = nn.Linear(num_classes, cfg.hidden_size)
        self.init_c = nn.Linear(num_classes, cfg.hidden_size)
        self.embed = nn.Embedding(num_classes + 2, cfg.embed_dim)  # labels, END = C, START = C + 1
        self.keys = nn.Linear(channels, cfg.attention_dim)  # W_v
        self.query = nn.Linear(cfg.hidden_size, cfg.attention_dim)  # W_h
        self.energy = nn.Linear(cfg.attention_dim, 1)  # w
        self.gate = nn.Linear(cfg.hidden_size, channels) if cfg.gate else None  # f_beta
        self.lstm = nn.LSTMCell(cfg.embed_dim + channels, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.decoder_dropout)
        self.out = nn.Linear(cfg.hidden_size, num_classes + 1)
        self.beam_size, self.feed = cfg.beam_size, cfg.feed
        self.register_buffer("max_steps", torch.tensor(num_classes + 1))
        self.export_steps = num_classes + 1  # max_steps as a Python int, for tracing (refreshed on loading)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh_export_steps())

    @property
    def end(self) -> int:
        """The END token."""
        return self.num_classes

    @property
    def start(self) -> int:
        """The START token."""
        return self.num_classes + 1

    def refresh_export_steps(self) -> None:
        """Copy `max_steps` to the Python int that traced graphs unroll to (a traced loop cannot read a tensor)."""
        self.export_steps = int(self.max_steps)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V as (N, P, D) positions, their attention keys W_v V (N, P, A), and v_prob's logits (N, C)."""
        fmap = feature_map(self.backbone, images)
        positions = fmap.flatten(2).transpose(1, 2)
        return positions, self.keys(positions), self.prelim(fmap.mean(dim=(2, 3)))

    def initial_state(self, prelim_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h0, c0 from v_prob."""
        v_prob = torch.sigmoid(prelim_logits)
        return torch.tanh(self.init_h(v_prob)), torch.tanh(self.init_c(v_prob))

    def step(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder step: previous tokens and state of N * B rows -> logits over labels and END, new state.

        `positions` and `keys` hold each of the N images once; the rows of `tokens`, `h` and `c` are its B beams, image
        by image (B = 1 in training). The beams share their image's maps through broadcasting rather than copies.
        """
        n = positions.shape[0]
        query = self.query(h).view(n, -1, 1, keys.shape[-1])  # (N, B, 1, A)
        energy = self.energy(torch.tanh(keys[:, None] + query)).squeeze(-1)  # (N, B, P)
        alpha = torch.softmax(energy.float(), dim=-1).to(positions.dtype)
        context = torch.bmm(alpha, positions).reshape(h.shape[0], -1)  # (N, B, D) -> (N * B, D)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context
        h, c = self.lstm(torch.cat([self.embed(tokens), context.to(h.dtype)], dim=1), (h, c))
        return self.out(self.dropout(h)), h, c

    def order_free(self, images: torch.Tensor, target: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
        """The training unroll: v_prob's logits, each step's log p (N, T, C + 1) and order-free targets (N, T).

        T is `steps`, the training set's largest label count + 1 (from the host, so that no batch waits for the
        device to count its own); a row's steps after its END are padding (see `CnnRnnTask`).
        """
        positions, keys, prelim = self.encode(images)
        h, c = self.initial_state(prelim)
        pool = target > 0.5
        emitted = torch.zeros_like(pool)
        tokens = torch.full((images.shape[0],), self.start, dtype=torch.long, device=images.device)
        step_log_probs, targets = [], []
        for _ in range(steps):
            logits, h, c = self.step(tokens, h, c, positions, keys)
            log_probs = masked_log_softmax(logits, emitted)
            chosen = pick_targets(log_probs.detach(), pool)
            pool = leave_pool(pool, chosen)
            tokens = chosen if self.feed == "target" else log_probs.detach().argmax(dim=1)
            emitted = mark(emitted, tokens)
            step_log_probs.append(log_probs)
            targets.append(chosen)
        return {"prelim": prelim, "log_probs": torch.stack(step_log_probs, 1), "targets": torch.stack(targets, 1)}

    def decode(self, images: torch.Tensor, beam_size: int | None = None) -> tuple[torch.Tensor, BestPaths]:
        """v_prob's logits and the best path of each image by beam search (`beam_size`, default the config's)."""
        beam = beam_size or self.beam_size
        positions, keys, prelim = self.encode(images)

        def step(tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
            h, c, emitted = state
            emitted = mark(emitted, tokens)
            logits, h, c = self.step(tokens, h, c, positions, keys)
            return masked_log_softmax(logits, emitted), (h, c, emitted)

        emitted = torch.zeros(images.shape[0], self.num_classes, dtype=torch.bool, device=images.device)
        steps = self.export_steps if torch.compiler.is_exporting() else int(self.max_steps)
        paths = beam_search(step, (*self.initial_state(prelim), emitted), self.num_classes, beam, steps, self.start)
        return prelim, paths

    def forward(
        self, images: torch.Tensor, target: torch.Tensor | None = None, steps: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Training with `target`: the order-free unroll (`order_free`). Else: v_prob's logits and the best paths.

        `steps` defaults to the target's largest label count + 1, read from the device (the task passes its own).
        """
        if target is not None:
            return self.order_free(images, target, steps or int(target.sum(dim=1).max()) + 1)
        prelim, paths = self.decode(images)
        return {"prelim": prelim, "tokens": paths.tokens, "token_log_probs": paths.log_probs}


def sequence_loss(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """sum_t -log p_t[target_t] over each row's steps up to its END (step |Y| + 1), averaged over rows."""
    picked = log_probs.gather(2, targets[..., None])[..., 0]
    steps = torch.arange(targets.shape[1], device=targets.device)
    return -(picked * (steps[None] <= lengths[:, None])).sum() / targets.shape[0]


class CnnRnnTask(MultiLabelTask):
    """Order-free training and beam-search prediction of `CnnRnn`; losses logged as parts `rnn` and `prelim`."""

    max_steps: int | None = None  # the training set's largest label count + 1 (`setup`)

    def setup(self, train_labels) -> None:
        """The prelim loss, and the longest path: the training set's largest label count + 1."""
        super().setup(train_labels)
        self.max_steps = int(train_labels.sum(axis=1).max()) + 1

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """rnn_weight * sequence loss + prelim_weight * loss(v_prob); records the longest path in the network."""
        if self.loss_fn is None or self.max_steps is None:
            raise RuntimeError("CnnRnnTask.setup(train_labels) builds the loss; call it before training")
        target = batch["target"]
        out = net(*self.inputs(batch), target, self.max_steps)
        module = getattr(net, "module", net)  # DDP wraps it
        module.max_steps.fill_(self.max_steps)  # no host sync: checkpoints and the EMA copy carry it from here
        module.export_steps = self.max_steps
        rnn = sequence_loss(out["log_probs"], out["targets"], target.sum(dim=1).long())
        prelim = self.loss_fn(out["prelim"].float(), target)
        loss = self.cfg.rnn_weight * rnn + self.cfg.prelim_weight * prelim
        return StepOutput(loss, {"rnn": (self.cfg.rnn_weight * rnn).detach(),
                                 "prelim": (self.cfg.prelim_weight * prelim).detach()})  # fmt: skip

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per label, `score_rule` of its step probability on the best path and v_prob (max by default)."""
        out = net(*self.inputs(batch))
        paths = BestPaths(out["tokens"], out["token_log_probs"])
        prelim = torch.sigmoid(out["prelim"].float())
        return SCORE_RULES.get(self.cfg.score_rule)(paths.label_probs(prelim.shape[1]), prelim)

    def decode_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What decoded sets are made of, (N, C) each: `label_probs`, `path_floor` (best path), `decoded` (bool)."""
        out = net(*self.inputs(batch))
        paths = BestPaths(out["tokens"], out["token_log_probs"])
        num_classes = out["prelim"].shape[1]
        return {"label_probs": paths.label_probs(num_classes), "path_floor": paths.path_floor(num_classes),
                "decoded": paths.label_sets(num_classes)}  # fmt: skip


@register_arch(
    "cnn_rnn",
    CnnRnnConfig,
    CnnRnnTask,
    tiny={"backbone": "resnet10t", "embed_dim": 8, "hidden_size": 16, "attention_dim": 8, "beam_size": 2},
)
def cnn_rnn(cfg: CnnRnnConfig, dims: ModelDims) -> nn.Module:
    """The attention CNN-RNN on `backbone`'s final feature map."""
    return CnnRnn(create_backbone(cfg), dims.num_classes, cfg)
