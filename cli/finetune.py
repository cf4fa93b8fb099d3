"""`fm4npp finetune` and `fm4npp predict`: the downstream heads on the frozen backbone (or AdapterOnly), and the
predictions file the leaderboard scores."""

from __future__ import annotations

import json

import click
from fm4npp_cli.common import AT_LEAST_0, AT_LEAST_1, NON_NEGATIVE, POSITIVE

from fm4npp_data.errors import require
from fm4npp_data.tasks import TASKS, TRACKING
from fm4npp_models.model.config import FEATURE_KINDS
from fm4npp_models.training.options import (
    ADAPTER_ONLY,
    CLASS_WEIGHTS,
    DEFAULT_FEATURES,
    FM,
    MODEL_NAMES,
    MODELS,
    FinetuneOptions,
    PredictOptions,
)

#: The defaults, the library's (fm4npp_models.training.options: no torch, so --help needs none).
FINETUNE, PREDICT = FinetuneOptions(), PredictOptions()


@click.command("finetune")
@click.option("--task", required=True, type=click.Choice(list(TASKS)))
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Dataset repository; its labeled configuration is used (train; validation for model selection).",
)
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default=None,
    help="fm: the head on the frozen --backbone; adapter-only: the same head alone (as --backbone none); exatrkx, "
    "eggnet (tracking), gnn (pid, noise): the paper's graph baselines, which read the spacepoints "
    "[default: fm with --backbone RUN, adapter-only with --backbone none].",
)
@click.option(
    "--backbone",
    default=None,
    help="A run folder (fm4npp pretrain / import-checkpoint) for --model fm, or 'none': the AdapterOnly baseline.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--steps", type=AT_LEAST_1, default=FINETUNE.steps, show_default=True)
