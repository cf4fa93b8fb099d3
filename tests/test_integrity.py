"""Data checked when read (fm4npp_data.integrity): a repository's shards against splits.json in the leaderboard, the
loader, `fm4npp_data.load`; the verified-once stamps and their cache file; a corrupt splits.json; Parquet page
checksums written and verified; the loader's `order` and `knn` invariants."""

import errno
import io
import json
import os
import re
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fm4npp_data import integrity
from fm4npp_data.dataset import read_events
from fm4npp_data.errors import DatasetError
from fm4npp_data.integrity import RepoError, checked_shards, read_splits

HINT = "fm4npp-data verify"


@pytest.fixture
def repo(small_repo, tmp_path, monkeypatch):
    """A copy of the session's small repository, with the stamp cache in tmp_path and empty in memory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "_verified", {})
    copy = tmp_path / "repo"
    shutil.copytree(small_repo, copy)
    return copy


def shard(repo, config, split):
    return sorted((repo / "data" / config).glob(f"{split}-*.parquet"))[0]


def rewrite(path, column, change):
    """Rewrite a shard with `change(flat values)` applied to a list column (as a user or a tool would)."""
    table = pq.read_table(path)
    col = table[column].combine_chunks()
    values = change(pc.list_flatten(col).to_numpy(zero_copy_only=False).copy())
    new = pa.ListArray.from_arrays(col.offsets, pa.array(values, col.type.value_type))
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, new), path, compression="zstd")


def hashed(monkeypatch):
    """The paths integrity hashes from now on."""
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real(p))
    return calls


# ------------------------------------------------------------------------------------------------------------
# A changed shard is refused where it is read
# ------------------------------------------------------------------------------------------------------------


def test_the_leaderboard_refuses_a_rewritten_test_shard(repo, tmp_path):
    from fm4npp_cli.leaderboard import leaderboard

    from fm4npp_data.evaluation.leaderboard import score

    test = shard(repo, "labeled", "test")
    truth = pl.read_parquet(test, columns=["run", "event", "pid"])
    predictions = tmp_path / "p.parquet"
    truth.with_columns(pl.col("pid").list.eval(pl.lit(0, pl.Int8))).write_parquet(predictions)
    rewrite(test, "pid", lambda pid: np.zeros_like(pid))  # the truth made to agree with the predictions
    with pytest.raises(RepoError, match=rf"{test}: its (sha256|size) differs from splits.json's.*{HINT} {repo}"):
        score(predictions, repo)
    result = CliRunner().invoke(leaderboard, [str(predictions), "--data", str(repo)])
    assert result.exit_code == 2
    assert "Error: " + f"{test}: its " in result.output
    assert "differs from splits.json's" in result.output
    assert "accuracy" not in result.output
    assert "Traceback" not in result.output


def test_the_loader_refuses_one_changed_energy_in_a_train_shard(repo):
    from fm4npp_data.loader import make_loader

    train = shard(repo, "labeled", "train")
    make_loader(repo, "labeled", "train", batch_tokens=4000)  # as built: fine

    def change(energy):
        energy[17] += 1.0
        return energy

    rewrite(train, "energy", change)
    with pytest.raises(RepoError, match=rf"{train}: its (sha256|size) differs from splits.json's.*{HINT}"):
        make_loader(repo, "labeled", "train", batch_tokens=4000)
    make_loader(repo, "labeled", "test", batch_tokens=4000)  # another split's shards are not concerned


def test_load_checks_the_shards_before_datasets_reads_them(repo):
    from fm4npp_data.repo.hub import load

    validation = shard(repo, "labeled", "validation")
    rewrite(validation, "energy", lambda energy: energy * 2)
    with pytest.raises(RepoError, match=rf"{validation}: its (sha256|size) differs.*{HINT}"):
        load(repo, "labeled", split="validation")
    with pytest.raises(RepoError, match=rf"{validation}: its (sha256|size) differs"):
        load(repo, "labeled")  # every split
    assert load(repo, "pretrain", split="train").num_rows > 0


def test_a_shard_splits_json_does_not_list_or_a_listed_one_missing(repo):
    splits = json.loads((repo / "splits.json").read_text())
    test = splits["configs"]["labeled"]["test"]
    listed = test["shards"][0]
    test["shards"] = []
    (repo / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(
        RepoError,
        match=rf"{shard(repo, 'labeled', 'test')}: a shard that .*splits.json does not "
        rf"list; run `{HINT} {repo}`",
    ):
        checked_shards(repo, "labeled", "test")
    test["shards"] = [listed, {**listed, "path": "test-00001-of-00002.parquet"}]
    (repo / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(RepoError, match=r"test-00001-of-00002.parquet: listed in splits.json but missing"):
        checked_shards(repo, "labeled", "test")
    (repo / "splits.json").unlink()
    with pytest.raises(RepoError, match=r"splits.json: missing, so the shards cannot be checked; rebuild"):
        checked_shards(repo, "labeled", "test")


# ------------------------------------------------------------------------------------------------------------
# splits.json: read and checked for shape
# ------------------------------------------------------------------------------------------------------------


def _set(path, value):
    def change(splits):
        node = splits
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return splits

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda _: "{not json", "not readable JSON"),
        (lambda _: [1, 2], "a JSON list, not an object"),
        (_set(["configs"], []), "no 'configs' object"),
        (_set(["configs", "labeled", "test", "events"], "8"), "configs.labeled.test: 'events' is not a count"),
        (_set(["configs", "labeled", "test", "shards"], {}), "'shards' is not a list"),
        (_set(["configs", "labeled", "test", "shards", 0, "sha256"], "abc"), "'sha256' is not a sha256 digest"),
        (_set(["configs", "labeled", "test", "shards", 0, "path"], "../../../etc/passwd"), "is not test-NNNNN"),
        (_set(["rule", "labeled_key_max"], "big"), "rule.labeled_key_max is not a count"),
        (lambda _: "[" * 100_000 + "]" * 100_000, "not readable JSON"),  # nested beyond Python's recursion limit
    ],
)
def test_a_corrupt_or_wrong_shaped_splits_json_is_named(repo, change, problem):
    from fm4npp_cli.data import main as data_main
    from fm4npp_cli.leaderboard import leaderboard

    from fm4npp_data.repo.verify import verify

    splits = change(json.loads((repo / "splits.json").read_text()))
    (repo / "splits.json").write_text(splits if isinstance(splits, str) else json.dumps(splits))
    message = rf"{repo / 'splits.json'}: .*{problem}.*rebuild the repository \(fm4npp-data build\) or download it"
    with pytest.raises(RepoError, match=message):
        read_splits(repo)
    with pytest.raises(RepoError, match=message):
        verify(repo)
    with pytest.raises(RepoError, match=message):
        checked_shards(repo, "labeled", "test")
    result = CliRunner().invoke(leaderboard, [str(repo / "p.parquet"), "--data", str(repo)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = CliRunner().invoke(data_main, ["verify", str(repo)])
    assert result.exit_code == 2
    assert f"Error: {repo / 'splits.json'}: " in result.output


def test_repo_error_is_one_class_and_integrity_imports_nothing_heavy(python_without):
    import fm4npp_data.repo.build
    import fm4npp_data.repo.hub
    import fm4npp_data.repo.layout
    import fm4npp_data.repo.verify

    repo = fm4npp_data.repo
    assert repo.build.RepoError is repo.hub.RepoError is repo.layout.RepoError is repo.verify.RepoError is RepoError
    assert issubclass(RepoError, DatasetError)
    done = python_without(
        ("torch", "awkward", "polars", "datasets", "numba"), "import fm4npp_data.integrity; print('ok')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------------------------
# Verified once: the stamps in memory and in the cache file
# ------------------------------------------------------------------------------------------------------------


def test_a_shard_is_hashed_once_until_it_changes(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "RACY_SECONDS", 0.0)
    calls = hashed(monkeypatch)
    test = shard(repo, "labeled", "test")
    assert checked_shards(repo, "labeled", "test") == [test]
    assert calls == [test]
    checked_shards(repo, "labeled", "test")  # this process remembers it
    assert calls == [test]
    cache = tmp_path / "cache" / "fm4npp" / "verified-shards.json"
    stamps = json.loads(cache.read_text())["stamps"]
    assert list(stamps) == [str(test.resolve())]
    assert stamps[str(test.resolve())][-1] == read_splits(repo)["configs"]["labeled"]["test"]["shards"][0]["sha256"]
    monkeypatch.setattr(integrity, "_verified", {})  # a new process: the cache file spares the hash
    checked_shards(repo, "labeled", "test")
    assert calls == [test]
    # the same size and mtime, another content: the ctime moved, so it is hashed again and refused
    st = test.stat()
    data = bytearray(test.read_bytes())
    data[len(data) // 2] ^= 0xFF
    test.write_bytes(bytes(data))
    os.utime(test, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert test.stat().st_size == st.st_size
    assert test.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(RepoError, match=rf"{test}: its sha256 differs"):
        checked_shards(repo, "labeled", "test")
    assert calls == [test, test]


def test_a_recently_written_shard_gets_no_stamp(repo, tmp_path, monkeypatch):
    calls = hashed(monkeypatch)
    test = shard(repo, "labeled", "test")
    checked_shards(repo, "labeled", "test")  # the copy was written just now: too recent to trust its timestamps
    checked_shards(repo, "labeled", "test")
    assert calls == [test, test]
    assert not (tmp_path / "cache" / "fm4npp" / "verified-shards.json").exists()


def test_no_cache_directory_and_nothing_written_in_the_repository(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "RACY_SECONDS", 0.0)
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))  # the cache cannot be written
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*")}
    calls = hashed(monkeypatch)
    for split in ("train", "validation", "test"):
        checked_shards(repo, "labeled", split)
    checked_shards(repo, "labeled", "test")
    assert len(calls) == 3  # remembered in memory all the same
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*")} == before


def test_a_damaged_cache_file_is_ignored(repo, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "fm4npp" / "verified-shards.json"
    cache.parent.mkdir(parents=True)
    cache.write_text('{"format": "fm4npp-verified-shards/1", "stamps": [')
    calls = hashed(monkeypatch)
    checked_shards(repo, "labeled", "test")
    assert len(calls) == 1


def test_a_cache_file_nested_too_deep_is_ignored(repo, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "fm4npp" / "verified-shards.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("[" * 100_000 + "]" * 100_000)  # json.loads raises RecursionError, not ValueError
    calls = hashed(monkeypatch)
    assert checked_shards(repo, "labeled", "test") == [shard(repo, "labeled", "test")]
    assert len(calls) == 1


def test_a_filesystem_without_flock_only_means_no_lock(repo, tmp_path, monkeypatch):
    """Lustre mounted without -o flock answers ENOSYS: the shards are checked and stamped all the same."""

    def no_flock(*_):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(integrity, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(integrity.fcntl, "flock", no_flock)
    test = shard(repo, "labeled", "test")
    assert checked_shards(repo, "labeled", "test") == [test]
    stamps = json.loads((tmp_path / "cache" / "fm4npp" / "verified-shards.json").read_text())["stamps"]
    assert list(stamps) == [str(test.resolve())]


def test_a_relative_xdg_cache_home_writes_nothing_in_the_working_folder(repo, tmp_path, monkeypatch):
    """A relative XDG_CACHE_HOME is ignored (the XDG spec); without a known home folder there is no cache file."""
    monkeypatch.setattr(integrity, "RACY_SECONDS", 0.0)
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(repo)  # the working folder is the repository
    before = sorted(repo.rglob("*"))
    checked_shards(repo, "labeled", "test")
    assert sorted(repo.rglob("*")) == before
    assert (tmp_path / "home" / ".cache" / "fm4npp" / "verified-shards.json").is_file()
    monkeypatch.setattr(integrity, "_verified", {})
    monkeypatch.setattr(integrity.os.path, "expanduser", lambda path: path)  # no HOME, a uid without a passwd entry
    assert integrity.cache_file() is None
    checked_shards(repo, "labeled", "test")
    assert sorted(repo.rglob("*")) == before


# ------------------------------------------------------------------------------------------------------------
# Parquet page checksums
# ------------------------------------------------------------------------------------------------------------


def flip_a_page_byte(path, column="energy"):
    """Flip one byte inside a page of `column` (row group 0) such that a reader that does not verify page checksums
    reads other values without an error; the byte's position."""
    original = path.read_bytes()
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(0).column(_leaf(meta, column))
    expected = pq.ParquetFile(path).read_row_group(0, columns=[column])
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    for pos in start + (np.linspace(0.2, 0.98, 200) * chunk.total_compressed_size).astype(int):  # past the headers
        data = bytearray(original)
        data[pos] ^= 0x04
        try:
            got = pq.ParquetFile(io.BytesIO(bytes(data))).read_row_group(0, columns=[column])
        except (OSError, pa.ArrowException):
            continue
        if not got.equals(expected):
            path.write_bytes(bytes(data))
            return pos
    raise AssertionError("no byte flips a value silently")


