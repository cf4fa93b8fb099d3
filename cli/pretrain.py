"""`fm4npp pretrain`: the foundation model's k-next-nearest-neighbour pretraining on a dataset repository."""

from __future__ import annotations

import click
from fm4npp_cli.common import AT_LEAST_0, AT_LEAST_1, NON_NEGATIVE, POSITIVE, RATE

from fm4npp_data.errors import require
from fm4npp_models.model.config import PHI_CONVENTIONS
from fm4npp_models.training.options import PretrainOptions

#: The defaults, the library's (fm4npp_models.training.options: no torch, so --help needs none).
PRETRAIN = PretrainOptions()


@click.command("pretrain")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Dataset repository (fm4npp-data build); its pretrain configuration is used.",
)
@click.option("--model", default=PRETRAIN.model, show_default=True, help="Size: tiny, m1 .. m6 (fm4npp models).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--steps", type=AT_LEAST_1, default=PRETRAIN.steps, show_default=True, help="Optimizer steps.")
@click.option(
    "--batch-tokens",
    type=AT_LEAST_1,
    default=PRETRAIN.batch_tokens,
    show_default=True,
    help="Padded spacepoints per batch (B x S) on each process.",
)
@click.option(
    "--lr",
    type=POSITIVE,
    default=PRETRAIN.lr,
    show_default=True,
    help="Peak learning rate (μP: the rate of the base width 256; the paper's 2e-4).",
)
@click.option(
    "--warmup", type=AT_LEAST_0, default=PRETRAIN.warmup, help="Linear warmup steps [default: a tenth of --steps]."
)
@click.option(
    "--k",
    type=AT_LEAST_1,
    default=PRETRAIN.k,
    show_default=True,
    help="Neighbours predicted per spacepoint (the paper's 10; the released checkpoints used 30).",
)
@click.option("--dropout", type=RATE, default=PRETRAIN.dropout, show_default=True)
@click.option("--weight-decay", type=NON_NEGATIVE, default=PRETRAIN.weight_decay, show_default=True)
@click.option("--clip", type=POSITIVE, default=PRETRAIN.clip, show_default=True, help="Gradient-norm clip.")
@click.option(
    "--val-every",
    type=AT_LEAST_1,
    default=PRETRAIN.val_every,
    show_default=True,
    help="Validate (and checkpoint) every this many steps.",
)
@click.option(
    "--phi",
    type=click.Choice(PHI_CONVENTIONS),
    default=PRETRAIN.phi,
    show_default=True,
    help="How the periodic azimuth enters the input and the neighbour targets: wrapped (published: a neighbour "
    "across phi = +-pi is a target about 1 away), unwrapped (targets moved to the image nearest the spacepoint), "
    "circular ((cos, sin) in the input and the targets).",
)
@click.option("--no-mup", is_flag=True, help="Standard parameterization instead of μP.")
@click.option("--seed", type=AT_LEAST_0, default=PRETRAIN.seed, show_default=True)
@click.option("--workers", type=AT_LEAST_0, default=PRETRAIN.workers, show_default=True, help="Loader workers.")
@click.option(
    "--device", default=PRETRAIN.device, show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:1 ..."
)
@click.option("--resume", is_flag=True, help="Go on from the run's last checkpoint (same settings).")
def pretrain(
    data,
    model,
    out,
    steps,
    batch_tokens,
    lr,
    warmup,
    k,
    dropout,
    weight_decay,
    clip,
    val_every,
    phi,
    no_mup,
    seed,
    workers,
    device,
    resume,
) -> None:
    """Pretrain a backbone on DATA's pretrain configuration (validation on its pretrain validation split).

    Writes OUT/config.json and OUT/model.safetensors (the run: fm4npp_models.Backbone.from_run), a checkpoint to
    resume from, OUT/log.csv and OUT/loss.png. Under torchrun every process trains on its share of the data."""
    require("torch", "models", "fm4npp pretrain")
    from fm4npp_models.pretrain import pretrain as run_pretraining

    options = PretrainOptions(
        steps=steps,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        clip=clip,
        val_every=val_every,
        seed=seed,
        device=device,
        model=model,
        k=k,
        batch_tokens=batch_tokens,
        dropout=dropout,
        mup=not no_mup,
        workers=workers,
        phi=phi,
    )
    summary = run_pretraining(data, out, options, resume=resume, echo=click.echo)  # Ctrl-C, SIGTERM: checkpoint, stop
    if summary["world_size"] == 1 or _is_main():
        _print_summary(summary)
    if summary["interrupted"]:
        raise SystemExit(130)


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def _print_summary(s: dict) -> None:
    click.echo(
        f"{s['run']}: {s['step']} of {s['steps']} steps, {s['events']:,} events, {s['tokens']:,} spacepoints "
        f"in {s['elapsed_s']:.0f} s ({s['tokens_per_s']:,.0f} spacepoints/s on {s['world_size']} x "
        f"{s['device']}); {s['parameters']:,} parameters"
    )
    if s["val_loss"] is not None:
        periodic = s["periodic_loss"]
        click.echo(
            f"validation loss {s['val_loss']:.5f} (phi {s['phi']}); with phi compared on the circle "
            f"{periodic:.5f}, against {s['own_loss']:.5f} for each spacepoint's own position (ratio "
            f"{_ratio(periodic, s['own_loss'])}) and {s['offset_loss']:.5f} for the own position plus the mean "
            f"offset of each neighbour rank (ratio {_ratio(periodic, s['offset_loss'])})"
        )
    if s["plot"]:
        click.echo(f"wrote {s['plot']}")
