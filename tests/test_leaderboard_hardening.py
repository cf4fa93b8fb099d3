"""The leaderboard against hostile and damaged inputs: a small file declaring a huge list is refused before it is
decoded (peak memory measured), `--json -` writes the JSON (with what it was scored on) to standard output, and a
damaged splits.json, a truncated truth shard, a predictions file for another split or a damaged predictions file
are messages (exit 2), not tracebacks."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fm4npp_cli.leaderboard import leaderboard

import fm4npp_data
from fm4npp_data.errors import DatasetError
from fm4npp_data.evaluation.leaderboard import PredictionsError, read_truth, score


def split_truth(repo: Path, split: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((repo / "data" / "labeled").glob(f"{split}-*.parquet")))


def predictions(repo: Path, split: str, path: Path) -> Path:
    """Perfect pid and noise predictions of a split (the truth's own lists)."""
    split_truth(repo, split).select("run", "event", "pid", "noise").write_parquet(path)
    return path


def invoke(*args) -> object:
    return CliRunner().invoke(leaderboard, [str(a) for a in args])


def assert_message(result, *parts: str) -> None:
    """Exit 2 with `Error: ...` naming each of `parts`, and no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output


# ------------------------------------------------------------------------------------------------------------
# What a file declares is read before it is allocated (item 5)
# ------------------------------------------------------------------------------------------------------------


def _run(code: str, cwd: Path, timeout: int = 120) -> str:
    """The standard output of `code` in a fresh interpreter (so that its peak memory is its own)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_small_file_declaring_a_huge_list_is_refused_before_it_is_decoded(small_repo, tmp_path):
    """20M entries of one noise list, run-length encoded in about 1 KB: refused from the footer; the scoring
    process's peak memory grows by a few MB (decoding the list took over 100 MB before)."""
    good = predictions(small_repo, "test", tmp_path / "good.parquet")
    bomb = tmp_path / "bomb.parquet"
    _run(
        f"""
        import numpy as np, pyarrow as pa, pyarrow.parquet as pq
        keys = pq.read_table({str(good)!r}, columns=["run", "event"])
        offsets = np.full(keys.num_rows + 1, 20_000_000, np.int32)
        offsets[0] = 0
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.repeat(pa.scalar(True), 20_000_000))
        pq.write_table(keys.append_column("noise", lists), {str(bomb)!r}, compression="zstd")
    """,
        tmp_path,
    )
    assert bomb.stat().st_size < 10_000
    out = _run(
        f"""
        import json, resource
        from click.testing import CliRunner
        from fm4npp_cli.leaderboard import leaderboard
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        warm = CliRunner().invoke(leaderboard, [{str(good)!r}, "--data", {str(small_repo)!r}])
        assert warm.exit_code == 0, warm.output
        before = peak()
        result = CliRunner().invoke(leaderboard, [{str(bomb)!r}, "--data", {str(small_repo)!r}])
        print(json.dumps({{"code": result.exit_code, "output": result.output, "grown": peak() - before}}))
    """,
        tmp_path,
    )
    result = json.loads(out)
    assert result["code"] == 2
    assert result["output"].startswith(f"Error: {bomb}: column 'noise' declares 20,000,")
    assert "(the lists were not read)" in result["output"]
    assert result["grown"] < 40e6, f"peak memory grew by {result['grown'] / 1e6:.0f} MB"


def test_a_file_declaring_far_more_rows_than_the_split_has_events_is_refused(small_repo, tmp_path):
    events = split_truth(small_repo, "test").height
    rows = 16 * events + 10_001
    frame = pl.DataFrame(
        {"run": [1] * rows, "event": range(rows), "pid": [[]] * rows},
        schema={"run": pl.Int32, "event": pl.Int64, "pid": pl.List(pl.Int8)},
    )
    path = tmp_path / "rows.parquet"
    frame.write_parquet(path)
    assert_message(
        invoke(path, "--data", small_repo),
        f"{path}: the file declares {rows:,} rows",
        f"has {events:,} events; write one row per event of the split",
    )


def test_an_event_list_longer_than_its_spacepoints_is_refused_from_the_footer(small_repo, tmp_path):
    """One event per row group: the message names the event whose list is too long, before reading it. (The train
    split: the test split of the small repository can hold a single event, its split following the files' sha256.)"""
    truth = split_truth(small_repo, "train").select("run", "event", "pid")
    long = truth.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.col("pid").list.concat(pl.col("pid")))
        .otherwise(pl.col("pid"))
        .alias("pid")
    )
    path = tmp_path / "long.parquet"
    pq.write_table(long.to_arrow(), path, row_group_size=1)
    run, event = truth.select("run", "event").row(1)
    n = truth["pid"].list.len()[1]
    with pytest.raises(
        PredictionsError,
        match=rf"declares {2 * n:,} entries for \(run {run}, event {event}\) "
        rf"\(row group 1\), but that event has {n:,} spacepoints",
    ):
        score(path, small_repo, "train")


