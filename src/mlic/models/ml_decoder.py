"""ML-Decoder (Ridnik et al., WACV 2023): a query-based classification head on a timm backbone's last feature map.

The H*W positions of the final map are tokens, projected to `decoder_dim` (then ReLU). K = min(num_queries, C) query
vectors attend to them in one transformer decoder layer without self-attention (so its cost is linear in K, and the
queries need not talk to each other), followed by a feed-forward block. A group fully-connected layer then maps each
query's output to ceil(C / K) labels, so 100 queries serve iMet's 1,103 labels. The queries are fixed random vectors
by default, as in the paper (learnable ones are an option).

The decoder layer is written on `nn.MultiheadAttention` (batch-first) rather than inside `nn.TransformerDecoder`: timm's
copy of this head does that, and fails under the installed torch (`TransformerDecoder` now reads the layer's
`self_attn`, which a layer without self-attention does not have).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone
from mlic.models.registry import ModelDims, register_arch

QUERY_SEED = 0  # fixed queries are drawn from their own generator: the same vectors whatever the global RNG state


@dataclass(frozen=True)
class MlDecoderConfig(BackboneConfig):
    """`arch: ml_decoder`."""

    decoder_dim: int = 768  # d, width of the projected tokens, the queries and the decoder
    num_queries: int = 100  # cap on K, the queries (groups): K = min(num_queries, labels)
    learnable_queries: bool = False  # the paper's queries are fixed random vectors; true trains them
    num_heads: int = 8  # attention heads of the cross-attention (must divide decoder_dim)
    ffn_dim: int = 2048  # hidden width of the decoder's feed-forward block
    decoder_dropout: float = 0.1  # dropout inside the decoder layer (attention weights, residual branches, FFN)
    loss: str = "asl"  # the paper's results are with ASL; its defaults are the paper's gamma- 4, gamma+ 0, clip 0.05

    def __post_init__(self):
        super().__post_init__()
        for key in ("decoder_dim", "num_queries", "num_heads", "ffn_dim"):
            if getattr(self, key) < 1:
                invalid(key, f"must be >= 1, got {getattr(self, key)}")
        if self.decoder_dim % self.num_heads:
            invalid(
                "decoder_dim",
                f"{self.decoder_dim} is not divisible by num_heads {self.num_heads}",
                "pick num_heads dividing decoder_dim, e.g. decoder_dim: 768 with num_heads: 8",
            )
        if not 0.0 <= self.decoder_dropout < 1.0:
            invalid("decoder_dropout", f"must be in [0, 1), got {self.decoder_dropout}")


class CrossAttentionDecoderLayer(nn.Module):
    """The official ML-Decoder layer: post-norm cross-attention then feed-forward, with no self-attention.

    Where a transformer decoder layer has self-attention, the official layer keeps that block's residual, dropout and
    LayerNorm around the identity, norm1(q + dropout(q)); it is kept here so that the layer computes the same function.

    Args:
        dim: Width of the queries and tokens.
        num_heads: Attention heads.
        ffn_dim: Hidden width of the feed-forward block.
        dropout: Dropout on the attention weights, the residual branches and the feed-forward hidden layer.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, K, d) queries attend to (N, L, d) tokens -> (N, K, d)."""
        q = self.norm1(queries + self.dropout1(queries))
        attended = self.attention(q, tokens, tokens, need_weights=False)[0]
        q = self.norm2(q + self.dropout2(attended))
        return self.norm3(q + self.dropout3(self.ffn(q)))


class GroupFullyConnected(nn.Module):
    """Each of K query outputs is mapped by its own (d, g) weight to g = ceil(C / K) logits; the first C are kept.

    Args:
        num_queries: K.
        dim: d, the width of each query's output.
        num_classes: C.
    """

    def __init__(self, num_queries: int, dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        group = math.ceil(num_classes / num_queries)
        self.weight = nn.Parameter(torch.empty(num_queries, dim, group))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.xavier_normal_(self.weight)  # the official initialisation

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(N, K, d) -> (N, C): logit k * g + j is query k's output times its weight column j, plus the bias."""
        out = torch.einsum("nkd,kdg->nkg", h, self.weight).flatten(1)
        return out[:, : self.num_classes] + self.bias


class MlDecoder(nn.Module):
    """timm features_only backbone (last stage) -> tokens -> query cross-attention decoder -> group FC -> logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: MlDecoderConfig):
        super().__init__()
        self.backbone = backbone
        dim, num_queries = cfg.decoder_dim, min(cfg.num_queries, num_classes)
        self.project = nn.Linear(backbone.feature_info.channels()[-1], dim)
        # N(0, 1) as the official nn.Embedding; a fixed set is a buffer: saved with the weights, never trained
        queries = torch.randn(num_queries, dim, generator=torch.Generator().manual_seed(QUERY_SEED))
        if cfg.learnable_queries:
            self.queries = nn.Parameter(queries)
        else:
            self.register_buffer("queries", queries)
        self.decoder = CrossAttentionDecoderLayer(dim, cfg.num_heads, cfg.ffn_dim, cfg.decoder_dropout)
        self.group_fc = GroupFullyConnected(num_queries, dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, C) logits."""
        features = self.backbone(images)[-1]
        tokens = F.relu(self.project(features.flatten(2).transpose(1, 2)))
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        return self.group_fc(self.decoder(queries, tokens))


@register_arch(
    "ml_decoder",
    MlDecoderConfig,
    # two learnable queries: labels share a query (the group FC drops its outputs beyond the label count)
    tiny={
        "backbone": "resnet10t",
        "decoder_dim": 32,
        "num_heads": 4,
        "ffn_dim": 64,
        "num_queries": 2,
        "learnable_queries": True,
    },
)
def ml_decoder(cfg: MlDecoderConfig, dims: ModelDims) -> nn.Module:
    """ML-Decoder head with min(`num_queries`, labels) queries on the last feature map of `backbone`."""
    return MlDecoder(create_backbone(cfg, out_indices=(-1,)), dims.num_classes, cfg)
