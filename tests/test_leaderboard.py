"""The leaderboard: perfect predictions score 1, malformed files are refused with the event named, the join is on
(run, event), the CLI prints the tables and writes the JSON, and nothing imports torch."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from fm4npp_cli.leaderboard import leaderboard

from fm4npp_data.conversion.convert import convert
from fm4npp_data.errors import DatasetError
from fm4npp_data.evaluation.leaderboard import PredictionsError, markdown_rows, score
from fm4npp_data.evaluation.metrics import noise_metrics, pid_metrics, tracking_metrics
from fm4npp_data.labels import PID_CLASSES
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.repo.build import BuildOptions, build

ROOT = Path(__file__).parents[1]
NOISE_LABEL = -2  # a perfect prediction puts an event's noise in one cluster


@pytest.fixture(scope="module")
def repo(sim_svtx, tmp_path_factory):
    """A dataset repository from the session's simulated svtx files; its test split (about 14 events) has two shards
    or more. (Its size varies a little between sessions: the svtx files' run numbers come from their sha256, and
    ROOT files hold their creation time.)"""
    root = tmp_path_factory.mktemp("leaderboard")
    convert([sim_svtx], root / "events")
    prepare(root / "events", PrepareOptions(k=2, sample_events=100))
    build([root / "events"], root / "repo", BuildOptions(labeled_events=200, shard_events=5))
    return root / "repo"


@pytest.fixture(scope="module")
def truth(repo):
    shards = sorted((repo / "data" / "labeled").glob("test-*.parquet"))
    assert len(shards) >= 2
    return pl.read_parquet(shards)


def perfect(truth: pl.DataFrame) -> pl.DataFrame:
    """Predictions equal to the truth clusters (the noise of an event one cluster), classes and flags."""
    rows = []
    for row in truth.select("run", "event", "track_id", "noise", "pid").iter_rows(named=True):
        labels = np.where(np.array(row["noise"], bool), NOISE_LABEL, np.array(row["track_id"], np.int64))
        rows.append(
            {
                "run": row["run"],
                "event": row["event"],
                "track": labels.tolist(),
                "pid": row["pid"],
                "noise": row["noise"],
            }
        )
    schema = {
        "run": pl.Int32,
        "event": pl.Int64,
        "track": pl.List(pl.Int64),
        "pid": pl.List(pl.Int8),
        "noise": pl.List(pl.Boolean),
    }
    return pl.DataFrame(rows, schema=schema)


def write(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path)
    return path


def first_event(truth: pl.DataFrame, index: int = 0) -> str:
    run, event = truth.select("run", "event").row(index)
    return f"(run {run}, event {event})"


# ------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------


def test_perfect_predictions_score_one_on_every_figure(repo, truth, tmp_path):
    result = score(write(perfect(truth), tmp_path / "p.parquet"), repo)
    assert set(result) == {"tracking", "pid", "noise"}
    t = result["tracking"]
    for key in ("ari", "ari_event_mean", "efficiency", "purity", "spacepoint_efficiency", "spacepoint_purity"):
        assert t[key] == pytest.approx(1.0), key
    assert t["counts"]["events"] == truth.height
    assert t["counts"]["true_tracks"] == t["counts"]["matched_tracks"] > 50
    assert t["sphenix"]["efficiency"] in (1.0, None)
    assert [e for e in t["efficiency_pt"]["efficiency"] if e is not None] == [1.0] * sum(
        n > 0 for n in t["efficiency_pt"]["true_tracks"]
    )
    for task in ("pid", "noise"):
        r = result[task]
        assert (r["accuracy"], r["macro_recall"], r["macro_precision"]) == (1.0, 1.0, 1.0)
        assert all(c["recall"] == 1.0 and c["precision"] == 1.0 for c in r["per_class"].values() if c["support"])
    assert set(result["pid"]["per_class"]) == set(PID_CLASSES)
    assert result["pid"]["spacepoints"] == truth.select(pl.col("pid").list.len().sum()).item()


def test_the_momenta_of_true_tracks_come_from_the_particle_lists(repo, truth, tmp_path):
    result = score(write(perfect(truth), tmp_path / "p.parquet"), repo)
    expected = np.zeros(15, int)
    for row in truth.iter_rows(named=True):  # one event at a time, independently of the leaderboard
        ids, noise = np.array(row["track_id"]), np.array(row["noise"], bool)
        ids, counts = np.unique(ids[(ids >= 0) & ~noise], return_counts=True)
        for tid in ids[counts >= 3]:
            pt = np.hypot(row["particle_px"][tid], row["particle_py"][tid])
            if pt < 3:
                expected[int(pt / 0.2 + 1e-9)] += 1
    assert result["tracking"]["efficiency_pt"]["true_tracks"] == expected.tolist()


def test_rows_are_joined_on_run_and_event_not_position(repo, truth, tmp_path):
    """A noisy prediction in shuffled row order scores what the metrics give on the event-by-event arrays."""
    rng = np.random.default_rng(0)
    good = perfect(truth)
    noisy = good.with_columns(
        pl.col("track").map_elements(lambda v: _perturb(rng, v, -1), return_dtype=pl.List(pl.Int64)),
        pl.col("pid").map_elements(lambda v: _perturb(rng, v, 0), return_dtype=pl.List(pl.Int8)),
        pl.col("noise").map_elements(lambda v: _perturb(rng, v, True), return_dtype=pl.List(pl.Boolean)),
    )
    result = score(write(noisy.sample(fraction=1.0, shuffle=True, seed=1), tmp_path / "n.parquet"), repo)
    event = np.repeat(np.arange(truth.height), truth.select(pl.col("track_id").list.len()).to_series().to_numpy())

    def flat(frame, column):
        return np.concatenate([np.asarray(v) for v in frame[column].to_list()])

    expected = tracking_metrics(event, flat(truth, "track_id"), flat(truth, "noise"), flat(noisy, "track"))
    keys = ("ari", "ari_event_mean", "efficiency", "purity", "spacepoint_efficiency", "spacepoint_purity")
    assert {k: result["tracking"][k] for k in keys} == pytest.approx({k: expected[k] for k in keys}, rel=1e-12)
    assert result["tracking"]["counts"] == expected["counts"]
    assert result["tracking"]["ari"] < 1
    assert result["pid"] == pid_metrics(flat(truth, "pid"), flat(noisy, "pid"))
    assert result["noise"] == noise_metrics(flat(truth, "noise"), flat(noisy, "noise"))


def _perturb(rng, values, replacement):
    values = list(values)
    for i in np.flatnonzero(rng.random(len(values)) < 0.2):
        values[i] = replacement
    return values


def test_a_file_with_one_task_is_scored_on_that_task_only(repo, truth, tmp_path):
    result = score(write(perfect(truth).select("run", "event", "pid"), tmp_path / "pid.parquet"), repo)
    assert set(result) == {"pid"}
    assert "Table 4" in markdown_rows({"pid only": result})


# ------------------------------------------------------------------------------------------------------------
# Malformed files
# ------------------------------------------------------------------------------------------------------------


def _bad_list(frame: pl.DataFrame, column: str, row: int, fix) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = fix(values[row])
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


@pytest.mark.parametrize(
    ("damage", "row", "message"),
    [
        (lambda f: f.slice(1), 0, "have no predictions"),
        (lambda f: pl.concat([f, f.slice(2, 1)]), 2, "1 event appears more than once"),
        (lambda f: _bad_list(f, "track", 3, lambda v: v[:-1]), 3, "column 'track' has"),
        (lambda f: _bad_list(f, "noise", 4, lambda _: None), 4, "column 'noise' has no list"),
        (lambda f: _bad_list(f, "pid", 5, lambda v: [7, *v[1:]]), 5, "predicted pid 7 is not a class"),
        (lambda f: _bad_list(f, "track", 6, lambda v: [None, *v[1:]]), 6, "'track' has null entries"),
    ],
    ids=["missing", "duplicate", "wrong-length", "null-list", "bad-pid", "null-label"],
)
def test_malformed_files_are_refused_naming_the_event(repo, truth, tmp_path, damage, row, message):
    path = write(damage(perfect(truth)), tmp_path / "bad.parquet")
    with pytest.raises(PredictionsError, match=message) as error:
        score(path, repo)
    assert first_event(truth, row) in str(error.value)
    assert str(path) in str(error.value)


def test_an_event_not_in_the_split_is_refused(repo, truth, tmp_path):
    extra = perfect(truth).slice(0, 1).with_columns(pl.lit(123456789, pl.Int64).alias("event"))
    path = write(pl.concat([perfect(truth), extra]), tmp_path / "extra.parquet")
    with pytest.raises(PredictionsError, match=r"1 event is not in split 'test'.*\(run \d+, event 123456789\)"):
        score(path, repo)
    with pytest.raises(PredictionsError, match="events of split 'validation'"):
        score(write(perfect(truth), tmp_path / "p.parquet"), repo, split="validation")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.with_columns(pl.col("track").cast(pl.List(pl.Float64))), "'track' must be list<int64>"),
        (lambda f: f.with_columns(pl.col("noise").cast(pl.List(pl.Int8))), "'noise' must be list<bool>"),
        (lambda f: f.drop("event"), "needs columns run, event"),
        (lambda f: f.select("run", "event"), "at least one of track, pid, noise"),
        (lambda f: f.with_columns(pl.col("track").cast(pl.List(pl.UInt64), strict=False)), "'track' must be"),
    ],
    ids=["float-track", "int-noise", "no-event", "no-task", "uint64-track"],
)
def test_wrong_columns_are_refused(repo, truth, tmp_path, change, message):
    with pytest.raises(PredictionsError, match=message):
        score(write(change(perfect(truth)), tmp_path / "c.parquet"), repo)


def test_a_file_that_is_not_parquet_and_a_folder_that_is_not_a_repository(repo, truth, tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(PredictionsError, match="not a readable Parquet file"):
        score(tmp_path / "x.parquet", repo)
    good = write(perfect(truth), tmp_path / "p.parquet")
    with pytest.raises(DatasetError, match="no data/labeled folder"):
        score(good, tmp_path)
    with pytest.raises(DatasetError, match="no shards of split 'nope'"):
        score(good, repo, split="nope")


def test_run_numbers_beyond_int64_are_refused_not_a_crash(repo, truth, tmp_path):
    frame = perfect(truth).with_columns(pl.col("run").cast(pl.UInt64))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(2**63 + 5, pl.UInt64)).otherwise(pl.col("run")).alias("run")
    )
    with pytest.raises(PredictionsError, match="beyond the int64 range"):
        score(write(frame, tmp_path / "big.parquet"), repo)


def test_an_event_twice_in_the_truth_is_a_damaged_repository(repo, truth, tmp_path, rerecord):
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    shards = sorted((copy / "data" / "labeled").glob("test-*.parquet"))
    pl.read_parquet(shards[0]).head(1).write_parquet(shards[1])  # the first event again, in the second shard
    rerecord(copy)  # as if built so: past the sha256 check of splits.json
    with pytest.raises(DatasetError, match="more than one row of the split"):
        score(write(perfect(truth), tmp_path / "p.parquet"), copy)


# ------------------------------------------------------------------------------------------------------------
# The command, and no torch
# ------------------------------------------------------------------------------------------------------------


def test_the_command_prints_the_tables_and_writes_the_json(repo, truth, tmp_path):
    predictions = write(perfect(truth), tmp_path / "mine.parquet")
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(leaderboard, [str(predictions), "--data", str(repo), "--json", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert {k: v for k, v in written.items() if k != "scored_on"} == score(predictions, repo)
    assert (written["scored_on"]["predictions"], written["scored_on"]["split"]) == (str(predictions), "test")
    for table in ("Table 2", "Table 5", "Table 3", "Table 4", "p_T bins: mine"):
        assert table in result.output
    assert "| mine | 1.0000 | 1.0000 | 100.00% | 100.00% | 1.0000 |" in result.output


def test_the_command_reports_errors_in_one_line(repo, truth, tmp_path):
    path = write(perfect(truth).slice(1), tmp_path / "short.parquet")
    result = CliRunner().invoke(leaderboard, [str(path), "--data", str(repo)])
    assert result.exit_code == 2
    assert f"Error: {path}: 1 of the {truth.height} events" in result.output
    assert first_event(truth) in result.output
    missing = CliRunner().invoke(leaderboard, [str(path), "--data", str(repo), "--json", str(tmp_path / "no/x.json")])
    assert missing.exit_code == 2
    assert "Error:" in missing.output


def test_the_leaderboard_runs_without_torch(repo, truth, tmp_path, python_without):
    predictions = write(perfect(truth), tmp_path / "p.parquet")
    code = f"""
        import sys
        import fm4npp_data.evaluation.metrics
        assert not [m for m in ("polars", "pyarrow", "torch") if m in sys.modules], "metrics imports too much"
        from click.testing import CliRunner
        from fm4npp_cli.leaderboard import leaderboard
        result = CliRunner().invoke(leaderboard, [{str(predictions)!r}, "--data", {str(repo)!r}])
        assert result.exit_code == 0, result.output
        assert "| p | 1.0000 | 1.0000 |" in result.output
        print("ok")
    """
    done = python_without(("torch", "sklearn", "scipy"), code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
