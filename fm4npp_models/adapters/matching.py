"""The track finder's set loss: truth instances, Hungarian matching of queries to them, and the matched losses.

Truth (per event, the project's rule, as the metrics count it): the counted spacepoints are the real ones with truth,
i.e. `track >= 0` or `noise`; all noise spacepoints of the event form ONE instance together, every other track id
one instance each. Spacepoints with `track == -1` and not noise (unmatched clusters) and padding are left out of
every cost and loss. (The published code also turned the padding label of a batch into an empty instance; here no
such instance exists.)

Costs, for query k and instance j of an event (probabilities p_k = sigmoid(mask logits) over the counted points):

    cost_kj = 0.5 * (-P_k(track)) + 1 * (1 - dice(p_k, t_j)) + 30 * focal(p_k, t_j)
    dice    = (2 sum_i p_ki t_ji + 1e-6) / (sum_i p_ki + sum_i t_ji + 1e-6)
    focal   = mean_i [ t_ji * 0.25 (1 - p_ki)^2 (-log p_ki) + (1 - t_ji) * 0.75 p_ki^2 (-log(1 - p_ki)) ]

scipy's `linear_sum_assignment` picks the matching of least total cost; with more instances than queries the
surplus instances go unmatched (the published data loader dropped events with more than 150 tracks). The loss of one
stage sums, over the events of the batch,

    0.5 * sum_matched -log P_k(track) + 0.1 * sum_unmatched -log P_k(no-object)
      + 1 * sum_matched (1 - dice) + 30 * sum_matched focal

and is divided by the batch size B, as published (so an event with many tracks weighs more than one with few, and the
loss scale matches the published learning rate). The total is the sum over the supervised stages (initial queries,
after decoder layer 1, final), each matched on its own. Logs are taken from logits (log-softmax, log-sigmoid), which
equals the published -log(p + 1e-6) wherever that epsilon does not matter and never overflows.

Everything is vectorized per event (matrix products over queries x points x instances); the only loop is over the
events of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

EPS = 1e-6


@dataclass(frozen=True)
class SetLossWeights:
    """Matching costs and loss weights of the published track finder (training settings)."""

    cost_class: float = 0.5
    cost_dice: float = 1.0
    cost_focal: float = 30.0
    matched_class: float = 0.5
    unmatched_class: float = 0.1
    dice: float = 1.0
    focal: float = 30.0
    alpha: float = 0.25
    gamma: float = 2.0


PUBLISHED = SetLossWeights()


def truth_instances(
    track: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """track (B, S) int64, noise (B, S) bool, mask (B, S) bool -> per event (points (n,), targets (M, n) float):
    the positions of the counted spacepoints and the one-hot membership of each of them in the M instances."""
    counted = mask & ((track >= 0) | noise)
    cluster = torch.where(noise, torch.full_like(track, -2), track)  # all noise of an event: one instance
    out = []
    for b in range(track.shape[0]):
        points = counted[b].nonzero().squeeze(1)
        ids, inverse = torch.unique(cluster[b, points], return_inverse=True)
        targets = torch.zeros(len(ids), len(points), device=track.device)
        targets[inverse, torch.arange(len(points), device=track.device)] = 1.0
        out.append((points, targets))
    return out


def pair_costs(
    log_class: torch.Tensor, mask_logits: torch.Tensor, targets: torch.Tensor, w: SetLossWeights = PUBLISHED
) -> dict[str, torch.Tensor]:
    """One event's pairwise terms, differentiable: log_class (Q, 2) log-probabilities [no-object, track],
    mask_logits (Q, n) on the counted points, targets (M, n) -> "class" (Q, M) = -P(track), "dice" (Q, M) = 1 - dice,
    "focal" (Q, M) = mean focal loss over the n points."""
    Q, n = mask_logits.shape
    M = targets.shape[0]
    p = torch.sigmoid(mask_logits)
    intersection = p @ targets.T  # (Q, M)
    dice = 1 - (2 * intersection + EPS) / (p.sum(1, keepdim=True) + targets.sum(1)[None, :] + EPS)
    focal_pos = w.alpha * (1 - p) ** w.gamma * -F.logsigmoid(mask_logits)  # the loss where t = 1, (Q, n)
    focal_neg = (1 - w.alpha) * p**w.gamma * -F.logsigmoid(-mask_logits)  # where t = 0
    focal = (focal_pos @ targets.T + focal_neg @ (1 - targets).T) / max(n, 1)
    cls = -log_class[:, 1].exp()[:, None].expand(Q, M)
    return {"class": cls, "dice": dice, "focal": focal}


def match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cost (Q, M) -> (queries, instances), each (min(Q, M),) int64: the assignment of least total cost."""
    rows, cols = linear_sum_assignment(cost.detach().to(torch.float64).cpu().numpy())
    as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=cost.device)  # noqa: E731
    return as_tensor(rows), as_tensor(cols)


