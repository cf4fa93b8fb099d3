"""fm4npp_models: the FM4NPP foundation model (a Mamba2 backbone over serialized TPC spacepoints) and its parts.

`Backbone` (fm4npp_models.model.backbone) is imported lazily, so that `import fm4npp_models` needs no torch until used.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {"Backbone": "fm4npp_models.model.backbone", "BackboneConfig": "fm4npp_models.model.backbone"}
__all__ = ["Backbone", "BackboneConfig"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fm4npp_models' has no attribute {name!r}")
