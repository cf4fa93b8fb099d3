"""AdapterOnly: a downstream head trained on the raw spacepoints, embedded by the head itself; no backbone.

This is the published `--no-pretrain` run (the paper's "AdapterOnly" rows): the same head as on the foundation model,
fed instead with

    x = RMSNorm(embedding(features))            features (B, S, 4) = [E', eta', phi', r'] -> (B, S, D)

presented to the head as its feature list (one block; the head's mix of one block is the block itself). The embedding
is the one the published head carries for this purpose:

    tracking     ConcatEmbedding: cat(E' e, gamma(eta', phi', r') P) M, with e (1, D/4), P (63, D), M (D/4 + D, D)
                 random normal and frozen (the published `EmbedderConcat`, NeRF encoding gamma as the backbone's)
    pid, noise   LegacyEmbedding: LayerNorm(Dropout_0.2(cat(E' a, (eta', phi', r') C))), a (1, D/4) and C (3, D - D/4)
                 drawn N(0, 0.02^2) and trained (the published `Embedder`)

The RMSNorm is the published `embedder_norm`. With n_features=12 (the published module's unused 12-vector of mixing
weights) the parameter counts are exactly the published ones: tracking 2,285,646 total / 2,187,534 trainable at
D = 256; PID 399,249 at D = 256 and 736,529 at D = 1536; noise 398,478 at D = 256. So the published head counts
include these embedder parts even when the head reads backbone features.

    model = AdapterOnly("tracking", d_model=256)
    outputs = model(batch["features"], batch["mask"])    # then model.loss(outputs, batch), model.predict(outputs, mask)
"""

from __future__ import annotations

import torch
from torch import nn

from fm4npp_data.tasks import TRACKING

from ..adapters import make_head
from ..model.backbone import RMSNorm
from ..model.embedding import N_POSITION, nerf_encoding


class ConcatEmbedding(nn.Module):
    """features (B, S, 4) -> (B, S, D): cat(E' e, gamma(p) P) M, all three matrices random normal and frozen."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        d_energy = d_model // 4
        self.energy = nn.Parameter(torch.randn(1, d_energy), requires_grad=False)  # e
        self.position = nn.Parameter(torch.randn(N_POSITION, d_model), requires_grad=False)  # P
        self.mix = nn.Parameter(torch.randn(d_energy + d_model, d_model), requires_grad=False)  # M

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        energy, coords = features[..., :1], features[..., 1:4]
        return torch.cat([energy @ self.energy, nerf_encoding(coords) @ self.position], dim=-1) @ self.mix


class LegacyEmbedding(nn.Module):
    """features (B, S, 4) -> (B, S, D): LayerNorm(Dropout(cat(E' a, (eta', phi', r') C))), a and C trained."""

    def __init__(self, d_model: int, dropout: float = 0.2, init_scale: float = 0.02) -> None:
        super().__init__()
        d_energy = d_model // 4
        self.energy = nn.Parameter(torch.randn(1, d_energy) * init_scale)  # a
        self.position = nn.Parameter(torch.randn(3, d_model - d_energy) * init_scale)  # C
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        energy, coords = features[..., :1], features[..., 1:4]
        return self.norm(self.dropout(torch.cat([energy @ self.energy, coords @ self.position], dim=-1)))


class AdapterOnly(nn.Module):
    """features (B, S, 4), mask (B, S) -> the outputs of the task's head; `loss` and `predict` are the head's."""

    def __init__(self, task: str, d_model: int = 256, n_features: int = 1, **options) -> None:
        super().__init__()
        self.task = task
        self.embedding = ConcatEmbedding(d_model) if task == TRACKING.name else LegacyEmbedding(d_model)
        self.norm = RMSNorm(d_model)
        self.head = make_head(task, d_model, n_features, **options)
        self.n_features = n_features

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        x = self.norm(self.embedding(features))
        return self.head([x] * self.n_features, mask)

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The head's loss; class_weight (C,): the classification heads' class weights (None: plain cross entropy)."""
        if class_weight is None:
            return self.head.loss(outputs, batch)
        return self.head.loss(outputs, batch, class_weight=class_weight)

    def predict(self, outputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
        return self.head.predict(outputs, mask)
