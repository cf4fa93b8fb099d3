"""The pretraining objective: predict the k next-nearest neighbours of every spacepoint.

For the spacepoint at position j the model predicts 3k numbers: the normalized [eta', phi', r'] of its k nearest
spacepoints at larger r, nearest first (the `targets` of fm4npp_data.loader). The loss of an event is the mean, over
its real (position, neighbour) pairs, of the squared distance between predicted and true neighbour (the paper's
||s_hat - y||^2 per neighbour); events are weighted by their difficulty weight (fm4npp_data.prepare's
difficulty.json: the paper bins events by mean kNN distance; the published code bins them by point count instead)
and averaged over the events that have at least one neighbour pair.

`own_coordinates_loss` is the baseline a trained model must beat: predicting, for every neighbour, the spacepoint's
own coordinates.
"""

from __future__ import annotations

import torch


def _per_event(squared: torch.Tensor, target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = target_mask.to(squared.dtype)
    pairs = m.sum(dim=(1, 2))
    return (squared * m).sum(dim=(1, 2)) / pairs.clamp_min(1), pairs > 0


def _weighted_mean(per_event: torch.Tensor, has: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = torch.ones_like(per_event) if weight is None else weight.to(per_event.dtype)
    w = w * has.to(per_event.dtype)
    return (w * per_event).sum() / has.sum().clamp_min(1)


def neighbour_loss(
    prediction: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """prediction (B, S, 3k), targets (B, S, k, 3), target_mask (B, S, k), weight (B,) -> a scalar."""
    b, s, k, _ = targets.shape
    squared = (prediction.reshape(b, s, k, 3) - targets).pow(2).sum(-1)  # (B, S, k)
    per_event, has = _per_event(squared, target_mask)
    return _weighted_mean(per_event, has, weight)


def own_coordinates_loss(
    features: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of predicting each spacepoint's own [eta', phi', r'] (features[..., 1:4]) for all its neighbours."""
    k = targets.shape[2]
    own = features[..., 1:4].unsqueeze(2).expand(-1, -1, k, -1)
    squared = (own - targets).pow(2).sum(-1)
    per_event, has = _per_event(squared, target_mask)
    return _weighted_mean(per_event, has, weight)
