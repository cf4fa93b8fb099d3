"""`fm4npp study`: the paper's studies (fm4npp_models.studies): data efficiency (Figure 7), model size (Figure 6) and
the linear probe (Figure 8). Each writes its CSV / JSON, markdown table and figure into --out and prints the table."""

from __future__ import annotations

import click
from fm4npp_cli.common import AT_LEAST_1, POSITIVE, Commands

from fm4npp_data.errors import require
from fm4npp_data.tasks import TASKS, TRACKING
from fm4npp_models.model.config import FEATURE_KINDS, SIZES
from fm4npp_models.studies.options import ProbeOptions, StudyOptions
from fm4npp_models.training.options import BATCH_TOKENS, CLASS_WEIGHTS, FinetuneOptions, PretrainOptions

FINETUNE, PRETRAIN, PROBE = FinetuneOptions(), PretrainOptions(), ProbeOptions()
SPLITS = ("validation", "test")


class CommaList(click.ParamType):
    """A comma-separated list of `choices` (any order, each once); "all" among event counts means the whole split."""

    name = "list"

    def __init__(self, choices=None, counts: bool = False) -> None:
        self.choices, self.counts = choices, counts

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("give at least one value", param, ctx)
        if len(set(items)) < len(items):
            self.fail(f"{value!r} names a value twice", param, ctx)
        if self.counts:
            return [self._count(v, param, ctx) for v in items]
        wrong = [v for v in items if v not in self.choices]
        if wrong:
            self.fail(f"{', '.join(wrong)}: not one of {', '.join(self.choices)}", param, ctx)
        return items

    def _count(self, v: str, param, ctx) -> int | None:
        if v == "all":
            return None
        if not v.isdigit() or int(v) < 1:
            self.fail(f"{v!r} is not a count of events (a whole number >= 1, or 'all')", param, ctx)
        return int(v)


TASK_LIST = CommaList(list(TASKS))
EVENT_COUNTS = CommaList(counts=True)
ALL_TASKS = ",".join(TASKS)