# ------------------------------------------------------------------------------------------------------------
# --json - and what a result was scored on (item 6)
# ------------------------------------------------------------------------------------------------------------


def test_json_dash_writes_the_json_to_stdout_with_the_datas_identity(small_repo, tmp_path, monkeypatch):
    path = predictions(small_repo, "test", tmp_path / "mine.parquet")
    monkeypatch.chdir(tmp_path)
    result = invoke(path, "--data", small_repo, "--json", "-")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    document = json.loads(result.stdout)  # only the JSON on standard output
    assert "Table 2" in result.stderr
    assert "JSON written to standard output" in result.stderr
    splits = json.loads((small_repo / "splits.json").read_text())["configs"]["labeled"]["test"]
    assert document["scored_on"] == {
        "predictions": str(path),
        "predictions_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "predictions_bytes": path.stat().st_size,
        "data": str(small_repo),
        "config": "labeled",
        "split": "test",
        "events": splits["events"],
        "spacepoints": splits["spacepoints"],
        "ids_sha256": splits["ids_sha256"],
        "shards_sha256": [s["sha256"] for s in splits["shards"]],
        "tool_version": fm4npp_data.__version__,
    }
    figures = {k: v for k, v in document.items() if k != "scored_on"}
    assert figures == score(path, small_repo)
    assert document["pid"]["accuracy"] == 1.0


def test_json_to_a_file_carries_the_identity_too(small_repo, tmp_path):
    path = predictions(small_repo, "validation", tmp_path / "val.parquet")
    out = tmp_path / "scores.json"
    result = invoke(path, "--data", small_repo, "--split", "validation", "--json", out)
    assert result.exit_code == 0, result.output
    scored = json.loads(out.read_text())["scored_on"]
    splits = json.loads((small_repo / "splits.json").read_text())["configs"]["labeled"]["validation"]
    assert (scored["split"], scored["ids_sha256"]) == ("validation", splits["ids_sha256"])
    assert "Table 2" in result.stdout


# ------------------------------------------------------------------------------------------------------------
# Messages, not tracebacks (item 4)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"rule": {}, "files": {}, "configs": {"labeled": {"test": {"events": "many"}}}}', "'events' is not a count"),
    ],
    ids=["not-json", "a-list", "wrong-types"],
)
def test_a_damaged_splits_json_is_a_message(small_repo, tmp_path, text, problem):
    repo = tmp_path / "repo"
    shutil.copytree(small_repo, repo)
    (repo / "splits.json").write_text(text)
    path = predictions(small_repo, "test", tmp_path / "p.parquet")
    assert_message(invoke(path, "--data", repo), f"{repo / 'splits.json'}: ", problem, "download it again")


def test_a_truncated_truth_shard_is_a_message(small_repo, tmp_path, rerecord):
    """Truncated, with splits.json recording the truncated bytes (past the checksum): the reader names the shard."""
    repo = tmp_path / "repo"
    shutil.copytree(small_repo, repo)
    shard = sorted((repo / "data" / "labeled").glob("test-*.parquet"))[-1]
    shard.write_bytes(shard.read_bytes()[:-200])
    rerecord(repo)
    path = predictions(small_repo, "test", tmp_path / "p.parquet")
    assert_message(
        invoke(path, "--data", repo), f"Error: {shard}: cannot be read as Parquet", f"fm4npp-data verify {repo}"
    )
    with pytest.raises(DatasetError, match=f"{shard}: cannot be read as Parquet"):
        read_truth([shard], ["pid"])


