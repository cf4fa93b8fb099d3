"""The per-spacepoint classifier for particle identification (5 classes) and noise tagging (2 classes).

The published `AttentionHead` as its configs build it (one self-attention layer, no FFN, width 256, 4 heads):

    f = sum_l softmax(w)_l z_l                   (B, S, D)    the mix of the backbone's blocks
    x = Linear(LayerNorm(f))                     (B, S, 256)  input_proj
    x = x + SelfAttn(LN(x))                      (B, S, 256)  4 heads, padded keys hidden
    logits = MLP(RMSNorm(x))                     (B, S, C)    LN -> Linear 256->256 -> GELU -> Dropout(0.1) -> Linear

Loss: cross-entropy, mean over the real spacepoints with a label (label >= 0); PID reads batch["pid"], noise
tagging batch["noise"] (as 0/1). With class weights w (fm4npp_models.training.class_weights) the weighted mean
sum_i w_{y_i} CE_i / sum_i w_{y_i} (torch's), spacepoints of a class of weight 0 left out; the published heads use
none. Prediction: the argmax class, -1 on padding.

Parameters at width 256 with 12 feature blocks: 397,841 for PID (5 classes), 397,070 for noise (2 classes). The
published module holds 5.5 D more, unused when reading backbone features: its trainable `legacy` embedder (4.5 D) and
an RMSNorm(D) `embedder_norm`; baselines.adapter_only has them, and its count equals the published 399,249 (PID,
D = 256), 736,529 (PID, D = 1536) and 398,478 (noise, D = 256).

Not reproduced: the published init pass gives every parameter whose name contains an uppercase "A" (its `SA_layers`,
attention and LayerNorm alike) U(-1/30, 1/30), a side effect of a name match; here attention starts as the track
finder's and LayerNorms at (1, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fm4npp_data.tasks import PID, TASKS

from ..model.backbone import RMSNorm
from .layers import MLP, Attention, FeatureMix, key_bias

#: task -> (batch key of the labels: the task's column, number of classes), for the classification tasks
TARGETS = {task.name: (task.column, len(task.classes)) for task in TASKS.values() if task.is_classification}


class SegmentationHead(nn.Module):
    """[z_1 .. z_L] (each (B, S, D)), mask (B, S) -> {"logits": (B, S, C)}."""

    def __init__(
        self,
        d_model: int,
        n_features: int,
        task: str = PID.name,
        width: int = 256,
        n_heads: int = 4,
        dropout: float = 0.1,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if task not in TARGETS:
            raise ValueError(f"unknown segmentation task {task!r}; the tasks are {', '.join(TARGETS)}")
        self.task = task
        self.target, default_classes = TARGETS[task]
        self.n_classes = n_classes or default_classes
        self.mix = FeatureMix(n_features)
        self.input_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, width))
        self.attn_norm = nn.LayerNorm(width)
        self.attn = Attention(width, n_heads)
        self.norm = RMSNorm(width)
        self.out_mlp = MLP(width, self.n_classes, dropout)

    def forward(self, feats: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        x = self.input_proj(self.mix(feats))  # (B, S, W)
        h = self.attn_norm(x)
        x = x + self.attn(h, h, key_bias(mask, h.dtype))
        return {"logits": self.out_mlp(self.norm(x))}

    def labels(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, S) int64, valid (B, S) bool) of this task from a loader batch."""
        return class_labels(batch, self.target)

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy, mean over the valid spacepoints (0 with none, keeping the graph); with class_weight (C,),
        the mean weighted by the weight of each spacepoint's class (those of weight 0 are not valid)."""
        return class_loss(outputs["logits"], *self.labels(batch), class_weight)

    @torch.no_grad()
    def predict(self, outputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S) int64: the argmax class of each spacepoint, -1 on padding."""
        return argmax_labels(outputs["logits"], mask)


# -- the classification loss and prediction, shared with the graph baselines' SAGEConv GNN ------------------------


def class_labels(batch: dict, column: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (B, S) int64, valid (B, S) bool) of a classification task from a loader batch: its column (pid,
    -1 none; noise as 0/1), valid where real and labelled."""
    labels = batch[column].long()
    return labels, batch["mask"] & (labels >= 0)


def class_loss(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of logits (B, S, C), mean over the valid spacepoints (0 with none, keeping the graph); with
    class_weight (C,), the mean weighted by each spacepoint's class weight, those of weight 0 left out."""
    if class_weight is not None:
        valid = valid & (class_weight[labels.clamp(min=0)] > 0)
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), labels[valid], weight=class_weight)


@torch.no_grad()
def argmax_labels(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, S) int64: the argmax class of each spacepoint, -1 on padding."""
    pred = logits.argmax(dim=-1)
    return pred if mask is None else pred.masked_fill(~mask, -1)
