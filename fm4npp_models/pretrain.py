"""The pretraining objective: predict the k next-nearest neighbours of every spacepoint.

For the spacepoint at position j the model predicts the positions of its k nearest spacepoints at larger r, nearest
first (the `targets` of fm4npp_data.loader), written in the backbone's phi convention (fm4npp_models.model.phi:
[eta', phi', r'] with phi' as stored (published) or moved to the image nearest the spacepoint's own, or
[eta', cos, sin, r']). The loss of an event is the mean, over its real (position, neighbour) pairs, of the squared
distance between predicted and true neighbour (the paper's ||s_hat - y||^2 per neighbour); events are weighted by
their difficulty weight (fm4npp_data.preparation.prepare's difficulty.json: the paper bins events by mean kNN
distance; the published code bins them by point count instead) and averaged over the events that have at least one
neighbour pair.

Validation reports, besides the loss, the same measure with phi compared on the circle for every convention
(`periodic_loss`, comparable between conventions) and two trivial predictions a trained model must beat in it:
`own_loss`, every neighbour at the spacepoint's own position, and `offset_loss`, the own position plus the mean offset
of the neighbours of that rank (1st, 2nd, ..., k-th nearest) over the validation split.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch

from fm4npp_data.errors import TrainError

from .model import phi as phi_convention
from .training.distributed import Dist, all_gather, all_sum, to_device
from .training.options import PretrainOptions


def _per_event(squared: torch.Tensor, target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = target_mask.to(squared.dtype)
    pairs = m.sum(dim=(1, 2))
    return (squared * m).sum(dim=(1, 2)) / pairs.clamp_min(1), pairs > 0


def _weighted_mean(per_event: torch.Tensor, has: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = torch.ones_like(per_event) if weight is None else weight.to(per_event.dtype)
    w = w * has.to(per_event.dtype)
    return (w * per_event).sum() / has.sum().clamp_min(1)


def _float(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """prediction (B, S, n k) as (B, S, k, n), in at least float32 (a bf16 prediction is promoted)."""
    b, s, k, _ = targets.shape
    return prediction.reshape(b, s, k, -1).to(torch.promote_types(prediction.dtype, torch.float32))


def event_losses(
    prediction: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) unweighted per-event losses and (B,) whether the event has a neighbour pair (validation sums these).
    prediction (B, S, n k) and targets (B, S, k, n) in one convention; computed in at least float32."""
    return _per_event((_float(prediction, targets) - targets).pow(2).sum(-1), target_mask)