def test_predictions_for_another_split_suggest_the_split(small_repo, tmp_path):
    path = predictions(small_repo, "validation", tmp_path / "val.parquet")
    n = split_truth(small_repo, "validation").height
    assert_message(
        invoke(path, "--data", small_repo),
        f"{path}: the predictions are for another split: {n} of their "
        f"{n} events are not events of split 'test' of {small_repo} but of split 'validation'",
        "score the file with --split validation",
    )
    assert invoke(path, "--data", small_repo, "--split", "validation").exit_code == 0


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damaged_page(path: Path) -> None:
    """Bytes in the middle of the last column's compressed page overwritten; the footer intact."""
    chunk = pq.read_metadata(path).row_group(0).column(2)
    data = bytearray(path.read_bytes())
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[middle : middle + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_truncated, "not a readable Parquet file"), (_damaged_page, "the file is damaged")],
    ids=["truncated", "damaged-page"],
)
def test_a_truncated_or_damaged_predictions_file_is_a_message(small_repo, tmp_path, damage, message):
    path = tmp_path / "p.parquet"
    split_truth(small_repo, "test").select("run", "event", "pid").write_parquet(path, compression="zstd")
    damage(path)
    assert_message(invoke(path, "--data", small_repo), f"Error: {path}: {message}", "write the predictions")


# ------------------------------------------------------------------------------------------------------------
# A footer that lies, and predictions of two splits
# ------------------------------------------------------------------------------------------------------------


def _varint(value: int, width: int = 0) -> bytes:
    """Thrift's compact varint of a zigzag-encoded int64, padded with continuation bytes to `width` bytes."""
    value, out = value << 1, bytearray()
    while value >= 0x80 or len(out) + 1 < width:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def test_a_footer_that_understates_a_list_is_a_message(small_repo, tmp_path):
    """A footer edited to declare one entry per row for a list whose pages hold 100,000: the footer check passes,
    polars panics decoding the pages (a BaseException), and the leaderboard says the file is damaged."""
    keys = split_truth(small_repo, "test").select("run", "event").to_arrow()
    offsets = np.zeros(keys.num_rows + 1, np.int32)
    offsets[1:] = 100_000
    noise = pa.ListArray.from_arrays(pa.array(offsets), pa.repeat(pa.scalar(True), 100_000))
    path = tmp_path / "liar.parquet"
    pq.write_table(keys.append_column("noise", noise), path, data_page_size=1024)  # several pages
    declared = pq.read_metadata(path).row_group(0).column(2).num_values
    data = path.read_bytes()
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    true = _varint(declared)
    assert data[footer:].count(true) == 1
    path.write_bytes(data[:footer] + data[footer:].replace(true, _varint(keys.num_rows, len(true))))
    assert pq.read_metadata(path).row_group(0).column(2).num_values == keys.num_rows
    assert_message(invoke(path, "--data", small_repo), f"Error: {path}: the file is damaged", "write the predictions")


def test_predictions_of_two_splits_say_so(small_repo, tmp_path):
    """Every test event and every validation event: --split validation would not score it either."""
    both = pl.concat([split_truth(small_repo, s).select("run", "event", "pid") for s in ("test", "validation")])
    path = tmp_path / "both.parquet"
    both.write_parquet(path)
    test, validation = (split_truth(small_repo, s).height for s in ("test", "validation"))
    result = invoke(path, "--data", small_repo)
    assert_message(
        result,
        f"{path}: the predictions mix splits: {test} of their {test + validation} events are "
        f"events of split 'test' of {small_repo}, {validation} of split 'validation', (run ",
        "a predictions file holds the events of one split: remove the others",
    )
    assert "score the file with --split validation" not in result.output