@click.option("--batch-tokens", type=AT_LEAST_1, default=FINETUNE.batch_tokens, show_default=True)
@click.option(
    "--lr",
    type=POSITIVE,
    default=FINETUNE.lr,
    help="Peak learning rate [default: the published head's: 1e-4 tracking, 1e-3 PID and noise].",
)
@click.option(
    "--warmup", type=AT_LEAST_0, default=FINETUNE.warmup, help="Linear warmup steps [default: a tenth of --steps]."
)
@click.option("--weight-decay", type=NON_NEGATIVE, default=FINETUNE.weight_decay, show_default=True)
@click.option("--clip", type=POSITIVE, default=FINETUNE.clip, show_default=True, help="Gradient-norm clip.")
@click.option("--val-every", type=AT_LEAST_1, default=FINETUNE.val_every, show_default=True)
@click.option(
    "--queries", type=AT_LEAST_1, default=None, help="Track finder queries (tracking) [default: 150, published]."
)
@click.option(
    "--train-events",
    type=AT_LEAST_1,
    default=FINETUNE.train_events,
    help="Train on the first N events of the train split.",
)
@click.option(
    "--class-weights",
    type=click.Choice(CLASS_WEIGHTS),
    default=FINETUNE.class_weights,
    show_default=True,
    help="PID and noise: balanced: inverse-frequency weights from the labeled train split's counts (a departure "
    "from the published heads, which use none); capped: the same, no weight above 10; none: plain cross entropy.",
)
@click.option(
    "--features",
    type=click.Choice(FEATURE_KINDS),
    default=None,
    help="What a head on the backbone reads: z: the blocks' outputs z_l (published); x: the residual stream "
    f"x_0..x_L; both: the two, z then x [default: {DEFAULT_FEATURES}].",
)
@click.option(
    "--option",
    "options_given",
    multiple=True,
    metavar="KEY=VALUE",
    help="A model option (repeatable; VALUE read as JSON, else a string), e.g. --option embedding_hidden=256 for "
    "exatrkx: the constructor options of the head or graph baseline, recorded in the run's config.",
)
@click.option("--seed", type=AT_LEAST_0, default=FINETUNE.seed, show_default=True)
@click.option("--workers", type=AT_LEAST_0, default=FINETUNE.workers, show_default=True, help="Loader workers.")
@click.option("--device", default=FINETUNE.device, show_default=True)
@click.option("--resume", is_flag=True, help="Go on from the run's last checkpoint (same settings).")
def finetune(
    task,
    data,
    model,
    backbone,
    out,
    steps,
    batch_tokens,
    lr,
    warmup,
    weight_decay,
    clip,
    val_every,
    queries,
    train_events,
    class_weights,
    features,
    options_given,
    seed,
    workers,
    device,
    resume,
) -> None:
    """Train the TASK head on DATA's labeled train split, the backbone frozen; select on the validation split.

    Writes OUT/config.json and OUT/model.safetensors (the selected weights, backbone included), a checkpoint to
    resume from, OUT/log.csv and OUT/loss.png."""
    require("torch", "models", "fm4npp finetune")
    from fm4npp_models.finetune import finetune as run_finetune

    options = FinetuneOptions(
        steps=steps,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        clip=clip,
        val_every=val_every,
        seed=seed,
        device=device,
        batch_tokens=batch_tokens,
        train_events=train_events,
        workers=workers,
        class_weights=class_weights,
    )
    if backbone == "none":
        backbone = None
        if model not in (None, ADAPTER_ONLY):
            raise click.UsageError(f"--backbone none is --model {ADAPTER_ONLY}, not --model {model}")
        model = ADAPTER_ONLY
    model = model or (FM if backbone is not None else None)
    if model is None:
        raise click.UsageError("give --backbone RUN (the FM's head), --backbone none (AdapterOnly) or a --model")
    if model == FM and backbone is None:
        raise click.UsageError("--model fm trains a head on a backbone: give --backbone RUN")
    if model != FM and backbone is not None:
        raise click.UsageError(f"--model {model} reads the spacepoints: give no --backbone")
    head = {"n_queries": queries} if queries is not None else {}
    head.update(parse_options(options_given))
    if queries is not None and (task != TRACKING.name or model not in (FM, ADAPTER_ONLY)):
        raise click.UsageError(
            f"--queries is an option of the track finder (--task {TRACKING.name}, --model fm or {ADAPTER_ONLY})"
        )
    if features is not None:
        if model != FM:
            raise click.UsageError(
                f"--features is an option of a head on a backbone; {MODEL_NAMES[model]} reads the spacepoints"
            )
        head["features"] = features
    s = run_finetune(
        task,
        data,
        out,
        backbone,
        options,
        head_options=head,
        resume=resume,
        echo=click.echo,
        model=model,
    )
    model = MODEL_NAMES[s["model"]] if s["backbone"] is None else f"head on {s['backbone']} (features {s['features']})"
    click.echo(
        f"{s['run']}: {s['task']} ({model}), {s['step']} of {s['steps']} steps on {s['train_events']:,} "
        f"training events in {s['elapsed_s']:.0f} s; {s['trainable']:,} trainable parameters"
    )
    weighting = s["class_weights"]
    if weighting["class_counts"] is not None:
        weights = "; weights " + ", ".join(f"{w:.3g}" for w in weighting["weights"]) if weighting["weights"] else ""
        click.echo(
            f"class weights {weighting['class_weights']}: training labels per class "
            f"{', '.join(f'{n:,}' for n in weighting['class_counts'])}{weights}"
        )
    if s["val_loss"] is not None:
        accuracy = f", accuracy {s['val_accuracy']:.4f}" if s["val_accuracy"] is not None else ""
        if s["val_macro_recall"] is not None:
            accuracy += f", macro recall {s['val_macro_recall']:.4f}"
        click.echo(f"validation loss {s['val_loss']:.5f} (best {s['best_val_loss']:.5f}, kept){accuracy}")
    else:
        click.echo("no validation yet: no model selected; go on with --resume")
    if s["plot"]:
        click.echo(f"wrote {s['plot']}")
    if s["interrupted"]:
        raise SystemExit(130)


def parse_options(given: tuple[str, ...]) -> dict:
    """--option KEY=VALUE pairs -> {KEY: VALUE read as JSON (a number, true, ...), else the string}."""
    options = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--option {item!r}: give KEY=VALUE, e.g. --option embedding_hidden=256")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@click.command("predict")
@click.option(
    "--run",
    "runs",
    required=True,
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A run of fm4npp finetune; repeat it for more tasks (one run per task).",
)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset repository.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions file (.parquet).")
@click.option("--batch-tokens", type=AT_LEAST_1, default=PREDICT.batch_tokens, show_default=True)
@click.option("--device", default=PREDICT.device, show_default=True)
def predict(runs, data, split, out, batch_tokens, device) -> None:
    """Write the predictions file of RUNs on the labeled SPLIT of DATA (the leaderboard's input)."""
    require("torch", "models", "fm4npp predict")
    from fm4npp_models.predict import predict as run_predict

    s = run_predict(list(runs), data, split, out, batch_tokens, device, echo=click.echo)
    click.echo(f"wrote {s['out']}: {s['events']:,} events, columns {', '.join(s['columns'])}")
