"""The blocks the adapter heads are built from.

    FeatureMix   [z_1 .. z_L], each (B, S, D)  ->  f = sum_l softmax(w)_l z_l   (B, S, D); w (L,) starts at ones
    MLP          LN -> Linear(d, d) -> GELU -> Dropout -> Linear(d, out)            the published `MLPHead`
    FFN          x + W2 GELU(W1 LN(x))                                              the published pre-LN `FFNBlock`
    Attention    multi-head attention with an additive bias (B, 1 or H, Q, N); its parameters are shaped as
                 torch.nn.MultiheadAttention's (in_proj 3d x d with bias, out_proj d x d with bias)
    key_bias     the additive bias that hides padded keys

The mix reads the per-block residual-branch outputs of the frozen backbone (`Backbone.features`), as the published
heads do with their `weighted_avg_weights`: softmax of a learned L-vector initialized to ones, so the mix starts as
the plain mean. It accepts a list of tensors or one stacked (L, B, S, D) tensor (a feature cache).

Padded keys get a large finite negative bias rather than -inf: a query whose every key is padding (an event with no
spacepoint) then attends uniformly to the padding instead of producing NaN, and the bias underflows to an exact zero
weight everywhere else, so appending padding changes no real output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMix(nn.Module):
    """[z_1 .. z_L] (each (B, S, D), or a stacked (L, B, S, D) tensor) -> (B, S, D)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_features))  # softmax(ones) = uniform

    def forward(self, feats: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if len(feats) != len(self.weights):
            raise ValueError(f"the head mixes {len(self.weights)} feature blocks but was given {len(feats)}")
        w = torch.softmax(self.weights, dim=0).to(feats[0].dtype)
        out = w[0] * feats[0]
        for l in range(1, len(feats)):  # noqa: E741 (the layer index, as in the formula)
            out = out + w[l] * feats[l]
        return out


class MLP(nn.Module):
    """(..., d) -> (..., out): LayerNorm -> Linear(d, d) -> GELU -> Dropout -> Linear(d, out)."""

    def __init__(self, d: int, out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FFN(nn.Module):
    """(..., d) -> (..., d): x + Linear(hidden, d)(GELU(Linear(d, hidden)(LayerNorm(x))))."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(self.norm(x))


class Attention(nn.Module):
    """Multi-head attention: queries (B, Q, d), keys = values (B, N, d), additive bias (B, 1 or H, Q, N) -> (B, Q, d).

    softmax(q k^T / sqrt(d/H) + bias) v per head, then out_proj. No dropout (the published heads use none).
    Initialized as the published heads are after their init pass: in_proj Xavier-uniform, out_proj Xavier-uniform
    with gain 1/sqrt(3), biases zero.
    """

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"width {d} is not a multiple of the {n_heads} heads")
        self.n_heads = n_heads
        self.in_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.xavier_uniform_(self.out_proj.weight, gain=1 / math.sqrt(3))
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, Q, d = x.shape
        N, H = kv.shape[1], self.n_heads
        wq, wkv = self.in_proj.weight.split([d, 2 * d])
        bq, bkv = self.in_proj.bias.split([d, 2 * d])
        q = F.linear(x, wq, bq).view(B, Q, H, d // H).transpose(1, 2)  # (B, H, Q, d/H)
        k, v = F.linear(kv, wkv, bkv).view(B, N, 2, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, N, d/H)
        if bias is not None and bias.dtype != q.dtype:  # e.g. under autocast: keep hidden keys finite in q's dtype
            bias = bias.clamp(min=masked_value(q.dtype)).to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Q, d/H)
        return self.out_proj(y.transpose(1, 2).reshape(B, Q, d))


def masked_value(dtype: torch.dtype) -> float:
    """The additive bias of a hidden key: large and finite in `dtype` (so a row of only hidden keys stays finite)."""
    return torch.finfo(dtype).min / 2


def key_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """mask (B, N) True on real spacepoints -> additive bias (B, 1, 1, N): 0 on real keys, very negative on padding."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, masked_value(dtype))
    return bias[:, None, None, :]
