"""Baselines the foundation model is compared with. `AdapterOnly`: the downstream heads on embedded raw spacepoints,
with no backbone (the published `--no-pretrain`)."""

from __future__ import annotations

from .adapter_only import AdapterOnly, ConcatEmbedding, LegacyEmbedding

__all__ = ["AdapterOnly", "ConcatEmbedding", "LegacyEmbedding"]