def neighbour_loss(
    prediction: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """prediction (B, S, n k), targets (B, S, k, n), target_mask (B, S, k), weight (B,) -> a scalar."""
    return _weighted_mean(*event_losses(prediction, targets, target_mask), weight)


def periodic_losses(
    prediction: torch.Tensor, neighbours: torch.Tensor, target_mask: torch.Tensor, phi: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """As event_losses, for a prediction in the convention `phi` against the stored neighbours (B, S, k, 3), with
    phi' compared on the circle: the measure in which conventions compare."""
    errors = phi_convention.periodic_error(_float(prediction, neighbours), neighbours, phi)
    return _per_event(errors, target_mask)


def own_coordinates(features: torch.Tensor, k: int, phi: str = phi_convention.PUBLISHED_PHI) -> torch.Tensor:
    """The prediction (B, S, n k) that puts every neighbour at the spacepoint's own position (in the convention)."""
    return phi_convention.coordinates(features[..., 1:4], phi).repeat(1, 1, k)


def own_coordinates_loss(
    features: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of predicting each spacepoint's own [eta', phi', r'] for all its neighbours (published targets)."""
    return neighbour_loss(own_coordinates(features, targets.shape[2]), targets, target_mask, weight)


def rank_offsets(loader, where: Dist | None = None) -> torch.Tensor:
    """(k, 3): the mean offset [d eta', d phi', d r'] (phi' on the circle) of the neighbours of each rank from their
    spacepoint, over the real pairs of the loader's events on all ranks of `where` (a rank without events, when the
    split has fewer units than ranks, adds nothing)."""
    total = count = None
    for batch in loader:
        own = batch["features"][..., 1:4].unsqueeze(2)
        d = batch["targets"] - own
        d = torch.stack([d[..., 0], phi_convention.wrap(d[..., 1]), d[..., 2]], -1).double()
        m = batch["target_mask"].unsqueeze(-1).double()
        pairs, n = (d * m).sum(dim=(0, 1)), m.sum(dim=(0, 1))
        total, count = (pairs, n) if total is None else (total + pairs, count + n)
    where = where or Dist()
    ranks = [part for part in all_gather(None if total is None else (total, count), where) if part is not None]
    if not ranks:  # one process: its loader is empty; several: every rank's is
        raise TrainError(f"the validation data ({loader!r}) is empty" + (" on every rank" * (where.world_size > 1)))
    total, count = (sum(part[i] for part in ranks) for i in (0, 1))
    return (total / count.clamp_min(1)).float()


def offset_prediction(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The prediction (B, S, 3k) [eta', phi', r'] of each neighbour at the own position plus its rank's mean offset."""
    return (features[..., 1:4].unsqueeze(2) + offsets.to(features)).flatten(2)


# ------------------------------------------------------------------------------------------------------------
# `fm4npp pretrain`: the objective trained on the pretrain configuration of a dataset repository
# ------------------------------------------------------------------------------------------------------------


class NeighbourTask:
    """The task of fm4npp_models.training.loop.fit: the weighted neighbour loss in the backbone's phi convention;
    validation by the plain mean, the periodic measure and the two trivial predictions."""

    def __init__(self, phi: str = phi_convention.PUBLISHED_PHI, where: Dist | None = None) -> None:
        self.phi = phi
        self.where = where or Dist()
        self.offsets: torch.Tensor | None = None  # rank_offsets of the validation split, computed once

    def targets(self, batch: dict) -> torch.Tensor:
        return phi_convention.targets(batch["features"][..., 1:4], batch["targets"], self.phi)

    def loss(self, model, batch: dict) -> torch.Tensor:
        prediction = model(batch["features"], batch["mask"])
        return neighbour_loss(prediction, self.targets(batch), batch["target_mask"], batch["weight"])

    def validate(self, model, loader) -> dict[str, float]:
        """Over the validation split (all ranks), unweighted means per event: the loss, the periodic loss, and the
        own-coordinates and rank-offset predictions' periodic losses."""
        if self.offsets is None:
            self.offsets = rank_offsets(loader, self.where)
        device = next(model.parameters()).device
        sums = torch.zeros(5, dtype=torch.float64)  # loss, periodic, own, offset, events
        for batch in loader:
            batch = to_device(batch, device)
            features, neighbours, pairs = batch["features"], batch["targets"], batch["target_mask"]
            prediction = model(features, batch["mask"])
            loss, has = event_losses(prediction, self.targets(batch), pairs)
            k = neighbours.shape[2]
            parts = [
                loss,
                periodic_losses(prediction, neighbours, pairs, self.phi)[0],
                periodic_losses(own_coordinates(features, k), neighbours, pairs, "wrapped")[0],
                periodic_losses(offset_prediction(features, self.offsets), neighbours, pairs, "wrapped")[0],
            ]
            sums[:4] += torch.stack([(p * has).sum() for p in parts]).double().cpu()
            sums[4] += float(has.sum())
        total, periodic, own, offset, events = all_sum(sums.tolist(), self.where)
        if events == 0:
            raise TrainError(f"the validation data ({loader!r}) has no event with a neighbour pair")
        return {
            "val_loss": total / events,
            "periodic_loss": periodic / events,
            "own_loss": own / events,
            "offset_loss": offset / events,
            "val_events": int(events),
        }


def data_identity(data: str | Path) -> dict:
    """What a resumed run must find again: the repository's splits.json (its sha256 covers every shard's)."""
    splits = Path(data) / "splits.json"
    if not splits.is_file():
        raise TrainError(f"{data}: not a dataset repository (no splits.json); build one with `fm4npp-data build`")
    return {"splits_sha256": hashlib.sha256(splits.read_bytes()).hexdigest()}


def build_model(options: PretrainOptions):
    from .model.backbone import Backbone

    try:
        model = Backbone.of_size(options.model, k=options.k, dropout=options.dropout, phi=options.phi)
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    if options.mup:
        from .model import mup

        mup.mup_init_(model)
    return model


def build_optimizer(model, options: PretrainOptions) -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.95): μP groups when options.mup, else one rate, decay on the weight matrices and none on
    vectors, norms, A_log, D, dt_bias and the depthwise conv (as the μP groups)."""
    if options.mup:
        from .model import mup

        return mup.MuAdamW(mup.param_groups(model, options.lr, options.weight_decay), betas=(0.9, 0.95))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in trainable if p.ndim >= 2 and "conv1d" not in n]  # matrices (as mup: not the conv)
    ids = {id(p) for p in decayed}
    groups = [
        {"params": decayed, "weight_decay": options.weight_decay},
        {"params": [p for _, p in trainable if id(p) not in ids], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.95))


def pretrain(
    data: str | Path,
    out: str | Path,
    options: PretrainOptions,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    echo=print,
) -> dict:
    """Pretrain a backbone of size options.model on the `pretrain` configuration of the repository `data` (train
    split; validation on its validation split, never on labeled data) into the run folder `out`. A summary dict."""
    from fm4npp_data.errors import DatasetError
    from fm4npp_data.loader import make_loader

    from .checkpoints.run import save_run
    from .training.checkpoint import training_run
    from .training.distributed import device_of, distributed, finish
    from .training.log import plot_log
    from .training.loop import fit

    options.check()
    out = Path(out)
    where = distributed()
    device = device_of(options.device, where)
    record = {"options": asdict(options), "data": data_identity(data), "world_size": where.world_size}
    torch.manual_seed(options.seed)
    model = build_model(options).to(device)
    try:
        loaders = [
            make_loader(
                data,
                "pretrain",
                split,
                batch_tokens=options.batch_tokens,
                seed=options.seed,
                rank=where.rank,
                world_size=where.world_size,
                num_workers=options.workers,
                shuffle=split == "train",
                k=options.k,
            )
            for split in ("train", "validation")
        ]
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    optimizer = build_optimizer(model, options)
    torch.manual_seed(options.seed + 1_000_003 * (where.rank + 1))  # each rank its own dropout masks
    trained = model
    if where.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    origin = {
        "trained_by": "fm4npp pretrain",
        "size": options.model,
        "data": str(data),
        **record["data"],
        "steps": options.steps,
        "seed": options.seed,
    }
    say = echo if where.main else (lambda *_: None)
    with training_run(out, resume, record, data, where) as saved:  # the run folder is this run's until it ends
        if resume and saved is None:
            say(f"nothing to resume in {out}: starting from step 0")
        result = fit(
            trained,
            NeighbourTask(options.phi, where),
            optimizer,
            loaders[0],
            loaders[1],
            options,
            out,
            record,
            lambda m: save_run(out, m, origin),
            saved=saved,
            stop_after=stop_after,
            where=where,
            echo=say,
        )
        val = result.progress.val
        plot = (
            plot_log(
                out,
                {
                    "own position (validation)": val.get("own_loss"),
                    "own position + mean offset of the rank (validation)": val.get("offset_loss"),
                },
                f"pretraining {options.model} (k = {options.k}, phi {options.phi})",
            )
            if where.main
            else None
        )
    finish(where)
    return {
        "run": str(out),
        "step": result.progress.step,
        "steps": options.steps,
        "interrupted": result.interrupted,
        "events": result.progress.events,
        "tokens": result.progress.tokens,
        "elapsed_s": result.progress.elapsed_s,
        "tokens_per_s": result.progress.tokens / max(1e-9, result.progress.elapsed_s),
        "val_loss": val.get("val_loss"),
        "periodic_loss": val.get("periodic_loss"),
        "own_loss": val.get("own_loss"),
        "offset_loss": val.get("offset_loss"),
        "phi": options.phi,
        "best_val_loss": result.progress.best_val_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": where.world_size,
        "device": str(device),
        "plot": str(plot) if plot else None,
        "history": result.history,
    }
