"""The track finder: a mask-transformer head that segments an event's spacepoints into track instances.

The published `MambaAttentionHead` as its trainer builds it (no Mamba layers in the head, 12 feature blocks, 150
queries, width 256, 4 heads, FFN 512, 2 decoder layers), reading the frozen backbone's per-block features:

    f    = sum_l softmax(w)_l z_l                           (B, S, D)    the mix of the backbone's blocks
    x    = RMSNorm(Linear(LayerNorm(f)))                    (B, S, 256)  input_proj, then norm
    e    = x + W2 GELU(W1 LN(x))                            (B, S, 256)  the point embeddings (hidden 512)
    Q_0  = learned queries, pos = learned query positions   (K, 256)     K = 150
    stage(Q): class logits = class_mlp(Q) (K, 2: 0 no-object, 1 track); m = mask_mlp(Q);
              mask logits z_ki = m_k . e_i (unscaled), p_ki = sigmoid(z_ki)
    decoder layer l = 1, 2 (bias_ki = log(p_ki + 1e-6) of the previous stage; padded keys hidden):
        q = Q + pos;  q = q + CrossAttn(LN(q), e, bias);  q = q + SelfAttn(LN(q));  Q = q + FFN(LN(q))

Outputs: the final stage's {"class_logits" (B, K, 2), "mask_logits" (B, K, S)} and "aux", the stages of the initial
queries and after layer 1, so that 3 stages are supervised (`matching.set_loss`).

Published quirk, kept: the cross-attention residual is taken on q = Q + pos, so the query positions are added into
the query state again at every layer (pos accumulates). It is part of the published function, and the parameter
count is the same either way. The additive mask is not detached (gradients flow through it), as published.

Parameters at width 256 with 12 feature blocks: 2,187,278, all trainable. The published module holds 256 more
(an RMSNorm(D) `embedder_norm`, trainable but unused when reading backbone features) and a frozen random embedder
(98,112 at D = 256), both used only without a backbone: baselines.adapter_only has them, and its count equals the
published 2,285,646 total / 2,187,534 trainable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fm4npp_data.tasks import TRACKING

from ..model.backbone import RMSNorm
from .layers import FFN, MLP, Attention, FeatureMix, masked_value
from .matching import PUBLISHED, SetLossWeights, assign_tracks, set_loss

MASK_EPS = 1e-6  # bias = log(p + MASK_EPS)


class DecoderLayer(nn.Module):
    """queries (B, K, W), query positions (B, K, W), point embeddings (B, S, W), bias (B, 1, K, S) -> (B, K, W)."""

    def __init__(self, width: int, n_heads: int, ffn: int) -> None:
        super().__init__()
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attn = Attention(width, n_heads)
        self.self_norm = nn.LayerNorm(width)
        self.self_attn = Attention(width, n_heads)
        self.ffn = FFN(width, ffn)

    def forward(self, q: torch.Tensor, pos: torch.Tensor, e: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = q + pos  # the published quirk: the residual stream keeps pos, so it accumulates over the layers
        q = q + self.cross_attn(self.cross_norm(q), e, bias)
        h = self.self_norm(q)
        q = q + self.self_attn(h, h)
        return self.ffn(q)


class TrackFinder(nn.Module):
    """[z_1 .. z_L] (each (B, S, D)), mask (B, S) -> {"class_logits" (B, K, 2), "mask_logits" (B, K, S), "aux"}."""

    task = TRACKING.name

    def __init__(
        self,
        d_model: int,
        n_features: int,
        width: int = 256,
        n_queries: int = 150,
        n_layers: int = 2,
        n_heads: int = 4,
        ffn: int = 512,
        dropout: float = 0.0,
        loss_weights: SetLossWeights = PUBLISHED,
    ) -> None:
        super().__init__()
        self.loss_weights = loss_weights
        self.mix = FeatureMix(n_features)
        self.input_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, width))
        self.norm = RMSNorm(width)
        self.point_ffn = FFN(width, ffn)
        self.queries = nn.Parameter(torch.randn(n_queries, width))  # as nn.Embedding: N(0, 1)
        self.query_pos = nn.Parameter(torch.randn(n_queries, width))
        self.layers = nn.ModuleList(DecoderLayer(width, n_heads, ffn) for _ in range(n_layers))
        self.class_mlp = MLP(width, 2, dropout)
        self.mask_mlp = MLP(width, width, dropout)

    def stage(self, q: torch.Tensor, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """queries (B, K, W), point embeddings (B, S, W) -> class logits (B, K, 2), mask logits (B, K, S)."""
        return {"class_logits": self.class_mlp(q), "mask_logits": self.mask_mlp(q) @ e.transpose(1, 2)}

    def attention_bias(self, mask_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """mask logits (B, K, S) -> (B, 1, K, S): log(sigmoid(z) + 1e-6), padded keys hidden (shared by all heads)."""
        bias = torch.log(torch.sigmoid(mask_logits) + MASK_EPS)
        if mask is not None:
            bias = bias.masked_fill(~mask[:, None, :], masked_value(bias.dtype))
        return bias[:, None]

    def forward(self, feats: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        e = self.point_ffn(self.norm(self.input_proj(self.mix(feats))))  # (B, S, W)
        B = e.shape[0]
        q = self.queries.expand(B, -1, -1)
        pos = self.query_pos.expand(B, -1, -1)
        stages = [self.stage(q, e)]
        for layer in self.layers:
            q = layer(q, pos, e, self.attention_bias(stages[-1]["mask_logits"], mask))
            stages.append(self.stage(q, e))
        return {**stages[-1], "aux": stages[:-1]}

    def loss(self, outputs: dict, batch: dict) -> torch.Tensor:
        """The set loss summed over the 3 stages, divided by B (uses batch "track", "noise", "mask")."""
        return self.loss_terms(outputs, batch)["loss"]

    def loss_terms(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """{"loss", "class", "noobj", "dice", "focal"} (matching.set_loss), for logging."""
        return set_loss(outputs, batch["track"], batch["noise"], batch["mask"], self.loss_weights)

    @torch.no_grad()
    def predict(self, outputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S) int64: the query each spacepoint is assigned to, -1 when none (matching.assign_tracks)."""
        return assign_tracks(outputs["class_logits"], outputs["mask_logits"], mask)
