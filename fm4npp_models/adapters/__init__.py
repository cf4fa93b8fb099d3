"""Downstream adapters: small trainable heads on the frozen backbone's per-block features.

    tracking   TrackFinder       (tracking.py)      mask-transformer track finder, Hungarian set loss (matching.py)
    pid        SegmentationHead  (segmentation.py)  5 classes: other, pion, kaon, proton, electron
    noise      SegmentationHead  (segmentation.py)  2 classes: signal, noise

The interface every head (and baselines.AdapterOnly) offers:

    head = make_head(task, d_model, n_features)         # d_model: the backbone width; n_features: its block count
    feats = backbone.features(batch["features"], batch["mask"])     # [z_1 .. z_L], or a cached (L, B, S, D) tensor
    outputs = head(feats, batch["mask"])                 # a dict of tensors (below)
    loss = head.loss(outputs, batch)                     # scalar; reads batch["mask"] and the task's labels
    labels = head.predict(outputs, batch["mask"])        # (B, S) int64, -1 on padding (and unassigned spacepoints)

    tracking  outputs {"class_logits" (B, K, 2), "mask_logits" (B, K, S), "aux": [2 earlier stages, same keys]};
              loss reads batch "track", "noise", "mask"; labels are query indices 0..K-1 (any labels: only the
              grouping counts), -1 where no query claims the spacepoint; head.loss_terms(...) gives the parts
    pid       outputs {"logits" (B, S, 5)}; loss reads batch "pid"; labels are the class 0..4
    noise     outputs {"logits" (B, S, 2)}; loss reads batch "noise"; labels are 0 / 1 (1: noise)

Heads are permutation-equivariant over spacepoints (no positional input), so features and labels need only share
one order (the loader's serialized `order`, or the stored order through `backbone.features(..., index=...)`).
Padding never changes a real spacepoint's output.
"""

from __future__ import annotations

from torch import nn

from fm4npp_data import tasks

from .layers import FeatureMix
from .matching import SetLossWeights, assign_tracks, set_loss
from .segmentation import SegmentationHead
from .tracking import TrackFinder

#: The task names (fm4npp_data.tasks, the registry): tracking, pid, noise.
TASKS = tuple(tasks.TASKS)


def make_head(task: str, d_model: int, n_features: int, **options) -> nn.Module:
    """The head of `task` (one of TASKS) reading n_features blocks of width d_model; `options` go to its constructor
    (e.g. width, n_queries, dropout). ValueError naming the tasks for another name."""
    if tasks.task_named(task).is_classification:
        return SegmentationHead(d_model, n_features, task=task, **options)
    return TrackFinder(d_model, n_features, **options)


__all__ = [
    "TASKS",
    "FeatureMix",
    "SegmentationHead",
    "SetLossWeights",
    "TrackFinder",
    "assign_tracks",
    "make_head",
    "set_loss",
]