def _leaf(meta, column):
    return next(i for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema.startswith(column))


def test_a_flipped_bit_in_a_page_is_caught_by_the_reader(repo, rerecord):
    from fm4npp_data.loader import make_loader

    test = shard(repo, "labeled", "test")
    flip_a_page_byte(test)
    rerecord(repo)  # splits.json made to agree: only the page checksum can tell
    loader = make_loader(repo, "labeled", "test", batch_tokens=100_000)
    with pytest.raises(DatasetError, match=rf"{test}: cannot read row group 0 .*CRC.*a page checksum fails.*{HINT}"):
        list(loader)
    with pytest.raises(DatasetError, match=rf"{test}: cannot be read as Parquet .*a page checksum fails.*{HINT}"):
        read_events(test, columns=["energy"])


@pytest.mark.parametrize("stage", ["converted", "prepared"])
def test_converted_and_prepared_shards_carry_page_checksums(small_repo, sim_svtx, tmp_path, stage):
    """convert's ShardWriter, and prepare's rewrite (the session's prepared set below small_repo's folder)."""
    from fm4npp_data.conversion.convert import ConvertOptions, convert

    events = tmp_path / "events"
    if stage == "converted":
        convert([sim_svtx], events, ConvertOptions(shard_events=100))
    else:
        shutil.copytree(small_repo.parent / "events", events)
    first = sorted(events.glob("*.parquet"))[0]
    flip_a_page_byte(first, "x")
    with pytest.raises(
        DatasetError,
        match=rf"{first}: cannot be read as Parquet .*a page checksum fails: the file is "
        "damaged: convert or prepare its set again",
    ):
        read_events(events, columns=["x"])


