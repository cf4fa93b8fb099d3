"""How the backbone sees the azimuth phi, which is periodic: the phi conventions of the input and the targets.

The loader gives phi' = (phi + pi) / (2 pi) in [0, 1] (fm4npp_data.loader), so two spacepoints on either side of the
seam phi = +-pi, a few millimetres apart, have phi' about 1 apart. Three conventions (BackboneConfig.phi):

    wrapped     (published) the embedding reads phi' and the targets are the neighbours' phi' as stored: a neighbour
                just across the seam is a target about 1 away, which no smooth model predicts (2.8 % of the
                neighbour pairs of the demo, half of its loss)
    unwrapped   the embedding reads phi' as published; each neighbour's phi' is moved to its image nearest the
                spacepoint's own (phi'_t + n, n in {-1, 0, 1}), so targets are as near as the neighbours are
    circular    phi as the point (cos phi, sin phi) / (2 pi) on a circle of circumference 1, in the embedding and in
                the targets: the model never meets the seam (4 numbers a neighbour, the head has 4k outputs)

The circle's radius 1 / (2 pi) makes a small step in phi' the same length in all three (the chord of an angle d is
2 sin(pi d) / (2 pi) ~ d), so their losses are comparable. `periodic_error` is the one comparison of all three: the
squared distance in (eta', phi', r') with phi' compared on the circle (the difference taken to [-1/2, 1/2)).
"""

from __future__ import annotations

import math

import torch

from .config import PHI_CONVENTIONS, PUBLISHED_PHI

__all__ = ["PHI_CONVENTIONS", "PUBLISHED_PHI", "coordinates", "n_coordinates", "periodic_error", "targets"]

RADIUS = 1 / (2 * math.pi)


def check(convention: str) -> str:
    if convention not in PHI_CONVENTIONS:
        raise ValueError(f"unknown phi convention {convention!r}; the conventions are {', '.join(PHI_CONVENTIONS)}")
    return convention


def n_coordinates(convention: str) -> int:
    """The numbers that give a position: 3 (eta', phi', r') or 4 (eta', cos, sin, r') for `circular`."""
    return 4 if check(convention) == "circular" else 3


def wrap(d: torch.Tensor) -> torch.Tensor:
    """A difference of phi' taken to [-1/2, 1/2)."""
    return d - torch.floor(d + 0.5)


def coordinates(coords: torch.Tensor, convention: str) -> torch.Tensor:
    """(..., 3) [eta', phi', r'] -> (..., n_coordinates): the position as the convention writes it."""
    if check(convention) != "circular":
        return coords
    angle = 2 * math.pi * coords[..., 1:2]
    return torch.cat([coords[..., :1], RADIUS * torch.cos(angle), RADIUS * torch.sin(angle), coords[..., 2:3]], -1)


def targets(own: torch.Tensor, neighbours: torch.Tensor, convention: str) -> torch.Tensor:
    """own (B, S, 3) and neighbours (B, S, k, 3) [eta', phi', r'] -> the targets (B, S, k, n_coordinates)."""
    check(convention)
    if convention == "wrapped":
        return neighbours
    if convention == "circular":
        return coordinates(neighbours, convention)
    phi = own[..., None, 1] + wrap(neighbours[..., 1] - own[..., None, 1])
    return torch.stack([neighbours[..., 0], phi, neighbours[..., 2]], -1)


def to_phi_prime(prediction: torch.Tensor, convention: str) -> torch.Tensor:
    """(..., n_coordinates) in the convention -> (..., 3) [eta', phi', r'] (circular: phi' of the point's angle)."""
    if check(convention) != "circular":
        return prediction
    phi = torch.atan2(prediction[..., 2], prediction[..., 1]) / (2 * math.pi)  # in [-1/2, 1/2]
    return torch.stack([prediction[..., 0], phi, prediction[..., 3]], -1)


def periodic_error(prediction: torch.Tensor, neighbours: torch.Tensor, convention: str) -> torch.Tensor:
    """prediction (..., n_coordinates) in the convention, neighbours (..., 3) [eta', phi', r'] as stored -> (...)
    the squared distance with phi' compared on the circle: the same measure of every convention."""
    p = to_phi_prime(prediction, convention)
    d = p - neighbours
    return d[..., 0].pow(2) + wrap(d[..., 1]).pow(2) + d[..., 2].pow(2)
