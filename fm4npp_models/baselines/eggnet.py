"""EggNet: an evolving-graph GNN that embeds each hit so that DBSCAN groups the hits of a track (tracking).

The paper's adaptation of EggNet (Calafiura et al. 2024) to sPHENIX (appendix C, "Adapt EggNet for sPHENIX
Track-Finding"), on the flat nodes of a padded batch (graphs.flat_nodes; events never linked):

    p = hit_features(features)[:, 1:]               (N, 4)   eta_hat, cos phi, sin phi, r_hat (graphs.hit_features)
    x = [p_i, p_n1(i), p_n2(i)]                      (N, 12)  the hit and its 2 nearest hits of its event in p
    h = encoder(x)                                   (N, 64)
    for t in 1..4:                                   GNN iterations
        edges = kNN_10(decoder(h))                   the 10 nearest hits of the event in the current embedding
        for 1..4:                                    message-passing rounds (networks of iteration t)
            m_ji = edge_t(h_j, h_i)                  edge (j, i): a message from j to i
            h_i = h_i + node_t(h_i, mean_j m_ji)     residual node update
    z = decoder(h)                                   (N, 24)  the output embedding

Every network is an MLP with 2 hidden layers of 64 (SiLU). The encoder and the decoder are shared (the decoder
gives both the embeddings of the 4 kNN graphs and the output); each iteration has its own edge and node networks.
Parameters with the default options: 151,640 (encoder 9,152; decoder 9,880; per iteration edge 16,576 + node
16,576), the paper's 0.16M within 6 %. The kNN graphs are built on detached embeddings (graphs.knn_edges): the
edge set is not differentiated, the messages are. The edge networks apply their first layer to the two ends' node
features before gathering them on the edges (EdgeNetwork: the same function, fewer products).

The input is the paper's 12-D augmented hit, without the energy (as the paper's 12-vector). A hit's neighbours are
the 2 nearest other hits of its event in the 4-D space (graphs.knn_edges, k=2); in an event of fewer than 3 hits the
missing neighbours are the hit itself.

Loss: the hinge loss of margin 1 on the squared Euclidean distance d2 of pairs of hits of one event (Exa.TrkX's
metric-learning convention): d2 for a pair of one track (graphs.same_track), max(0, 1 - d2) for any other pair, the
mean over the positive pairs plus the mean over the negative ones (each 0 without such pairs). The pairs, a bounded
number per hit (at most k + N_RANDOM + N_POSITIVE per hit):

- the k nearest hits in the output embedding (hard negatives, and the near positives),
- N_RANDOM random hits of the hit's event,
- N_POSITIVE random hits of the hit's track (so that far apart hits of a track are pulled together).

Prediction: DBSCAN (scikit-learn, in the "models" extra; eps 1, min_samples 2, the paper's) on each event's embeddings;
its noise (-1) stays -1 (unassigned), as padding.

Cost on CPU (one thread), a batch of 16 events of 1,000 hits: about 6-7 s forward and as long for loss + backward,
about 4.7 GB peak memory (the activations of 16 rounds on 160,000 edges); DBSCAN 0.5 s.

    model = EggNet("tracking")
    outputs = model(batch["features"], batch["mask"])   # {"embedding": (B, S, 24)}, 0 on padding
    loss = model.loss(outputs, batch)
    labels = model.predict(outputs, batch["mask"])      # (B, S) int64

Not reproduced: the paper's training (300 epochs) and its aggregation (not stated: here the mean of the incoming
messages, each hit having min(k, n - 1) of them); the original EggNet's attention.
"""

from __future__ import annotations

import torch
from torch import nn

from fm4npp_data.errors import require
from fm4npp_data.tasks import TRACKING

from ..checkpoints.run import POSITIVE, POSITIVE_NUMBER
from . import graphs

