"""`fm4npp-data`: data commands. Thin: parse, call fm4npp_data, print."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fm4npp")
def main() -> None:
    """fm4npp data toolkit: simulate, convert and prepare sPHENIX TPC data."""


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _exit_on_errors(errors: list[str]) -> None:
    """After the good inputs finished: report each bad one, and exit 2 if there was any."""
    for error in errors:
        click.echo(f"Error: {error}", err=True)
    if errors:
        sys.exit(2)


@main.command()
@click.option("--events", "n_events", type=int, required=True, help="Number of p+p collisions to simulate.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New (or empty) output directory.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (non-negative).")
@click.option(
    "--layout",
    default="svtx-evaluator",
    show_default=True,
    help="ROOT layout to write: svtx-evaluator (with truth) or trkr-ntuplizer (recorded-data layout, no truth).",
)
@click.option("--events-per-file", type=int, default=1000, show_default=True, help="Events per ROOT file.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
def simulate(n_events: int, out: Path, seed: int, layout: str, events_per_file: int, workers: int) -> None:
    """Simulate p+p collisions at 200 GeV in the sPHENIX TPC and write ROOT files in the sPHENIX layouts."""
    from fm4npp_data.labels import PID_CLASSES
    from fm4npp_data.simulation import SimulationError
    from fm4npp_data.simulation import simulate as run

    columns = (
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("simulate", total=max(n_events, 0))
        try:
            summary = run(
                n_events, out, seed=seed, layout=layout, events_per_file=events_per_file, workers=workers,
                progress=lambda n: bar.advance(task, n),
            )  # fmt: skip
        except SimulationError as error:
            _fail(str(error))
    table = Table(title=f"fm4npp-data simulate: {summary.out}", show_header=False)
    table.add_row("events", f"{summary.events}")
    table.add_row(
        "files",
        f"{len(summary.files)} ({summary.layout}, {sum(f.bytes for f in summary.files) / 1e6:.1f} MB)",
    )
    table.add_row("TPC spacepoints", f"{summary.spacepoints} ({summary.spacepoints / summary.events:.0f} per event)")
    table.add_row("silicon clusters", f"{sum(f.silicon_clusters for f in summary.files)}")
    table.add_row("tracks (particles with TPC spacepoints)", f"{summary.tracks / summary.events:.1f} per event")
    fractions = summary.class_fractions()
    table.add_row("classes (TPC spacepoints)", ", ".join(f"{k} {fractions[k]:.1%}" for k in PID_CLASSES))
    table.add_row("noise (truth p_T < 60 MeV/c)", f"{fractions['noise']:.1%}")
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.events / summary.seconds:.0f} events/s)")
    Console().print(table)


def _root_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.root")) if path.is_dir() else [path])
    if not files:
        _fail(f"no ROOT files found in {', '.join(map(str, paths))}")
    return files


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--event", type=int, default=0, show_default=True, help="Event number (the file's `event` column).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
def display(path: Path, event: int, out: Path) -> None:
    """Event display of one event of a ROOT file, a shard or a converted dataset: x-y and r-z by truth track; for a
    prepared event also its raster scan and neighbour targets (<out>_order.png)."""
    from fm4npp_data.plots import display_event, display_serialization

    order = None
    try:
        written = display_event(path, event, out)
        if path.suffix == ".parquet" or path.is_dir():
            order = display_serialization(path, event, out.with_name(out.stem + "_order.png"))
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    click.echo(f"wrote {written}")
    if order is not None:
        click.echo(f"wrote {order}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the PNGs.")
def stats(paths: tuple[Path, ...], out: Path) -> None:
    """Distributions of simulated ROOT files: energy vs momentum by species, an event display, an overview."""
    from fm4npp_data.plots import plot_simulation

    out.mkdir(parents=True, exist_ok=True)
    try:
        written = plot_simulation(_root_files(paths), out)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    for png in written:
        click.echo(f"wrote {png}")


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
@click.option("--noise-cut", type=float, default=0.060, show_default=True, help="Noise cut in GeV/c.")
@click.option(
    "--noise-variable",
    type=click.Choice(["pt", "p"]),
    default="pt",
    show_default=True,
    help="pt as in the released code's labels, or p as in the paper's text.",
)
@click.option("--shard-events", type=int, default=10_000, show_default=True, help="Events per Parquet shard.")
@click.option("--row-group-events", type=int, default=1_000, show_default=True, help="Events per row group.")
@click.option("--step-size", default="64 MB", show_default=True, help="Chunk read at a time (bounds memory).")
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
    from fm4npp_data.convert import ConvertError, ConvertOptions
    from fm4npp_data.convert import convert as run
    from fm4npp_data.labels import PID_CLASSES

    if workers > 1 and scheduler:
        _fail("give either --workers or --scheduler, not both")
    options = ConvertOptions(
        layout=layout, noise_cut=noise_cut, noise_variable=noise_variable, shard_events=shard_events,
        row_group_events=row_group_events, step_size=step_size,
    )  # fmt: skip
    columns = (
        TextColumn("[bold]convert"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[events]} events"),
        TimeElapsedColumn(),
    )
    try:
        from fm4npp_data.convert import expand_inputs

        n_files = len(expand_inputs(inputs))
    except ConvertError as error:
        _fail(str(error))
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("convert", total=n_files, events=0)
        done, partial = 0, 0  # events of finished inputs; of the input converting in this process

        def advance(result: dict) -> None:
            nonlocal done, partial
            done, partial = done + result.get("counts", {}).get("events", 0), 0
            bar.update(task, advance=1, events=done)

        def more_events(n: int) -> None:
            nonlocal partial
            partial += n
            bar.update(task, events=done + partial)

        try:
            summary = run(inputs, out, options, workers=workers, scheduler=scheduler, resume=resume, progress=advance,
                          on_events=more_events)  # fmt: skip
        except ConvertError as error:
            _fail(str(error))
    total = summary.totals()
    table = Table(title=f"fm4npp-data convert: {out}", show_header=False)
    layouts = sorted({e["layout"] for e in [*summary.converted, *summary.skipped]})
    table.add_row("inputs", f"{len(summary.converted)} converted, {len(summary.skipped)} already done, "
                  f"{len(summary.errors)} failed")  # fmt: skip
    table.add_row("layouts", ", ".join(layouts) or "-")
    table.add_row("events", str(total.events))
    table.add_row("spacepoints", f"{total.spacepoints_out} written, {sum(total.rejected.values())} rejected")
    if total.particles_out:
        table.add_row("truth particles", str(total.particles_out))
        n = max(total.spacepoints_out, 1)
        table.add_row(
            "classes", ", ".join(f"{k} {c / n:.1%}" for k, c in zip(PID_CLASSES, total.pid_counts, strict=True))
        )
        table.add_row("noise", f"{total.noise / n:.1%} ({options.noise_variable} < {options.noise_cut} GeV/c)")
    shards = sum(len(e["shards"]) for e in [*summary.converted, *summary.skipped])
    table.add_row("shards", str(shards))
    table.add_row("time", f"{summary.seconds:.1f} s ({total.events / max(summary.seconds, 1e-9):.0f} events/s)")
    Console().print(table)
    _exit_on_errors(summary.errors)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def inspect(path: Path) -> None:
    """What a ROOT file, a Parquet shard or a converted dataset holds: trees, layout, events, classes."""
    from fm4npp_data.convert import ConvertError
    from fm4npp_data.inspect import inspect as run

    try:
        report = run(path)
    except ConvertError as error:
        _fail(str(error))
    out = Console()
    out.print(f"[bold]{report.title}")
    for title, rows in report.sections:
        table = Table(title=title, show_header=False, title_justify="left")
        for key, value in rows:
            table.add_row(key, value)
        out.print(table)


@main.command("import-release")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory (one folder per part).")
@click.option("--resume", is_flag=True, help="Keep the parts already imported into --out.")
@click.option("--shard-events", type=int, default=10_000, show_default=True, help="Events per Parquet shard.")
@click.option("--row-group-events", type=int, default=1_000, show_default=True, help="Events per row group.")
def import_release(source: Path, out: Path, resume: bool, shard_events: int, row_group_events: int) -> None:
    """Import the published TPCpp-10M release (its zip, read in place, or the extracted folder), keeping its splits."""
    from fm4npp_data.convert import ConvertError
    from fm4npp_data.import_release import import_release as run
    from fm4npp_data.labels import PID_CLASSES

    columns = (TextColumn("[bold]import-release"), TextColumn("{task.completed} events"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("import", total=None)
        try:
            summary = run(source, out, shard_events=shard_events, row_group_events=row_group_events, resume=resume,
                          progress=lambda n: bar.advance(task, n))  # fmt: skip
        except ConvertError as error:
            _fail(str(error))
    table = Table(title=f"fm4npp-data import-release: {out}")
    for name in ("part", "run", "events", "spacepoints", "rejected", "noise", "shards"):
        table.add_column(name, no_wrap=True)
    class_lines = []
    for manifest, state in [*((m, "") for m in summary.imported), *((m, " (kept)") for m in summary.skipped)]:
        t = manifest["totals"]
        n = max(t["spacepoints_out"], 1)
        labeled = "labels" in manifest["truth"]
        classes = ", ".join(f"{k} {c / n:.0%}" for k, c in zip(PID_CLASSES, t["pid_counts"], strict=True))
        table.add_row(
            manifest["part"] + state, str(manifest["run"]), str(t["events"]), str(t["spacepoints_out"]),
            str(sum(t["rejected"].values())), f"{t['noise'] / n:.1%}" if labeled else "-", str(len(manifest["shards"])),
        )  # fmt: skip
        if labeled:
            class_lines.append(f"{manifest['part']}: {classes}")
    Console().print(table)
    for line in class_lines:
        click.echo(line)
    _exit_on_errors(summary.errors)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--k", type=int, default=10, show_default=True, help="Neighbours per spacepoint (k-next-nearest).")
@click.option(
    "--binning", type=click.Path(path_type=Path), default=None, help="binning.json to use (else fit or reuse)."
)
@click.option(
    "--order",
    type=click.Choice(["hierarchical", "radial", "zorder", "input"]),
    default="hierarchical",
    show_default=True,
    help="Serialization: the paper's hierarchical raster scan, or an ablation.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes (one shard each).")
@click.option("--sample-events", type=int, default=50_000, show_default=True, help="Training events to fit binning.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the binning sample.")
@click.option(
    "--knn",
    "knn_variant",
    type=click.Choice(["exact", "published"]),
    default="exact",
    show_default=True,
    help="exact: 3-D distance, strictly larger r; published: the FM4NPP code's variant (normalized eta, phi, r; "
    "later in r order), for ablations.",
)
def prepare(
    path: Path, k: int, binning: Path | None, order: str, workers: int, sample_events: int, seed: int, knn_variant: str
) -> None:
    """Add r, phi, eta, box, order, knn and knn_mean_distance to every shard; write binning.json and difficulty.json."""
    from fm4npp_data.convert import ConvertError
    from fm4npp_data.prepare import prepare as run

    columns = (
        TextColumn("[bold]prepare"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("prepare", total=None)
        try:
            summary = run(path, k=k, binning=binning, order=order, workers=workers, sample_events=sample_events,
                          seed=seed, knn_variant=knn_variant, progress=lambda result: bar.advance(task, 1))  # fmt: skip
        except ConvertError as error:
            _fail(str(error))
    table = Table(title=f"fm4npp-data prepare: {path}", show_header=False)
    table.add_row("shards", f"{len(summary.prepared)} prepared, {len(summary.unchanged)} already prepared, "
                  f"{len(summary.errors)} failed")  # fmt: skip
    table.add_row("events", f"{summary.events} ({summary.spacepoints} spacepoints)")
    table.add_row("binning", f"{summary.binning['sample_events']} sample events; phi edges "
                  + " ".join(f"{v:.2f}" for v in summary.binning["phi"]))  # fmt: skip
    table.add_row("", "eta edges " + " ".join(f"{v:.2f}" for v in summary.binning["eta"]))
    if summary.difficulty:
        d = summary.difficulty
        table.add_row("difficulty", f"{len(d['weights'])} bins of knn_mean_distance, weights "
                      f"{min(d['weights']):.2f}..{max(d['weights']):.2f}")  # fmt: skip
    rate = summary.events / max(summary.seconds, 1e-9)
    share = summary.kernel_seconds / max(summary.kernel_seconds + summary.io_seconds, 1e-9)
    table.add_row("time", f"{summary.seconds:.1f} s ({rate:.0f} events/s; kernels {share:.0%} of shard time)")
    Console().print(table)
    _exit_on_errors(summary.errors)


if __name__ == "__main__":
    main()