def stage_loss(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    truth: list[tuple[torch.Tensor, torch.Tensor]],
    w: SetLossWeights = PUBLISHED,
) -> dict[str, torch.Tensor]:
    """One supervised stage: class_logits (B, Q, 2), mask_logits (B, Q, S), truth from `truth_instances` ->
    {"loss", "class", "noobj", "dice", "focal"}: the weighted total and its unweighted sums, each divided by B."""
    B, Q, _ = class_logits.shape
    zero = class_logits.sum() * 0.0  # keeps the graph (and the device) when a term has nothing to add
    terms = {"class": zero, "noobj": zero, "dice": zero, "focal": zero}
    for b, (points, targets) in enumerate(truth):
        log_class = F.log_softmax(class_logits[b].float(), dim=-1)  # (Q, 2)
        matched = torch.zeros(Q, dtype=torch.bool, device=class_logits.device)
        if targets.shape[0] > 0:
            costs = pair_costs(log_class, mask_logits[b][:, points].float(), targets, w)
            cost = w.cost_class * costs["class"] + w.cost_dice * costs["dice"] + w.cost_focal * costs["focal"]
            rows, cols = match(cost)
            matched[rows] = True
            terms["class"] = terms["class"] - log_class[rows, 1].sum()
            terms["dice"] = terms["dice"] + costs["dice"][rows, cols].sum()
            terms["focal"] = terms["focal"] + costs["focal"][rows, cols].sum()
        terms["noobj"] = terms["noobj"] - log_class[~matched, 0].sum()
    terms = {k: v / B for k, v in terms.items()}
    loss = (
        w.matched_class * terms["class"]
        + w.unmatched_class * terms["noobj"]
        + w.dice * terms["dice"]
        + w.focal * terms["focal"]
    )
    return {"loss": loss, **terms}


def set_loss(
    outputs: dict, track: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, w: SetLossWeights = PUBLISHED
) -> dict[str, torch.Tensor]:
    """The track finder's loss summed over its stages (outputs["aux"] and the final one): the same keys as
    `stage_loss`, each summed over the stages."""
    truth = truth_instances(track, noise, mask)
    total: dict[str, torch.Tensor] = {}
    for stage in [*outputs["aux"], outputs]:
        for k, v in stage_loss(stage["class_logits"], stage["mask_logits"], truth, w).items():
            total[k] = total[k] + v if k in total else v
    return total


def assign_tracks(class_logits: torch.Tensor, mask_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Inference: class_logits (B, Q, 2), mask_logits (B, Q, S), mask (B, S) -> labels (B, S) int64.

    A query scores its largest class probability, or -1 when that class is no-object; spacepoint i goes to
    argmax_k sigmoid(z_ik) * score_k, and to -1 (unassigned) when that best score is <= 0 or i is padding.
    """
    best, cls = torch.softmax(class_logits.float(), dim=-1).max(dim=-1)  # (B, Q)
    score = torch.where(cls == 1, best, torch.full_like(best, -1.0))
    value, label = (torch.sigmoid(mask_logits.float()) * score[:, :, None]).max(dim=1)  # (B, S)
    unassigned = value <= 0
    if mask is not None:
        unassigned = unassigned | ~mask
    return label.masked_fill(unassigned, -1)