def _finetuning(f):
    """The options of the fine-tuning runs, shared by data-efficiency and model-size."""
    options = [
        click.option("--batch-tokens", type=AT_LEAST_1, default=BATCH_TOKENS, show_default=True),
        click.option("--lr", type=POSITIVE, default=None, help="Heads' peak rate [default: the published head's]."),
        click.option("--val-every", type=AT_LEAST_1, default=FINETUNE.val_every, show_default=True),
        click.option("--queries", type=AT_LEAST_1, default=None, help="Track finder queries [default: 150]."),
        click.option(
            "--class-weights",
            type=click.Choice(CLASS_WEIGHTS),
            default=None,
            help=f"PID and noise loss weights [default: fine-tuning's, {FINETUNE.class_weights}].",
        ),
        click.option(
            "--features",
            type=click.Choice(FEATURE_KINDS),
            default=None,
            help="What the heads on a backbone read of it [default: fine-tuning's].",
        ),
        click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Scored on."),
        click.option("--device", default=FINETUNE.device, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _study_options(steps, batch_tokens, lr, val_every, queries, class_weights, features, split, device):
    return StudyOptions(
        steps=steps,
        batch_tokens=batch_tokens,
        lr=lr,
        val_every=val_every,
        queries=queries,
        class_weights=class_weights,
        features=features,
        split=split,
        device=device,
    )


def _report(summary: dict, *keys: str) -> None:
    click.echo("")
    click.echo(summary["table"])
    click.echo("wrote " + ", ".join(summary[k] for k in keys if summary.get(k)))


@click.group("study", cls=Commands)
def study() -> None:
    """The paper's studies: data efficiency, model size and the linear probe."""


@study.command("data-efficiency")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset repository.")
@click.option(
    "--backbone",
    "backbones",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A backbone run (repeat for more); AdapterOnly is always run beside them.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (resumable).")
@click.option(
    "--events",
    type=EVENT_COUNTS,
    default="30,100,300,all",
    show_default=True,
    help="Labeled train events (the split's first N; 'all').",
)
@click.option("--seeds", type=AT_LEAST_1, default=3, show_default=True, help="Seeds 0 .. N-1 per cell.")
@click.option("--tasks", type=TASK_LIST, default=ALL_TASKS, show_default=True)
@click.option("--steps", type=AT_LEAST_1, default=FINETUNE.steps, show_default=True, help="Steps of each run.")
@_finetuning
def data_efficiency(data, backbones, out, events, seeds, tasks, steps, **finetuning) -> None:
    """Heads trained on the first N labeled events for each N, seed and model (each backbone and AdapterOnly),
    scored on --split: OUT/data-efficiency.csv, .md and .png (Figure 7). Finished runs are skipped on a re-run."""
    require("torch", "models", "fm4npp study")
    from fm4npp_models.studies.data_efficiency import data_efficiency as run

    s = run(data, list(backbones), out, events, seeds, tasks, _study_options(steps, **finetuning), echo=click.echo)
    _report(s, "csv", "markdown", "plot")


@study.command("model-size")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset repository.")
@click.option("--sizes", type=CommaList(list(SIZES)), default="tiny,m1,m2", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (resumable).")
@click.option(
    "--steps", type=AT_LEAST_1, default=PRETRAIN.steps, show_default=True, help="Pretraining steps, each size."
)
@click.option("--k", type=AT_LEAST_1, default=PRETRAIN.k, show_default=True, help="Pretraining neighbours.")
@click.option("--pretrain-lr", type=POSITIVE, default=PRETRAIN.lr, show_default=True, help="μP base rate.")
@click.option("--tasks", "--task", "tasks", type=TASK_LIST, default=TRACKING.name, show_default=True)
@click.option("--events", type=EVENT_COUNTS, default="all", show_default=True, help="Labeled train events: one count.")
@click.option("--seeds", type=AT_LEAST_1, default=1, show_default=True)
@click.option(
    "--finetune-steps", type=AT_LEAST_1, default=FINETUNE.steps, show_default=True, help="Steps of each head."
)
@_finetuning
def model_size(data, sizes, out, steps, k, pretrain_lr, tasks, events, seeds, finetune_steps, **finetuning) -> None:
    """Pretrain each size with the same budget into OUT/pretrain/SIZE, then the heads on each (frozen):
    OUT/model-size.csv, .md and .png (Figure 6). Finished runs are skipped on a re-run."""
    require("torch", "models", "fm4npp study")
    from fm4npp_models.studies.model_size import model_size as run

    if len(events) != 1:
        raise click.BadParameter("give one labeled count", param_hint="--events")
    pretraining = PretrainOptions(
        steps=steps,
        k=k,
        lr=pretrain_lr,
        batch_tokens=finetuning["batch_tokens"],
        val_every=min(PRETRAIN.val_every, steps),
        device=finetuning["device"],
    )
    options = _study_options(finetune_steps, **finetuning)
    s = run(data, sizes, out, pretraining, tasks, events[0], seeds, options, echo=click.echo)
    _report(s, "csv", "runs_csv", "markdown", "plot")


@study.command("probe")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset repository.")
@click.option("--backbone", required=True, type=click.Path(exists=True, file_okay=False), help="A backbone run.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--events", type=AT_LEAST_1, default=PROBE.events, show_default=True, help="Train events the probes fit on."
)
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Scored on.")
@click.option("--eval-events", type=AT_LEAST_1, default=None, help="Score on the split's first N [default: all].")
@click.option("--tasks", type=TASK_LIST, default=ALL_TASKS, show_default=True)
@click.option("--batch-tokens", type=AT_LEAST_1, default=PROBE.batch_tokens, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=PROBE.seed, show_default=True)
@click.option("--max-iter", type=AT_LEAST_1, default=PROBE.max_iter, show_default=True, help="Classifier iterations.")
@click.option("--map-steps", type=AT_LEAST_1, default=PROBE.map_steps, show_default=True, help="Linear map steps.")
@click.option(
    "--features",
    type=click.Choice(FEATURE_KINDS),
    default=PROBE.features,
    show_default=True,
    help="What of the backbone is probed: z (the blocks' outputs, published), x (the residual stream), both.",
)
@click.option("--device", default=PROBE.device, show_default=True)
def probe(data, backbone, out, **options) -> None:
    """Linear probes of the frozen backbone's features against the raw inputs: a linear classifier for PID and
    noise, a linear map trained on track pairs (pair AUC, DBSCAN ARI): OUT/probe.json, .md and .png (Figure 8)."""
    require("torch", "models", "fm4npp study")
    from fm4npp_models.studies.probe import probe as run

    s = run(data, backbone, out, ProbeOptions(**options), echo=click.echo)
    _report(s, "json", "markdown", "plot")
