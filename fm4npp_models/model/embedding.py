"""The published FM4NPP token embedding: token = E' * e + gamma(eta', phi', r') @ P.

gamma is the NeRF positional encoding of the three normalized coordinates p = (eta', phi', r') with 10 frequencies
2^0 .. 2^9 and no factor pi:

    gamma(p) = [p, sin(1 p), cos(1 p), sin(2 p), cos(2 p), ..., sin(512 p), cos(512 p)]    (3 + 10 * 2 * 3 = 63 values)

in this order (for each frequency the three sines, then the three cosines), as the released backbones were trained.
e (1 x D) and P (63 x D) are random normal matrices (std 1) that the published code never trains; they are parameters
all the same, stored in every checkpoint and loaded from it, never re-drawn. `trainable=True` lets them learn.

With the `circular` phi convention (fm4npp_models.model.phi) the position has four numbers (eta', cos, sin, r') and
P has 4 + 10 * 2 * 4 = 84 rows; the backbone gives the embedding its position in its convention.
"""

from __future__ import annotations

import torch
from torch import nn

from .phi import PUBLISHED_PHI, coordinates, n_coordinates

N_FREQUENCIES = 10


def n_position(n_coordinates: int = 3) -> int:
    """The length of gamma(p) for a position of n_coordinates numbers (63 for 3)."""
    return n_coordinates * (1 + 2 * N_FREQUENCIES)


N_POSITION = n_position(3)  # 63: [eta', phi', r']


def nerf_encoding(p: torch.Tensor, n_frequencies: int = N_FREQUENCIES) -> torch.Tensor:
    """(..., 3) -> (..., 3 + 6 n_frequencies): [p, sin(2^0 p), cos(2^0 p), ..., sin(2^(n-1) p), cos(2^(n-1) p)]."""
    parts = [p]
    for level in range(n_frequencies):
        scaled = p * float(2**level)
        parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


class AdditiveEmbedding(nn.Module):
    """features (B, S, 4) = [E', eta', phi', r'] -> tokens (B, S, D); the position as the phi convention writes it."""

    def __init__(self, d_model: int, trainable: bool = False, phi: str = PUBLISHED_PHI) -> None:
        super().__init__()
        self.phi = phi
        self.energy = nn.Parameter(torch.randn(1, d_model), requires_grad=trainable)  # e
        self.position = nn.Parameter(torch.randn(n_position(n_coordinates(phi)), d_model), requires_grad=trainable)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        energy, position = features[..., :1], coordinates(features[..., 1:4], self.phi)
        return energy @ self.energy + nerf_encoding(position) @ self.position