def test_prepare_refuses_a_converted_shard_with_a_damaged_page(sim_svtx, tmp_path):
    """prepare rewrites every shard: reading one without its page checksums would carry the flipped value into the
    prepared set under a valid checksum and a new sha256."""
    from fm4npp_data.conversion.convert import ConvertOptions, convert
    from fm4npp_data.preparation.prepare import PrepareOptions, prepare

    events = tmp_path / "events"
    convert([sim_svtx], events, ConvertOptions(shard_events=100))
    first = sorted(events.glob("*.parquet"))[0]
    flip_a_page_byte(first, "energy")
    summary = prepare(events, PrepareOptions(k=4, sample_events=100))
    assert str(first) not in summary.prepared
    assert len(summary.errors) == 1
    assert re.fullmatch(
        rf"{first}: cannot read the shard \(.*CRC.*\); it is damaged: convert its input again", summary.errors[0]
    )
    assert "order" not in pq.read_schema(first).names  # left as it was, not rewritten


# ------------------------------------------------------------------------------------------------------------
# The loader's invariants: order a permutation, knn in range
# ------------------------------------------------------------------------------------------------------------


def _replace_values(table, column, change):
    """The table with `change(flat values)` applied to the innermost values of a list column (order: list<int32>,
    knn: list<fixed_size_list<int32, k>>)."""
    col = table[column].combine_chunks()
    inner = col.values
    if column == "knn":
        values = inner.values.to_numpy().copy()
        change(values)
        new = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.int32()), inner.type.list_size)
    else:
        values = inner.to_numpy().copy()
        change(values)
        new = pa.array(values, inner.type)
    return table.set_column(table.schema.get_field_index(column), column, pa.ListArray.from_arrays(col.offsets, new))


