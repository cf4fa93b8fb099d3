"""The SAGEConv GNN for particle identification and noise tagging (the paper's appendix C, "Adapt GNNs for sPHENIX
Particle Identification and Noise Tagging"; the best of the four GNNs it tried, Table 5's "SAGEConv").

Per batch, on the flat real spacepoints (graphs.py; events are never linked):

    x = hit_features(features, mask)                 (N, 5)    E', eta_hat, cos phi, sin phi, r_hat
    edges = kNN of x[:, 1:] within the event         (2, E)    each hit's k = 50 nearest other hits at distance
                                                               < max_distance = 1.0, directed (neighbour -> hit)
    h = Encoder(x)                                   (N, 256)  Linear 5 -> 256, ReLU, Linear 256 -> 256
    h = h + ReLU(SAGEConv(h, edges))  x5, then       (N, 256)  torch_geometric SAGEConv (mean aggregation:
    h = h + SAGEConv(h, edges)                                 W_r h_i + W_l mean_j h_j + b), residual
    logits = Classifier(h)                           (N, C)    Linear 256 -> 128, ReLU, 64, ReLU, -> C
    outputs = {"logits": (B, S, C)}                            0 on padding

Loss and prediction are SegmentationHead's (adapters/segmentation.py: `class_labels`, `class_loss`,
`argmax_labels`): cross-entropy, mean over the real spacepoints with a label (PID reads batch["pid"],
-1 none; noise tagging batch["noise"] as 0/1); with class weights w (C,) the weighted mean sum_i w_{y_i} CE_i /
sum_i w_{y_i}, spacepoints of a class of weight 0 left out; prediction the argmax class, -1 on padding.

Choices where the paper says nothing, and deviations:

- "an MLP with 2 hidden layers and 256 hidden features" is read as Exa.TrkX's make_mlp(5, [256, 256]) (the code the
  paper adapted): two Linear layers of 256 outputs; the classifier as make_mlp(256, [128, 64, C]). The other
  reading, three Linear layers 5 -> 256 -> 256 -> 256, would count 962,565 parameters for PID (+5.8 %);
- ReLU between the SAGEConv layers (none after the last: the classifier's first Linear follows), and residual
  connections h + ReLU(SAGEConv(h)) (option `residual`, default on; the paper names none): measured on the tests'
  batches (tests/test_baseline_gnn.py, same seeds), 50 Adam steps on a fixed batch take the loss to 0.44 (PID) and
  0.42 (noise) of its start with them, 0.83 and 0.87 without; the hand-built noise rule (k 16, 200 steps) is learned
  to accuracy 0.98 with them, 0.91 without. No dropout or normalization (the paper names none);
- the graph: on the CPU built with cKDTree (graphs.knn_edges_tree), on another device by brute force
  (graphs.knn_edges): the same edge set; benchmarks/bench_graphs.py measured the tree 1.5x faster on 2 CPU
  cores (the demo's test events, 492 hits on average, and simulated events of 1,000). k = 50 caps the edges (16
  events x 1,000 hits: at most 800,000);
- the convolutions aggregate through a sparse CSR adjacency (one sparse-dense product per layer, `adjacency`)
  instead of PyG's per-edge messages, which would hold an (E, 256) tensor (800 MB at 800,000 edges): the same
  result (a test compares them), about 5x faster on 2 CPU cores (6 layers forward + backward on 16 x 1,000 hits:
  3.0 s against 13-15 s). A training step (Adam) on 16 events of 1,000 hits: about 2 s on 2 CPU cores, the graph
  0.2 s of it.

Parameters with the default options (the paper's Table 5: 0.91M): 896,773 for PID (5 classes), 896,578 for noise
(2 classes), -1.5 %:

    encoder 67,328    6 x SAGEConv 787,968 (131,328 each)    classifier 41,152 + 65 C

torch_geometric is imported when a model is built (`import torch_geometric` takes seconds).

    model = SageGNN("pid")
    outputs = model(batch["features"], batch["mask"])
    loss = model.loss(outputs, batch, class_weight=None)
    labels = model.predict(outputs, batch["mask"])          # (B, S) int64, -1 on padding
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from fm4npp_data.errors import TrainError, require
from fm4npp_data.tasks import NOISE, PID, TASKS

from ..adapters.segmentation import argmax_labels, class_labels, class_loss
from ..checkpoints.run import BOOL, POSITIVE, POSITIVE_NUMBER, check_options
from .graphs import flat_nodes, hit_features, knn_edges, knn_edges_tree

N_FEATURES = 5  # hit_features: E', eta_hat, cos phi, sin phi, r_hat

#: Every option, its kind (checkpoints.run), and its default (the paper's setting; `residual`: ours).
OPTIONS = {"k": POSITIVE, "max_distance": POSITIVE_NUMBER, "width": POSITIVE, "n_layers": POSITIVE, "residual": BOOL}
DEFAULTS = {"k": 50, "max_distance": 1.0, "width": 256, "n_layers": 6, "residual": True}


# -- the graph -----------------------------------------------------------------------------------------------------


def knn_graph(points: torch.Tensor, offsets: torch.Tensor, k: int, max_distance: float) -> torch.Tensor:
    """graphs.knn_edges on points (N, D) per event (offsets (B+1,)): cKDTree on the CPU, brute force elsewhere."""
    if points.device.type != "cpu":
        return knn_edges(points, offsets, k, max_distance)
    edges = knn_edges_tree(points.detach().numpy(), offsets.numpy(), k, max_distance)
    return torch.from_numpy(edges)


def adjacency(edges: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The (n, n) sparse CSR matrix A of ones with A[i, j] = 1 for each edge j -> i (rows: targets; PyG's adj_t),
    which SAGEConv aggregates with: mean_j h_j = (A h)_i / deg_i."""
    source, target = edges
    order = torch.argsort(target, stable=True)
    rows = torch.zeros(n + 1, dtype=torch.int64, device=edges.device)
    rows[1:] = torch.cumsum(torch.bincount(target, minlength=n), 0)
    ones = torch.ones(edges.shape[1], dtype=dtype, device=edges.device)
    with warnings.catch_warnings():  # torch warns once that sparse CSR tensors are "in beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(rows, source[order], ones, (n, n), check_invariants=False)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive sizes, ReLU between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def sage_conv_class() -> type[nn.Module]:
    """torch_geometric's SAGEConv (its import warns that torch.jit.script is deprecated: silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return require("torch_geometric.nn", "models", "the SAGEConv GNN (--model gnn)").SAGEConv


# -- the model -----------------------------------------------------------------------------------------------------


class SageGNN(nn.Module):
    """features (B, S, 4), mask (B, S) -> {"logits": (B, S, C)} (module docstring)."""

    name = "gnn"
    tasks = (PID.name, NOISE.name)
    stages = ("train",)
    OPTIONS = OPTIONS

    def __init__(self, task: str = PID.name, **options) -> None:
        super().__init__()
        if task not in self.tasks:
            raise TrainError(f"the {self.name} baseline serves {' and '.join(self.tasks)}, not {task!r}")
        check_options(options, OPTIONS, self.name)
        self.options = o = {**DEFAULTS, **options}
        self.task, self.column = task, TASKS[task].column
        self.n_classes = len(TASKS[task].classes)
        width = o["width"]
        SAGEConv = sage_conv_class()
        self.encoder = mlp([N_FEATURES, width, width])
        self.convs = nn.ModuleList(SAGEConv(width, width) for _ in range(o["n_layers"]))
        self.classifier = mlp([width, 128, 64, self.n_classes])

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        o = self.options
        nodes = flat_nodes(mask)
        x = hit_features(features.float(), mask)  # (N, 5)
        edges = knn_graph(x[:, 1:], nodes.offsets, o["k"], o["max_distance"])
        adj = adjacency(edges, len(x), x.dtype)
        h = self.encoder(x)
        for i, conv in enumerate(self.convs):
            out = conv(h, adj)
            if i < len(self.convs) - 1:
                out = F.relu(out)
            h = h + out if o["residual"] else out
        return {"logits": nodes.to_padded(self.classifier(h))}

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """SegmentationHead's loss (class_loss) on the task's labels; class_weight (C,) or None."""
        labels, valid = class_labels(batch, self.column)
        return class_loss(outputs["logits"], labels, valid, class_weight)

    def predict(self, outputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S) int64: the argmax class, -1 on padding."""
        return argmax_labels(outputs["logits"], mask)


__all__ = [
    "DEFAULTS",
    "OPTIONS",
    "SageGNN",
    "adjacency",
    "knn_graph",
    "sage_conv_class",
]
