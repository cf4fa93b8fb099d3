"""Baselines the foundation model is compared with, each trained, predicted and scored like the FM's heads
(`fm4npp finetune --model NAME`, `fm4npp predict`, `fm4npp leaderboard`):

    adapter-only  AdapterOnly (adapter_only.py): the FM's head on embedded raw spacepoints, no backbone (the published
                  `--no-pretrain`)
    exatrkx       ExaTrkX (exatrkx.py): metric-learning embedding, radius graph, edge filter, Interaction Network
                  edge classifier, connected components (tracking; three stages trained in order)
    eggnet        EggNet (eggnet.py): an evolving-graph GNN embedding hits, DBSCAN (tracking)
    gnn           SageGNN (gnn.py): 6 SAGEConv layers on a kNN graph (PID, noise)

The graph baselines (graphs.py builds their graphs) share one interface, that of a head reading the spacepoints:

    model = make_baseline("exatrkx", "tracking")          # options: the class's OPTIONS, defaults the paper's
    model.set_stage("embedding")                          # multi-stage models only (model.stages, in order)
    outputs = model(batch["features"], batch["mask"])
    loss = model.loss(outputs, batch, class_weight=None)  # class_weight: PID/noise class weights, or None
    labels = model.predict(outputs, batch["mask"])        # (B, S) int64, -1 on padding (and unassigned)

torch_geometric (the SAGEConv layers) and scikit-learn (EggNet's DBSCAN) are imported only when a model is built.
"""

from __future__ import annotations

from importlib import import_module

from torch import nn

from fm4npp_data.errors import TrainError

from ..checkpoints.run import check_options
from .adapter_only import AdapterOnly, ConcatEmbedding, LegacyEmbedding

#: The graph baselines: name -> (module, class).
GRAPH_BASELINES = {"exatrkx": ("exatrkx", "ExaTrkX"), "eggnet": ("eggnet", "EggNet"), "gnn": ("gnn", "SageGNN")}


def baseline_class(name: str) -> type[nn.Module]:
    """The class of the graph baseline `name` (GRAPH_BASELINES); TrainError naming them for another name."""
    if name not in GRAPH_BASELINES:
        raise TrainError(f"unknown baseline {name!r}; the graph baselines are {', '.join(GRAPH_BASELINES)}")
    module, cls = GRAPH_BASELINES[name]
    return getattr(import_module(f"{__name__}.{module}"), cls)


def make_baseline(name: str, task: str, **options) -> nn.Module:
    """The graph baseline `name` for `task`; TrainError when it does not serve the task or an option is unknown or
    not of its kind."""
    cls = baseline_class(name)
    if task not in cls.tasks:
        raise TrainError(f"--model {name} serves --task {' or '.join(cls.tasks)}, not {task}")
    check_options(options, cls.OPTIONS, name)
    return cls(task, **options)


__all__ = ["GRAPH_BASELINES", "AdapterOnly", "ConcatEmbedding", "LegacyEmbedding", "baseline_class", "make_baseline"]
