"""Exa.TrkX: metric-learning embedding, edge filter and Interaction-Network edge classifier (the paper's appendix C,
"Adapt Exa.TrkX Pipeline"; Ju et al. 2021), trained stage after stage.

Per event, on the flat real spacepoints (graphs.py; events are never linked):

    x = hit_features(features, mask)                  (N, 5)   E', eta_hat, cos phi, sin phi, r_hat
    z = Embedding(x)                                  (N, 8)   MLP 5 -> 1024 x4 -> 8 (Linear, LayerNorm, Tanh)
    edges = radius graph of z, |z_i - z_j| < 2.0      (2, E)   each node's nearest max_neighbours (64) within it,
                                                               every pair once, oriented inner -> outer (r_hat)
    f = Filter([a_i, a_j, 10 (a_i - a_j)])            (E,)     a = [x, z]; MLP 39 -> 512 x3 -> 1 (LayerNorm, Tanh)
    kept = edges with sigmoid(f) > filter_cut 0.675
    s = InteractionNetwork(x, kept)                   (E',)    hidden 128, 8 message-passing rounds
    tracks = connected components of the kept edges with sigmoid(s) > edge_cut 0.9 (components < 2 hits: -1)

Stages (`set_stage`, trained in this order; only that stage's parameters are trainable, the others frozen):

    embedding   forward: z and the training pairs; loss: the hinge loss below
    filter      forward: the radius graph of the frozen z and the filter logits; loss: BCE vs same track
    gnn         forward: the whole pipeline (what `predict` reads); loss: BCE of the IN's logits vs same track

A new model runs the whole pipeline (stage "gnn") with every parameter trainable. `predict` uses the last edge
scores the outputs hold: the GNN's (edge_cut), else the filter's (filter_cut), else (stage "embedding") the radius
graph itself, so a partly trained model still predicts, if poorly.

Embedding loss (Exa.TrkX's metric learning; the paper treats every same-track pair as connected): with d = |z_i - z_j|
on the pairs of an event,

    loss = mean_negatives max(0, margin - d)^2 + mean_positives d^2

over the pairs: `random_pairs` (2) random partners per hit, the hard negatives (its `hard_negatives` (50) nearest
hits in the current, detached embedding within the margin) and the same-track pairs (all, or `max_true_pairs`
(10,000) per event drawn at random), labelled by graphs.same_track. Exa.TrkX's positive + negative means, with the
hinge on d rather than on d^2. The margin defaults to the radius (2.0), Exa.TrkX's r_train = margin: every negative
is pushed out of the radius-graph ball and every positive pulled in, so the graph at radius 2.0 is the trained
decision boundary; the paper chose 2.0 for a same-track pair recall above 0.8. The random pairs and the drawn
same-track pairs come from torch's global generator: a run is repeatable under torch.manual_seed.
`pair_recall_purity` measures a graph against the truth (the recall the paper chose its radius by).

Choices where the paper says nothing, and deviations:

- the radius graph is capped at each node's `max_neighbours` nearest (Exa.TrkX also caps its radius graph, with
  knn_max) so that a batch of 16 events of ~1000 hits has at most 16,000 x 64 candidate edges;
- the filter reads the raw features and the embeddings of both hits (Exa.TrkX's filter: in_channels + emb_channels
  of each end; the paper: the two embeddings) and their differences (DIFFERENCE_SCALE), as the Interaction Network's
  edge encoder reads the hits' feature differences besides their encodings; it trains on at most
  `filter_train_edges` (100,000) edges of the batch drawn at random, so that a step's cost stays bounded, and
  classifies all of them in evaluation;
- Tanh after each LayerNorm in the embedding (Exa.TrkX's metric-learning activation) and in the filter;
- the Interaction Network follows Exa.TrkX's InteractionGNN (hidden 128, 8 iterations, 3-layer node and edge MLPs
  with LayerNorm and ReLU, sum_max aggregation, shared across iterations): each undirected edge sends its features to
  both of its hits, the node and edge updates are residual (x + phi(...)), the edge classifier reads
  [x_src, x_dst, e]; no positive-class weight in the BCE;
- a predicted track is a connected component of 2 hits or more (`min_track_size`): the benchmark's metrics already
  ignore predicted tracks of fewer than 3 spacepoints and score -1 as singletons, so a correct pair is kept.

Parameters with the default options (the paper's Table 2: 3.86M; 4.07M here, +5.5 %):

    embedding   3,171,336      filter   549,377      gnn   351,233      total   4,071,946

Cost on CPU (2 threads, default options, a batch of 16 events x 1000 random hits, untrained: the graph at its cap,
630k pairs): one step of stage embedding 8 s, filter 11 s, gnn 32 s (the filter's inference on every pair: most of
it); a trained embedding's graph is smaller.

    model = ExaTrkX("tracking")
    for stage in model.stages:
        model.set_stage(stage)
        ...  # optimizer on the trainable parameters; loss = model.loss(model(features, mask), batch)
    labels = model.predict(model(features, mask), mask)     # (B, S) int64, -1 unassigned and on padding
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fm4npp_data.errors import TrainError
from fm4npp_data.tasks import TRACKING

from ..checkpoints.run import BOOL, POSITIVE, POSITIVE_NUMBER, RATE, check_options
from .graphs import Nodes, connected_components, flat_nodes, hit_features, knn_edges, same_track

N_FEATURES = 5  # hit_features: E', eta_hat, cos phi, sin phi, r_hat
R_HAT = 4  # the column of r_hat, which orients the edges
#: The filter and the Interaction Network's edge encoder also read the differences of an edge's two hits, times
#: DIFFERENCE_SCALE: neighbouring hits differ by about 1e-2 of the features' range, too little for the first layer
#: to pick out of the absolute values in a few hundred steps (on the demo's data, 150 steps of the filter: pair AUC
#: 0.77 without the differences, 0.95 with them).
DIFFERENCE_SCALE = 10.0

#: Every option, its kind (checkpoints.run) and its default (the paper's / Exa.TrkX's setting).
OPTIONS = {
    "embedding_hidden": POSITIVE,
    "embedding_layers": POSITIVE,
    "embedding_dim": POSITIVE,
    "margin": POSITIVE_NUMBER,
    "random_pairs": POSITIVE,
    "hard_negatives": POSITIVE,
    "max_true_pairs": POSITIVE,
    "radius": POSITIVE_NUMBER,
    "max_neighbours": POSITIVE,
    "filter_hidden": POSITIVE,
    "filter_layers": POSITIVE,
    "filter_train_edges": POSITIVE,
    "filter_cut": RATE,
    "gnn_hidden": POSITIVE,
    "gnn_layers": POSITIVE,
    "gnn_iterations": POSITIVE,
    "edge_cut": RATE,
    "min_track_size": POSITIVE,
    "sum_max": BOOL,
}
DEFAULTS = {
    "embedding_hidden": 1024,
    "embedding_layers": 4,
    "embedding_dim": 8,
    "margin": 2.0,
    "random_pairs": 2,
    "hard_negatives": 50,
    "max_true_pairs": 10_000,
    "radius": 2.0,
    "max_neighbours": 64,
    "filter_hidden": 512,
    "filter_layers": 3,
    "filter_train_edges": 100_000,
    "filter_cut": 0.675,
    "gnn_hidden": 128,
    "gnn_layers": 3,
    "gnn_iterations": 8,
    "edge_cut": 0.9,
    "min_track_size": 2,
    "sum_max": True,
}


def mlp(d_in: int, widths: list[int], activation: type[nn.Module], plain_output: bool = False) -> nn.Sequential:
    """Exa.TrkX's make_mlp: Linear -> LayerNorm -> activation for each width; with plain_output, the last Linear
    alone (an embedding or a logit)."""
    layers, d = [], d_in
    for n, width in enumerate(widths):
        layers.append(nn.Linear(d, width))
        if not (plain_output and n == len(widths) - 1):
            layers += [nn.LayerNorm(width), activation()]
        d = width
    return nn.Sequential(*layers)


# -- graphs ------------------------------------------------------------------------------------------------------


def undirected(edges: torch.Tensor, n: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Each pair of `edges` (2, E) once, sorted, oriented from the node of lower `order` (N,) to the higher (ties
    and order None: the lower index first)."""
    a, b = edges
    n = max(n, 1)
    swap = a > b if order is None else (order[a] > order[b]) | ((order[a] == order[b]) & (a > b))
    key = torch.unique(torch.where(swap, b, a) * n + torch.where(swap, a, b))
    return torch.stack([key // n, key % n])


def radius_graph(
    embedding: torch.Tensor, offsets: torch.Tensor, radius: float, max_neighbours: int, order=None
) -> torch.Tensor:
    """The pairs of one event closer than `radius` in the embedding, each node keeping its `max_neighbours` nearest:
    (2, E) int64, each pair once (undirected)."""
    edges = knn_edges(embedding, offsets, k=max_neighbours, max_distance=radius)
    return undirected(edges, embedding.shape[0], order)


def same_track_pairs(track: torch.Tensor, noise: torch.Tensor, offsets: torch.Tensor, cap: int) -> torch.Tensor:
    """The same-track pairs (i < j) of each event, at most `cap` an event (drawn at random): (2, P) int64."""
    parts = [torch.zeros(2, 0, dtype=torch.int64, device=track.device)]
    bounds = offsets.tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        t = track[lo:hi]
        real = (t >= 0) & ~noise[lo:hi]
        same = (t[:, None] == t[None, :]) & real[:, None] & real[None, :]
        i, j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
        if len(i) > cap:
            pick = torch.randperm(len(i), device=i.device)[:cap]
            i, j = i[pick], j[pick]
        parts.append(torch.stack([i, j]) + lo)
    return torch.cat(parts, dim=1)


def random_pairs(nodes: Nodes, per_node: int) -> torch.Tensor:
    """`per_node` random partners of each node in its own event (self pairs dropped): (2, P) int64."""
    counts = nodes.offsets[1:] - nodes.offsets[:-1]
    n = nodes.batch.shape[0]
    node = torch.arange(n, device=nodes.batch.device).repeat(per_node)
    event = nodes.batch.repeat(per_node)
    draw = (torch.rand(node.shape, device=node.device) * counts[event]).long()
    partner = nodes.offsets[event] + torch.minimum(draw, counts[event] - 1)
    keep = partner != node
    return torch.stack([partner[keep], node[keep]])


def pair_recall_purity(edges: torch.Tensor, track: torch.Tensor, noise: torch.Tensor, batch: torch.Tensor) -> dict:
    """How well a graph joins the same-track pairs: edges (2, E) over flat nodes (either or both directions), track
    (N,), noise (N,) and batch (N,) the event of each node. {"recall": joined same-track pairs / same-track pairs,
    "purity": same-track pairs among the graph's pairs, "true_pairs", "pairs", "joined"} (counts of unordered
    pairs; a ratio with nothing to count is nan)."""
    pairs = undirected(edges, track.shape[0])
    joined = int(same_track(track, noise, pairs).sum())
    real = (track >= 0) & ~noise
    _, sizes = torch.unique(torch.stack([batch[real], track[real]]), dim=1, return_counts=True)
    true_pairs = int((sizes * (sizes - 1) // 2).sum())
    n_pairs = pairs.shape[1]
    return {
        "recall": joined / true_pairs if true_pairs else math.nan,
        "purity": joined / n_pairs if n_pairs else math.nan,
        "true_pairs": true_pairs,
        "pairs": n_pairs,
        "joined": joined,
    }


# -- the GNN -----------------------------------------------------------------------------------------------------


class InteractionNetwork(nn.Module):
    """x (N, d_in), edges (2, E) -> (E,) edge logits. Encoders, then `iterations` rounds of the shared node and edge
    networks (residual), then the edge classifier on [x_src, x_dst, e]."""

    def __init__(self, d_in: int, hidden: int, iterations: int, layers: int, sum_max: bool = True) -> None:
        super().__init__()
        self.iterations = iterations
        self.sum_max = sum_max
        widths = [hidden] * layers
        self.node_encoder = mlp(d_in, widths, nn.ReLU)
        self.edge_encoder = mlp(2 * hidden + d_in, widths, nn.ReLU)  # [x_src, x_dst, the hits' differences]
        self.node_network = mlp((3 if sum_max else 2) * hidden, widths, nn.ReLU)  # [x, sum(e), max(e)]
        self.edge_network = mlp(3 * hidden, widths, nn.ReLU)  # [x_src, x_dst, e]
        self.classifier = mlp(3 * hidden, [*widths, 1], nn.ReLU, plain_output=True)

    def aggregate(self, e: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Each edge's features to both of its hits: [sum] or [sum, max] per node (0 for a hit without edges)."""
        ends = torch.cat([dst, src])
        messages = torch.cat([e, e])
        total = e.new_zeros(n, e.shape[1]).index_add(0, ends, messages)
        if not self.sum_max:
            return [total]
        index = ends[:, None].expand_as(messages)
        return [total, e.new_zeros(n, e.shape[1]).scatter_reduce(0, index, messages, "amax", include_self=False)]

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        src, dst = edges
        difference = (x[src] - x[dst]) * DIFFERENCE_SCALE
        x = self.node_encoder(x)
        e = self.edge_encoder(torch.cat([x[src], x[dst], difference], dim=-1))
        for _ in range(self.iterations):
            x = x + self.node_network(torch.cat([x, *self.aggregate(e, src, dst, x.shape[0])], dim=-1))
            e = e + self.edge_network(torch.cat([x[src], x[dst], e], dim=-1))
        return self.classifier(torch.cat([x[src], x[dst], e], dim=-1)).squeeze(-1)


# -- the model ---------------------------------------------------------------------------------------------------


class ExaTrkX(nn.Module):
    """features (B, S, 4), mask (B, S) -> the outputs of the current stage (module docstring)."""

    name = "exatrkx"
    tasks = (TRACKING.name,)
    stages = ("embedding", "filter", "gnn")
    OPTIONS = OPTIONS

    def __init__(self, task: str = TRACKING.name, **options) -> None:
        super().__init__()
        if task not in self.tasks:
            raise TrainError(f"the {self.name} baseline finds tracks only (task {TRACKING.name!r}), not {task!r}")
        check_options(options, OPTIONS, self.name)
        self.options = o = {**DEFAULTS, **options}
        self.embedding = mlp(
            N_FEATURES, [o["embedding_hidden"]] * o["embedding_layers"] + [o["embedding_dim"]], nn.Tanh, True
        )
        self.filter = mlp(
            3 * (N_FEATURES + o["embedding_dim"]), [o["filter_hidden"]] * o["filter_layers"] + [1], nn.Tanh, True
        )
        self.gnn = InteractionNetwork(N_FEATURES, o["gnn_hidden"], o["gnn_iterations"], o["gnn_layers"], o["sum_max"])
        self.stage = self.stages[-1]

    def set_stage(self, stage: str) -> None:
        """Train `stage` next: its parameters trainable, the other stages' frozen; forward computes what its loss
        needs."""
        if stage not in self.stages:
            raise TrainError(f"{self.name}: unknown stage {stage!r}; the stages are {', '.join(self.stages)}")
        self.stage = stage
        for name in self.stages:
            getattr(self, name).requires_grad_(name == stage)

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        o = self.options
        nodes = flat_nodes(mask)
        x = hit_features(features.float(), mask)
        if self.stage == "embedding":
            z = self.embedding(x)
            return {"embedding": z, "pairs": self.training_pairs(z, nodes)}

        with torch.no_grad():
            z = self.embedding(x)
        edges = radius_graph(z, nodes.offsets, o["radius"], o["max_neighbours"], order=x[:, R_HAT])
        if self.stage == "filter" and self.training and edges.shape[1] > o["filter_train_edges"]:
            edges = edges[:, torch.randperm(edges.shape[1], device=edges.device)[: o["filter_train_edges"]]]
        src, dst = edges
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage == "filter"):
            a, b = torch.cat([x[src], z[src]], dim=-1), torch.cat([x[dst], z[dst]], dim=-1)
            filter_logits = self.filter(torch.cat([a, b, (a - b) * DIFFERENCE_SCALE], dim=-1)).squeeze(-1)
        out = {"embedding": z, "edges": edges, "filter_logits": filter_logits}
        if self.stage == "filter":
            return out

        kept = edges[:, torch.sigmoid(filter_logits.detach()) > o["filter_cut"]]
        return {**out, "gnn_edges": kept, "gnn_logits": self.gnn(x, kept)}

    @torch.no_grad()
    def training_pairs(self, z: torch.Tensor, nodes: Nodes) -> torch.Tensor:
        """The embedding stage's random pairs and hard negatives (its nearest hits within the margin): (2, P)."""
        o = self.options
        hard = knn_edges(z, nodes.offsets, k=o["hard_negatives"], max_distance=o["margin"])
        return torch.cat([random_pairs(nodes, o["random_pairs"]), hard], dim=1)

    # -- loss ----------------------------------------------------------------------------------------------------

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        """The current stage's loss (module docstring); class_weight is ignored (tracking)."""
        nodes = flat_nodes(batch["mask"])
        track = batch["track"].reshape(-1)[nodes.index]
        noise = batch["noise"].reshape(-1)[nodes.index].bool()
        if self.stage == "embedding":
            return self.hinge_loss(outputs, track, noise, nodes)
        key = "filter" if self.stage == "filter" else "gnn"
        logits, edges = outputs[f"{key}_logits"], outputs["edges" if key == "filter" else "gnn_edges"]
        if logits.numel() == 0:
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits.float(), same_track(track, noise, edges).float())

    def hinge_loss(self, outputs: dict, track: torch.Tensor, noise: torch.Tensor, nodes: Nodes) -> torch.Tensor:
        """mean over negatives of max(0, margin - d)^2 + mean over positives of d^2."""
        z = outputs["embedding"]
        true = same_track_pairs(track, noise, nodes.offsets, self.options["max_true_pairs"])
        pairs = torch.cat([outputs["pairs"], true], dim=1)
        positive = same_track(track, noise, pairs)
        d2 = (z[pairs[0]] - z[pairs[1]]).pow(2).sum(-1)
        loss = z.sum() * 0.0
        if positive.any():
            loss = loss + d2[positive].mean()
        if (~positive).any():
            d = torch.sqrt(d2[~positive] + 1e-12)
            loss = loss + F.relu(self.options["margin"] - d).pow(2).mean()
        return loss

    # -- predict -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, outputs: dict, mask: torch.Tensor) -> torch.Tensor:
        """(B, S) int64 track labels: the connected components (of min_track_size hits or more; else -1) of the
        edges the latest stage keeps; -1 on padding."""
        o = self.options
        nodes = flat_nodes(mask)
        if "gnn_logits" in outputs:
            edges = outputs["gnn_edges"][:, torch.sigmoid(outputs["gnn_logits"]) > o["edge_cut"]]
        elif "filter_logits" in outputs:
            edges = outputs["edges"][:, torch.sigmoid(outputs["filter_logits"]) > o["filter_cut"]]
        else:
            edges = radius_graph(outputs["embedding"], nodes.offsets, o["radius"], o["max_neighbours"])
        labels = connected_components(nodes.index.shape[0], edges, min_size=o["min_track_size"])
        return nodes.to_padded(torch.from_numpy(labels).to(mask.device), fill=-1)
