"""The backbone's configuration and the paper's size ladder, torch-free: what a run's config.json holds, what the
command line's help lists, and what a published checkpoint's shapes are matched against (fm4npp_models.model.backbone
builds the model from it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: How the backbone sees the periodic azimuth (fm4npp_models.model.phi): in its input and its targets.
PHI_CONVENTIONS = ("wrapped", "unwrapped", "circular")
#: The published backbones' convention, and that of every run whose config.json names none.
PUBLISHED_PHI = "wrapped"
#: What a downstream head reads of the backbone (Backbone.features): "z" the blocks' outputs z_1 .. z_L, "x" the
#: residual stream x_0 .. x_L, "both" the two lists one after the other.
FEATURE_KINDS = ("z", "x", "both")
#: The published heads' kind, and that of every downstream run whose config.json names none.
PUBLISHED_FEATURES = "z"


@dataclass(frozen=True)
class BackboneConfig:
    d_model: int
    n_layers: int = 12
    d_state: int | None = None  # None: d_model / 16
    headdim: int = 64
    expand: int = 2
    d_conv: int = 4
    ngroups: int = 1
    chunk_size: int = 256
    k: int = 10  # neighbours predicted per spacepoint: the head has 3k outputs
    dropout: float = 0.0
    trainable_embedding: bool = False
    phi: str = PUBLISHED_PHI  # one of PHI_CONVENTIONS

    def __post_init__(self) -> None:
        if self.phi not in PHI_CONVENTIONS:
            raise ValueError(f"unknown phi convention {self.phi!r}; the conventions are {', '.join(PHI_CONVENTIONS)}")

    @property
    def state(self) -> int:
        return self.d_state if self.d_state is not None else max(1, self.d_model // 16)

    def as_dict(self) -> dict:
        return asdict(self)


#: The paper's model ladder (Table 1) and the published parameter counts (millions), plus `tiny` for CPU demos.
SIZES: dict[str, BackboneConfig] = {
    "tiny": BackboneConfig(d_model=64, n_layers=4, d_state=16, headdim=32, chunk_size=64),
    "m1": BackboneConfig(d_model=64),
    "m2": BackboneConfig(d_model=128),
    "m3": BackboneConfig(d_model=256),
    "m4": BackboneConfig(d_model=512),
    "m5": BackboneConfig(d_model=1024),
    "m6": BackboneConfig(d_model=1536),
}
PAPER_PARAMETERS = {"m1": 0.34e6, "m2": 1.3e6, "m3": 5.3e6, "m4": 21e6, "m5": 84e6, "m6": 188e6}