HIDDEN = 64  # the width of the node features and of every MLP's 2 hidden layers
EMBEDDING = 24  # the decoder's output: the embedding of the kNN graphs, the loss and DBSCAN
N_ITERATIONS = 4  # GNN iterations, each on a new kNN graph
N_ROUNDS = 4  # message-passing rounds per iteration
N_NEIGHBOURS = 2  # the input augmentation's nearest hits
MARGIN = 1.0  # the hinge loss's margin (on the distance; on d2 the same threshold)
N_RANDOM = 4  # random pairs per hit in the loss
N_POSITIVE = 4  # sampled same-track pairs per hit in the loss


def mlp(d_in: int, d_out: int, hidden: int = HIDDEN) -> nn.Sequential:
    """An MLP with 2 hidden layers of `hidden` (SiLU)."""
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, d_out)
    )


class EdgeNetwork(nn.Module):
    """The message m_ji = mlp(cat(h_j, h_i)) of each edge (j, i), the first layer split into its source and target
    halves applied per node, then gathered (the same function and parameters; k times fewer products there)."""

    def __init__(self, d: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.source = nn.Linear(d, hidden, bias=False)
        self.target = nn.Linear(d, hidden)
        self.rest = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, d))

    def forward(self, h: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.rest(self.source(h)[source] + self.target(h)[target])


def augment(points: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """points (N, 4), offsets (B+1,) -> (N, 12): each point, then its 2 nearest other points of its event, nearest
    first (the point itself for the missing ones, in an event of fewer than 3 points)."""
    n = points.shape[0]
    source, target = graphs.knn_edges(points, offsets, k=N_NEIGHBOURS)  # grouped by target, nearest first
    counts = torch.bincount(target, minlength=n)
    rank = torch.arange(target.numel(), device=points.device) - (torch.cumsum(counts, 0) - counts)[target]
    neighbours = torch.arange(n, device=points.device)[:, None].repeat(1, N_NEIGHBOURS)
    neighbours[target, rank] = source
    return torch.cat([points, *(points[neighbours[:, j]] for j in range(N_NEIGHBOURS))], dim=1)


def mean_messages(messages: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    """The mean of the messages (E, D) into each of n nodes (0 for a node without any)."""
    total = messages.new_zeros(n, messages.shape[1]).index_add_(0, target, messages)
    count = torch.bincount(target, minlength=n).clamp(min=1).to(messages.dtype)
    return total / count[:, None]


def random_pairs(nodes: graphs.Nodes, per_node: int) -> torch.Tensor:
    """(2, E) pairs (random hit of the event, hit): per_node draws per hit, pairs of a hit with itself dropped."""
    n = nodes.index.numel()
    device = nodes.index.device
    start = nodes.offsets[nodes.batch]
    size = (nodes.offsets[1:] - nodes.offsets[:-1])[nodes.batch]
    partner = start[:, None] + (torch.rand(n, per_node, device=device) * size[:, None]).long()
    pairs = torch.stack([partner.reshape(-1), torch.arange(n, device=device).repeat_interleave(per_node)])
    return pairs[:, pairs[0] != pairs[1]]


def track_pairs(track: torch.Tensor, noise: torch.Tensor, batch: torch.Tensor, per_node: int) -> torch.Tensor:
    """(2, E) pairs (random hit of the same track and event, hit) for each hit on a track (track >= 0, not noise):
    per_node draws per hit, pairs of a hit with itself dropped."""
    hits = torch.nonzero((track >= 0) & ~noise, as_tuple=False).squeeze(1)
    if hits.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.int64, device=track.device)
    key = batch[hits] * (int(track.max()) + 1) + track[hits]
    order = torch.argsort(key, stable=True)
    hits, key = hits[order], key[order]
    _, size = torch.unique_consecutive(key, return_counts=True)
    start = torch.cumsum(size, 0) - size
    group = torch.repeat_interleave(torch.arange(size.numel(), device=track.device), size)
    draw = (torch.rand(hits.numel(), per_node, device=track.device) * size[group][:, None]).long()
    partner = hits[start[group][:, None] + draw]
    pairs = torch.stack([partner.reshape(-1), hits.repeat_interleave(per_node)])
    return pairs[:, pairs[0] != pairs[1]]


def mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """The mean of values, 0 (in the graph) when there are none."""
    return values.mean() if values.numel() else values.sum()


class EggNet(nn.Module):
    """features (B, S, 4), mask (B, S) -> {"embedding": (B, S, 24)}; loss: hinge on hit pairs; predict: DBSCAN."""

    name = "eggnet"
    tasks = (TRACKING.name,)
    stages = ("train",)
    OPTIONS = {"k": POSITIVE, "eps": POSITIVE_NUMBER, "min_samples": POSITIVE}

    def __init__(self, task: str = TRACKING.name, k: int = 10, eps: float = 1.0, min_samples: int = 2) -> None:
        super().__init__()
        if task not in self.tasks:
            raise ValueError(f"EggNet serves the task {TRACKING.name}, not {task!r}")
        self.task = task
        self.k, self.eps, self.min_samples = k, eps, min_samples
        self.dbscan = require("sklearn.cluster", "models", "EggNet's DBSCAN (--model eggnet)").DBSCAN
        self.encoder = mlp(4 * (1 + N_NEIGHBOURS), HIDDEN)
        self.edge_nets = nn.ModuleList(EdgeNetwork(HIDDEN) for _ in range(N_ITERATIONS))
        self.node_nets = nn.ModuleList(mlp(2 * HIDDEN, HIDDEN) for _ in range(N_ITERATIONS))
        self.decoder = mlp(HIDDEN, EMBEDDING)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        nodes = graphs.flat_nodes(mask)
        n = nodes.index.numel()
        x = augment(graphs.hit_features(features, mask)[:, 1:], nodes.offsets)
        h = self.encoder(x)
        for edge_net, node_net in zip(self.edge_nets, self.node_nets, strict=True):
            with torch.no_grad():
                source, target = graphs.knn_edges(self.decoder(h), nodes.offsets, self.k)
            for _ in range(N_ROUNDS):
                messages = edge_net(h, source, target)
                h = h + node_net(torch.cat([h, mean_messages(messages, target, n)], dim=-1))
        return {"embedding": nodes.to_padded(self.decoder(h))}

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The hinge loss (module docstring) on the kNN, random and same-track pairs; class_weight is ignored."""
        del class_weight  # tracking: no classes
        nodes = graphs.flat_nodes(batch["mask"])
        z = outputs["embedding"].reshape(-1, EMBEDDING)[nodes.index].float()
        track = batch["track"].reshape(-1)[nodes.index]
        noise = batch["noise"].reshape(-1)[nodes.index].bool()
        pairs = torch.cat(
            [
                graphs.knn_edges(z, nodes.offsets, self.k),
                random_pairs(nodes, N_RANDOM),
                track_pairs(track, noise, nodes.batch, N_POSITIVE),
            ],
            dim=1,
        )
        d2 = (z[pairs[0]] - z[pairs[1]]).pow(2).sum(-1)
        positive = graphs.same_track(track, noise, pairs)
        return mean_or_zero(d2[positive]) + mean_or_zero((MARGIN**2 - d2[~positive]).clamp(min=0))

    @torch.no_grad()
    def predict(self, outputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S) int64: DBSCAN's cluster of each hit in its event's embedding, -1 unassigned and on padding."""
        z = outputs["embedding"]
        mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device) if mask is None else mask
        labels = torch.full(mask.shape, -1, dtype=torch.int64)
        for b in range(mask.shape[0]):  # one DBSCAN per event
            real = mask[b].cpu()
            if real.any():
                points = z[b][mask[b]].float().cpu().numpy()
                found = self.dbscan(eps=self.eps, min_samples=self.min_samples).fit_predict(points)
                labels[b, real] = torch.from_numpy(found).long()
        return labels.to(mask.device)