@pytest.mark.parametrize(
    ("column", "change", "problem"),
    [
        (
            "order",
            lambda v, lo, _n, _k: v.__setitem__(lo + 1, v[lo]),
            "its `order` is not a permutation of its {n} spac",
        ),
        ("knn", lambda v, lo, n, k: v.__setitem__(k * lo, n), r"its `knn` holds indices outside \[-1, {n}\)"),
        ("knn", lambda v, lo, _n, k: v.__setitem__(k * lo + k - 1, -2), r"its `knn` holds indices outside \[-1, {n}\)"),
    ],
)
def test_an_order_that_is_not_a_permutation_or_knn_out_of_range_names_the_event(
    repo, rerecord, column, change, problem
):
    from fm4npp_data.loader import make_loader

    train = shard(repo, "labeled", "train")
    table = pq.read_table(train)
    lengths = pc.list_value_length(table["order"]).to_numpy()
    lo, n, k = int(lengths[:2].sum()), int(lengths[2]), table.schema.field("knn").type.value_type.list_size
    run, event = table["run"][2].as_py(), table["event"][2].as_py()  # the third event (of row group 0)
    pq.write_table(_replace_values(table, column, lambda values: change(values, lo, n, k)), train)
    rerecord(repo)
    loader = make_loader(repo, "labeled", "train", batch_tokens=100_000, shuffle=False)
    message = rf"{train} row group 0: .*\(run {run}, event {event}\): {problem.format(n=n)}.*`fm4npp-data prepare`"
    with pytest.raises(DatasetError, match=message):
        list(loader)
