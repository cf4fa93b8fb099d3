"""The FM4NPP foundation model: a stack of Mamba2 blocks over the serialized spacepoints of an event.

    x_0 = embedding(features)                     features (B, S, 4) = [E', eta', phi', r'] in the raster order
    z_l = Dropout(Mamba2_l(RMSNorm_l(x_{l-1})))    l = 1 .. L, the residual-branch outputs
    x_l = x_{l-1} + z_l
    y   = head(RMSNorm_f(x_L))                     (B, S, 3k): the k next-nearest neighbours' [eta', phi', r']

The embedding and the head write positions in the config's phi convention (fm4npp_models.model.phi): `circular`
gives 4 numbers a position (eta', cos, sin, r'), so the head has 4k outputs.

`features(...)` returns [z_1 .. z_L], what the published adapters read (kind "z"), or the residual stream
[x_0 .. x_L] (kind "x"), or both lists one after the other (kind "both"). The sizes `m1` .. `m6` are the paper's ladder
(Table 1): widths 64 .. 1536, 12 layers, d_state = width / 16, headdim 64, expand 2, d_conv 4, chunk 256; `tiny` is
for CPU demos. The released checkpoints' names m1 .. m5 are the paper's m3 .. m6 (fm4npp_models.checkpoints.published).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fm4npp_data.errors import RunError

from .config import FEATURE_KINDS, PAPER_PARAMETERS, PUBLISHED_FEATURES, SIZES, BackboneConfig
from .embedding import AdditiveEmbedding
from .mamba2 import Mamba2
from .phi import n_coordinates


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w (no bias), as in the published code."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """The residual branch of one layer: Dropout(Mamba2(RMSNorm(x)))."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model)
        self.mixer = Mamba2(
            config.d_model,
            d_state=config.state,
            d_conv=config.d_conv,
            expand=config.expand,
            headdim=config.headdim,
            ngroups=config.ngroups,
            chunk_size=config.chunk_size,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.dropout(self.mixer(self.norm(x), mask=mask))


class Backbone(nn.Module):
    """features (B, S, 4) [, mask (B, S)] -> (B, S, 3k) (4k with the circular phi convention)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = AdditiveEmbedding(config.d_model, trainable=config.trainable_embedding, phi=config.phi)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, n_coordinates(config.phi) * config.k)

    @classmethod
    def of_size(cls, name: str, **changes) -> Backbone:
        """A model of the ladder (`tiny`, `m1` .. `m6`), with config fields changed (e.g. k=30)."""
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; the sizes are {', '.join(SIZES)}")
        return cls(BackboneConfig(**{**SIZES[name].as_dict(), **changes}))

    @classmethod
    def from_config(cls, config: BackboneConfig, where) -> Backbone:
        """The model of a config read from the file `where`; RunError when its sizes do not fit together."""
        try:
            return cls(config)
        except ValueError as exc:
            raise RunError(f"{where}: the backbone sizes do not fit together ({exc})") from exc

    @classmethod
    def from_run(cls, run, map_location="cpu") -> Backbone:
        """The backbone of a run folder (`fm4npp pretrain`, `fm4npp import-checkpoint`), its weights loaded exactly
        (fm4npp_models.checkpoints.run reads the folder; RunError when anything does not fit)."""
        from ..checkpoints.run import CONFIG, WEIGHTS, backbone_config, load_state, load_tensors, read_config

        run = Path(run)
        model = cls.from_config(backbone_config(read_config(run), run / CONFIG), run / CONFIG)
        load_state(model, load_tensors(run / WEIGHTS), run / WEIGHTS)
        return model.to(map_location)

    @classmethod
    def from_published(cls, checkpoint, map_location="cpu") -> Backbone:
        """A released FM4NPP backbone (`pp_nerf_m*_k30.ckpt`) on the CPU with dropout 0, read without unpickling code
        (fm4npp_models.checkpoints.published maps its weights into our layout)."""
        from ..checkpoints.published import published_weights, read_checkpoint
        from ..checkpoints.run import load_state

        config, state = published_weights(read_checkpoint(checkpoint).state, checkpoint)
        model = cls(config)
        load_state(model, state, checkpoint)
        return model.to(map_location)

    def _stream(self, features: torch.Tensor, mask: torch.Tensor | None, xs: list | None = None):
        """x_L and [z_1 .. z_L]; with a list `xs`, the stream x_0 .. x_L is appended to it."""
        x = self.embedding(features)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # padding carries nothing (it is on the right: causal anyway)
        zs = []
        for block in self.blocks:
            if xs is not None:
                xs.append(x)
            z = block(x, mask=mask)
            zs.append(z)
            x = x + z
        if xs is not None:
            xs.append(x)
        return x, zs

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, _ = self._stream(features, mask)
        return self.head(self.norm_f(x))

    def features(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        kind: str = PUBLISHED_FEATURES,
    ) -> list[torch.Tensor]:
        """What a head reads, n_feature_blocks(kind, L) tensors (B, S, d_model) in the serialized order: kind "z" the
        residual-branch outputs [z_1 .. z_L] (published), "x" the residual stream [x_0 .. x_L] (x_0 the embedding,
        zero on padding), "both" [z_1 .. z_L, x_0 .. x_L]. With `index` (B, S; the stored index of each position, -1
        on padding, as the loader gives it) in the event's stored order instead (positions beyond an event's length
        are zero)."""
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; the kinds are {', '.join(FEATURE_KINDS)}")
        xs = None if kind == "z" else []
        _, zs = self._stream(features, mask, xs)
        blocks = zs if kind == "z" else xs if kind == "x" else zs + xs
        return blocks if index is None else [in_stored_order(block, index) for block in blocks]


def n_feature_blocks(kind: str, n_layers: int) -> int:
    """How many tensors Backbone.features(..., kind=kind) gives for a backbone of n_layers blocks."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; the kinds are {', '.join(FEATURE_KINDS)}")
    return {"z": n_layers, "x": n_layers + 1, "both": 2 * n_layers + 1}[kind]


def in_stored_order(block: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """block (B, S, D) in the serialized order -> the event's stored order: position i goes to index[b, i] (index -1:
    padding, dropped); positions beyond an event's length are zero."""
    valid = index >= 0
    target = torch.where(valid, index, torch.zeros_like(index))
    stored = torch.zeros_like(block)
    source = block * valid.unsqueeze(-1).to(block.dtype)
    return stored.scatter_add_(1, target.unsqueeze(-1).expand_as(block), source)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def size_table() -> list[dict]:
    """name, width, layers, d_state, parameters (and the paper's count) of every size, computed from the modules."""
    rows = []
    for name, config in SIZES.items():
        with torch.device("meta"):
            model = Backbone(config)
        rows.append(
            {
                "name": name,
                "width": config.d_model,
                "layers": config.n_layers,
                "d_state": config.state,
                "heads": config.expand * config.d_model // config.headdim,
                "parameters": count_parameters(model),
                "paper": PAPER_PARAMETERS.get(name),
            }
        )
    return rows
