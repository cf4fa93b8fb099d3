"""`fm4npp-data`: data commands. Thin: parse, call fm4npp_data, print.

Defaults come from the library's options (SimulateOptions, ConvertOptions, ImportOptions, PrepareOptions,
BuildOptions), never repeated here.
Every error a user can meet (fm4npp_data.errors.Fm4nppError) takes one path: `Error: <message>` and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from fm4npp_cli.common import Commands, fail
from fm4npp_cli.figures import display, stats
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fm4npp_data.conversion.convert import ConvertOptions
from fm4npp_data.conversion.release import ImportOptions
from fm4npp_data.errors import Fm4nppError
from fm4npp_data.kernels.raster import ORDERS
from fm4npp_data.labels import PID_CLASSES
from fm4npp_data.preparation.prepare import KNN_VARIANTS, PrepareOptions
from fm4npp_data.repo.build import BuildOptions
from fm4npp_data.simulation import TRIGGERS, SimulateOptions

console = Console(stderr=True)
SIMULATE = SimulateOptions()
CONVERT = ConvertOptions()
IMPORT = ImportOptions()
PREPARE = PrepareOptions()
BUILD = BuildOptions()


def exit_on_errors(errors: list[str]) -> None:
    """After the good inputs finished: report each bad one, and exit 2 if there was any."""
    for error in errors:
        click.echo(f"Error: {error}", err=True)
    if errors:
        sys.exit(2)


def progress_bar(name: str, unit: str) -> Progress:
    """A progress bar on stderr, shown only on a terminal."""
    columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn()]
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def percent(fractions: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in fractions.items())


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fm4npp")
def main() -> None:
    """fm4npp data toolkit: simulate, convert and prepare sPHENIX TPC data."""


@main.command()
@click.option("--events", "n_events", type=int, required=True, help="Number of p+p collisions to simulate.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New (or empty) output directory.")
@click.option("--seed", type=int, default=SIMULATE.seed, show_default=True, help="Random seed (non-negative).")
@click.option(
    "--layout",
    default=SIMULATE.layout,
    show_default=True,
    help="ROOT layout to write: svtx-evaluator (with truth) or trkr-ntuplizer (recorded-data layout, no truth; "
    "its run number is 1 + seed).",
)
@click.option(
    "--events-per-file", type=int, default=SIMULATE.events_per_file, show_default=True, help="Events per file."
)
@click.option("--workers", type=int, default=SIMULATE.workers, show_default=True, help="Parallel processes.")
@click.option("--scheduler", default=None, help="Address of a Dask distributed scheduler (tcp://host:8786).")
@click.option(
    "--trigger",
    type=click.Choice(TRIGGERS),
    default=SIMULATE.trigger,
    show_default=True,
    help="Event selection: mbd, the sPHENIX minimum-bias trigger (a charged particle in 3.51 < |eta| < 4.61 on "
    "each side); none keeps every generated collision, diffractive ones without a TPC spacepoint included.",
)
@click.option(
    "--pileup",
    type=float,
    default=SIMULATE.pileup,
    show_default=True,
    help="Mean number of extra collisions per event within the TPC drift window (Poisson); 0 is off.",
)
def simulate(n_events, out, seed, layout, events_per_file, workers, scheduler, trigger, pileup) -> None:
    """Simulate p+p collisions at 200 GeV in the sPHENIX TPC and write ROOT files in the sPHENIX layouts."""
    from fm4npp_data.simulation import simulate as run

    with progress_bar("simulate", "events") as bar:
        task = bar.add_task("simulate", total=max(n_events, 0))
        summary = run(
            n_events,
            out,
            seed=seed,
            layout=layout,
            events_per_file=events_per_file,
            workers=workers,
            scheduler=scheduler,
            trigger=trigger,
            pileup=pileup,
            progress=lambda n: bar.advance(task, n),
        )
    table = Table(title=f"fm4npp-data simulate: {summary.out}", show_header=False)
    table.add_row("events", f"{summary.events}")
    if summary.trigger != "none":
        generated = summary.events + summary.rejected + summary.empty
        table.add_row(
            f"trigger ({summary.trigger})",
            f"{summary.events} of {generated} generated collisions kept ({summary.events / generated:.1%}): "
            f"{summary.rejected} rejected by the trigger, {summary.empty} triggered without a TPC spacepoint",
        )
    if summary.pileup > 0:
        added = sum(f.pileup_collisions for f in summary.files)
        table.add_row("pile-up", f"{added} collisions added ({added / summary.events:.2f} per event)")
    megabytes = sum(f.bytes for f in summary.files) / 1e6
    table.add_row("files", f"{len(summary.files)} ({summary.layout}, {megabytes:.1f} MB)")
    table.add_row("TPC spacepoints", f"{summary.spacepoints} ({summary.spacepoints / summary.events:.0f} per event)")
    table.add_row("silicon clusters", f"{sum(f.silicon_clusters for f in summary.files)}")
    table.add_row("tracks (particles with TPC spacepoints)", f"{summary.tracks / summary.events:.1f} per event")
    fractions = summary.class_fractions()
    table.add_row("classes (TPC spacepoints)", percent({k: fractions[k] for k in PID_CLASSES}))
    table.add_row("noise (truth p_T < 60 MeV/c)", f"{fractions['noise']:.1%}")
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.events / summary.seconds:.0f} events/s)")
    Console().print(table)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory for shards + manifest.")
@click.option(
    "--layout",
    default=None,
    help="svtx-evaluator, trkr-ntuplizer, track-residuals, or a TOML file declaring the layout. Default: detect.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes on this machine.")
@click.option("--scheduler", default=None, help="Address of a Dask distributed scheduler (tcp://host:8786).")
@click.option("--resume", is_flag=True, help="Continue a conversion: skip inputs already converted (same sha256).")
@click.option("--noise-cut", type=float, default=CONVERT.noise_cut, show_default=True, help="Noise cut in GeV/c.")
@click.option(
    "--noise-variable",
    type=click.Choice(["pt", "p"]),
    default=CONVERT.noise_variable,
    show_default=True,
    help="pt as in the released code's labels, or p as in the paper's text.",
)
@click.option("--shard-events", type=int, default=CONVERT.shard_events, show_default=True, help="Events per shard.")
@click.option(
    "--row-group-events", type=int, default=CONVERT.row_group_events, show_default=True, help="Events per row group."
)
@click.option("--step-size", default=CONVERT.step_size, show_default=True, help="Chunk read at a time (bounds memory).")
def convert(
    inputs,
    out,
    layout,
    workers,
    scheduler,
    resume,
    noise_cut,
    noise_variable,
    shard_events,
    row_group_events,
    step_size,
) -> None:
    """Convert sPHENIX ROOT files (or any TPC tree declared in TOML) into Parquet events with truth labels."""
    from fm4npp_data.conversion.convert import convert as run
    from fm4npp_data.conversion.convert import expand_inputs

    if workers > 1 and scheduler:
        fail("give either --workers or --scheduler, not both")
    options = ConvertOptions(
        layout=layout,
        noise_cut=noise_cut,
        noise_variable=noise_variable,
        shard_events=shard_events,
        row_group_events=row_group_events,
        step_size=step_size,
    )
    n_files = len(expand_inputs(inputs))
    with progress_bar("convert", "files · {task.fields[events]} events") as bar:
        task = bar.add_task("convert", total=n_files, events=0)
        done, partial = 0, 0  # events of finished inputs; of the input converting in this process

        def input_done(entry) -> None:
            nonlocal done, partial
            done, partial = done + getattr(getattr(entry, "counts", None), "events", 0), 0
            bar.update(task, advance=1, events=done)

        def more_events(n: int) -> None:
            nonlocal partial
            partial += n
            bar.update(task, events=done + partial)

        summary = run(
            inputs,
            out,
            options,
            workers=workers,
            scheduler=scheduler,
            resume=resume,
            progress=input_done,
            on_events=more_events,
        )
    total = summary.totals()
    table = Table(title=f"fm4npp-data convert: {out}", show_header=False)
    layouts = sorted({e.layout for e in [*summary.converted, *summary.skipped]})
    table.add_row(
        "inputs",
        f"{len(summary.converted)} converted, {len(summary.skipped)} already done, {len(summary.errors)} failed",
    )
    if summary.cleared:
        table.add_row("cleared", f"{len(summary.cleared)} leftovers of an interrupted run")
    table.add_row("layouts", ", ".join(layouts) or "-")
    table.add_row("events", str(total.events))
    table.add_row("spacepoints", f"{total.spacepoints_out} written, {sum(total.rejected.values())} rejected")
    if total.particles_out:
        n = max(total.spacepoints_out, 1)
        table.add_row("truth particles", str(total.particles_out))
        table.add_row("classes", percent({k: c / n for k, c in zip(PID_CLASSES, total.pid_counts, strict=True)}))
        table.add_row("noise", f"{total.noise / n:.1%} ({options.noise_variable} < {options.noise_cut} GeV/c)")
    from fm4npp_data.dataset import MANIFEST, Manifest

    table.add_row("shards", str(len(Manifest.load(out).shards) if (out / MANIFEST).is_file() else 0))
    table.add_row("time", f"{summary.seconds:.1f} s ({total.events / max(summary.seconds, 1e-9):.0f} events/s)")
    Console().print(table)
    exit_on_errors(summary.errors)


def format_fact(value) -> str:
    """One fact of a Description as text."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1 or value == 0 else f"{value:.1%}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        if value and all(isinstance(v, float) for v in value.values()):
            return percent(value)
        return ", ".join(f"{k} {format_fact(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def inspect(path: Path) -> None:
    """What a ROOT file, a Parquet shard, a converted set, a dataset or a dataset repository holds: trees, layout,
    events, classes; of a repository its configs, splits, shards, size, ids digests, binning and k."""
    from fm4npp_data.description import describe

    description = describe(path)
    out = Console()
    out.print(f"[bold]{description.title}")
    for title, facts in description.sections.items():
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column()
        table.add_column(overflow="fold")  # a digest is folded, never cut
        for key, value in facts.items():
            table.add_row(key, format_fact(value))
        out.print(table)


@main.command("import-release")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory (one folder per part).")
@click.option("--resume", is_flag=True, help="Keep the parts already imported into --out.")
@click.option("--shard-events", type=int, default=IMPORT.shard_events, show_default=True, help="Events per shard.")
@click.option(
    "--row-group-events", type=int, default=IMPORT.row_group_events, show_default=True, help="Events per row group."
)
def import_release(source: Path, out: Path, resume: bool, shard_events: int, row_group_events: int) -> None:
    """Import the published TPCpp-10M release (its zip, read in place, or the extracted folder), keeping its splits."""
    from fm4npp_data.conversion.release import import_release as run

    columns = (TextColumn("[bold]import-release"), TextColumn("{task.completed} events"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("import", total=None)
        summary = run(
            source,
            out,
            shard_events=shard_events,
            row_group_events=row_group_events,
            resume=resume,
            progress=lambda n: bar.advance(task, n),
        )
    table = Table(title=f"fm4npp-data import-release: {out}")
    for name in ("part", "run", "events", "spacepoints", "rejected", "noise", "shards"):
        table.add_column(name, no_wrap=True)
    class_lines = []
    for manifest, state in [*((m, "") for m in summary.imported), *((m, " (kept)") for m in summary.skipped)]:
        t = manifest.totals
        n = max(t.spacepoints_out, 1)
        labeled = "labels" in manifest.truth
        table.add_row(
            manifest.part + state,
            str(manifest.run),
            str(t.events),
            str(t.spacepoints_out),
            str(sum(t.rejected.values())),
            f"{t.noise / n:.1%}" if labeled else "-",
            str(len(manifest.shards)),
        )
        if labeled:
            fractions = {k: c / n for k, c in zip(PID_CLASSES, t.pid_counts, strict=True)}
            class_lines.append(f"{manifest.part}: {percent(fractions)}")
    Console().print(table)
    for line in class_lines:
        click.echo(line)
    exit_on_errors(summary.errors)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--k", type=int, default=PREPARE.k, show_default=True, help="Neighbours per spacepoint (k-next-nearest).")
@click.option(
    "--binning", type=click.Path(path_type=Path), default=None, help="binning.json to use (else reuse or fit)."
)
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default=PREPARE.order,
    show_default=True,
    help="Serialization: the paper's hierarchical raster scan, or an ablation.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes (one shard each).")
@click.option("--scheduler", default=None, help="Address of a Dask distributed scheduler (tcp://host:8786).")
@click.option(
    "--sample-events",
    type=int,
    default=PREPARE.sample_events,
    show_default=True,
    help="Training events to fit the binning on.",
)
@click.option("--seed", type=int, default=PREPARE.seed, show_default=True, help="Seed of the binning sample.")
@click.option(
    "--difficulty-bins",
    type=int,
    default=PREPARE.difficulty_bins,
    show_default=True,
    help="Equal-count bins of event difficulty (fewer when the set is small).",
)
@click.option(
    "--knn",
    "knn_variant",
    type=click.Choice(KNN_VARIANTS),
    default=PREPARE.knn,
    show_default=True,
    help="exact: 3-D distance, strictly larger r; published: the FM4NPP code's variant (normalized eta, phi, r; "
    "later in r order), for ablations.",
)
def prepare(path, k, binning, order, workers, scheduler, sample_events, seed, difficulty_bins, knn_variant) -> None:
    """Add r, phi, eta, box, order, knn and knn_mean_distance to every shard; write binning.json and difficulty.json."""
    from fm4npp_data.preparation.prepare import prepare as run

    if workers > 1 and scheduler:
        fail("give either --workers or --scheduler, not both")
    options = PrepareOptions(
        k=k, order=order, knn=knn_variant, sample_events=sample_events, seed=seed, difficulty_bins=difficulty_bins
    )
    with progress_bar("prepare", "shards") as bar:
        task = bar.add_task("prepare", total=None)
        summary = run(
            path,
            options,
            binning=binning,
            workers=workers,
            scheduler=scheduler,
            progress=lambda _: bar.advance(task, 1),
        )
    table = Table(title=f"fm4npp-data prepare: {path}", show_header=False)
    table.add_row(
        "shards",
        f"{len(summary.prepared)} prepared, {len(summary.unchanged)} already prepared, {len(summary.errors)} failed",
    )
    if summary.cleared:
        table.add_row("cleared", f"{len(summary.cleared)} leftovers of an interrupted run")
    table.add_row("events", f"{summary.events} ({summary.spacepoints} spacepoints)")
    b = summary.binning
    sample = f"{b['sample_events']} sample events; " if "sample_events" in b else "given; "
    if "reused_from" in b:
        sample = f"reused from {b['reused_from']}; "
    table.add_row("binning", sample + "phi edges " + " ".join(f"{v:.2f}" for v in b["phi"]))
    table.add_row("", "eta edges " + " ".join(f"{v:.2f}" for v in b["eta"]))
    if summary.difficulty:
        d = summary.difficulty
        fewer = ""
        if len(d["weights"]) < d["bins_requested"]:
            fewer = f" (fewer than the {d['bins_requested']} asked: a small set)"
        table.add_row(
            "difficulty",
            f"{len(d['weights'])} bins of knn_mean_distance{fewer}, weights "
            f"{min(d['weights']):.2f}..{max(d['weights']):.2f}",
        )
    elif summary.errors:
        table.add_row("difficulty", "not written: some shards failed (the set is not marked prepared)")
    share = summary.kernel_seconds / max(summary.kernel_seconds + summary.io_seconds, 1e-9)
    table.add_row("compilation", f"{summary.compile_seconds:.1f} s (Numba; cached for the next runs)")
    table.add_row(
        "time",
        f"{summary.seconds - summary.compile_seconds:.1f} s ({summary.rate:.0f} events/s; kernels "
        f"{share:.0%} of shard time)",
    )
    Console().print(table)
    exit_on_errors(summary.errors)


@main.command("build")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The repository folder to create.")
@click.option(
    "--labeled-events",
    type=int,
    default=None,
    help="Events of the labeled config. Default: 90,000 when there are at least 450,000 events, else a fifth of them.",
)
@click.option("--shard-events", type=int, default=BUILD.shard_events, show_default=True, help="Events per shard.")
@click.option(
    "--row-group-events", type=int, default=BUILD.row_group_events, show_default=True, help="Events per row group."
)
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes (one shard each).")
@click.option("--scheduler", default=None, help="Address of a Dask distributed scheduler (tcp://host:8786).")
def build_command(dirs, out, labeled_events, shard_events, row_group_events, workers, scheduler) -> None:
    """Build the dataset repository (configs labeled and pretrain, splits, shards, card) from prepared sets."""
    from fm4npp_data.repo.build import BuildOptions, build

    if workers > 1 and scheduler:
        fail("give either --workers or --scheduler, not both")
    options = BuildOptions(labeled_events=labeled_events, shard_events=shard_events, row_group_events=row_group_events)
    with progress_bar("build", "shards") as bar:
        task = bar.add_task("build", total=None)
        summary = build(
            dirs, out, options, workers=workers, scheduler=scheduler, progress=lambda _: bar.advance(task, 1)
        )
    table = Table(title=f"fm4npp-data build: {out}")
    for name in ("config", "split", "events", "spacepoints", "shards", "MB"):
        table.add_column(name, no_wrap=True)
    for config, splits in summary.splits.items():
        for split, info in splits.items():
            megabytes = sum(s["bytes"] for s in info["shards"]) / 1e6
            table.add_row(
                config,
                split,
                f"{info['events']:,}",
                f"{info['spacepoints']:,}",
                str(len(info["shards"])),
                f"{megabytes:.1f}",
            )
    Console().print(table)
    excluded = ", ".join(f"{k} {v}" for k, v in summary.excluded.items() if v) or "none"
    click.echo(f"excluded events: {excluded}; {summary.seconds:.1f} s")


def hub_commits() -> str:
    """How the installed huggingface_hub commits a folder, read from it (publish's help; imported only for --help)."""
    try:
        import huggingface_hub
        from huggingface_hub import _upload_pipeline as pipeline
        from huggingface_hub.hf_api import is_xet_available  # the test upload_folder makes

        scale, first = pipeline.COMMIT_SIZE_SCALE, pipeline.COMMIT_SIZE_SCALE[pipeline.INITIAL_COMMIT_SIZE_INDEX]
        seconds, version, xet = pipeline.TARGET_COMMIT_DURATION, huggingface_hub.__version__, is_xet_available()
    except (ImportError, AttributeError, IndexError):
        return "How many commits: see the upload_folder documentation of the installed huggingface_hub."
    if not xet:
        return (
            f"How many commits: the installed huggingface_hub {version}, without hf_xet, sends the folder in one "
            "commit (pip install hf_xet commits a large folder in batches, resumably)."
        )
    fast, sent, index = 0, 0, pipeline.INITIAL_COMMIT_SIZE_INDEX
    while sent < 1000:  # commits of a 1,000-file build when every commit takes less than `seconds`
        sent, fast, index = sent + scale[index], fast + 1, min(index + 1, len(scale) - 1)
    return (
        f"How many commits: the installed huggingface_hub {version} (with hf_xet) commits a folder in batches: "
        f"{first} files in the first commit, then between {min(scale)} and {max(scale)} per commit (more after "
        f"commits faster than {seconds:.0f} s, fewer after slower ones); the deletions of an earlier build ride "
        f"the first commit. A build of 1,000 shards takes {fast} commits or more, and an upload interrupted "
        "between them leaves its target mixed until it is run again: publish an update to a --revision branch "
        "or a --create-pr pull request, and main stays as it was."
    )


class HubCommand(click.Command):
    """A command whose help ends with how the installed huggingface_hub commits (read when help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = hub_commits()
        super().format_epilog(ctx, formatter)


def _shard_count(repo: Path) -> int | None:
    """The shards splits.json lists (the total of verify's progress bar), or None when it cannot be read."""
    from fm4npp_data.integrity import read_splits

    try:
        return sum(len(v["shards"]) for d in read_splits(repo)["configs"].values() for v in d.values())
    except Fm4nppError:
        return None  # verify names the problem


@main.command()
@click.argument("repo", type=click.Path(path_type=Path))
def verify(repo: Path) -> None:
    """Re-check a dataset repository: checksums, schemas, counts, split invariants; names what is wrong."""
    from fm4npp_data.repo.verify import verify as run

    with progress_bar("verify", "shards") as bar:
        task = bar.add_task("verify", total=_shard_count(repo))
        counts = run(repo, progress=lambda _: bar.advance(task, 1))
    summary = "; ".join(f"{c}: " + ", ".join(f"{s} {n:,}" for s, n in d.items()) for c, d in counts.items())
    click.echo(f"{repo}: verified ({summary})")


@main.command(cls=HubCommand)
@click.argument("repo", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="The hub dataset to create or update, e.g. fm4npp/tpc-pp200.")
@click.option(
    "--revision",
    default=None,
    metavar="BRANCH",
    help="Publish to this branch (created from main if absent), or resume into a pull request with "
    "refs/pr/N. Default: main while it holds no build; over a published build name it (--revision main) "
    "or use --create-pr.",
)
@click.option("--create-pr", is_flag=True, help="Publish as a pull request against main (merge it on the hub).")
@click.option(
    "--tag",
    default=None,
    metavar="TAG",
    help="Tag the published commit (a citable version, e.g. v1.0) once the upload and its check succeed.",
)
@click.option("--private", is_flag=True, help="Create the hub dataset as private.")
@click.option("--dry-run", is_flag=True, help="Verify and list what would be sent; touch no network.")
def publish(
    repo: Path, repo_id: str, revision: str | None, create_pr: bool, tag: str | None, private: bool, dry_run: bool
) -> None:
    """Upload a verified repository to the Hugging Face hub (to main, a branch or a pull request; run again to
    resume), then check the hub's files and sizes against splits.json."""
    from fm4npp_data.repo.hub import publish as run

    result = run(repo, repo_id, private=private, dry_run=dry_run, revision=revision, create_pr=create_pr, tag=tag)
    for path, size in result:
        click.echo(f"{size:>14,}  {path}")
    total = sum(size for _, size in result)
    verb = "would send" if dry_run else "sent"
    click.echo(f"{verb} {len(result)} files, {total / 1e6:.1f} MB, to the dataset {repo_id} ({result.target})")
    if not dry_run:
        click.echo(f"checked: the hub's files at commit {result.commit} are the ones splits.json lists")
        if result.pr_url:
            click.echo(f"pull request: {result.pr_url} (resume into it with --revision {result.revision})")
        if result.tag:
            click.echo(f"tagged {result.tag}: load_dataset({repo_id!r}, 'labeled', revision={result.tag!r})")


main.add_command(display)
main.add_command(stats)

__all__ = ["main"]

if __name__ == "__main__":
    main()
