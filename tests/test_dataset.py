"""fm4npp_data.dataset: the manifest as dataclasses, validation against the files, discovery, read_events."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.dataset import MANIFEST, EventSet, Manifest, find_sets, read_events
from fm4npp_data.errors import DatasetError


@pytest.fixture(scope="module")
def converted(sim_svtx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "events"
    convert([sim_svtx], out, ConvertOptions(shard_events=50))
    return out


def _copy(converted, tmp_path):
    shutil.copytree(converted, tmp_path / "events")
    return tmp_path / "events"


def test_manifest_round_trips_and_each_shard_checksum_is_written_once(converted, tmp_path):
    manifest = Manifest.load(converted)
    manifest.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text()) == json.loads((converted / MANIFEST).read_text())
    text = (converted / MANIFEST).read_text()
    for shard in manifest.shards:
        assert text.count(shard.sha256) == 1
    assert manifest.totals.events == sum(e.counts.events for e in manifest.inputs) == 240
    assert sum(s.events for s in manifest.shards) == 240
    assert EventSet.open(converted).manifest.problems(converted, checksums=True) == []


def test_problems_name_what_is_wrong(converted, tmp_path):
    data = _copy(converted, tmp_path)
    eset = EventSet.open(data)
    first, second = eset.shard_paths[:2]
    with open(first, "r+b") as f:  # same size, other bytes
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    second.unlink()
    (data / "stray-00000000-00000.parquet").write_bytes(b"x")
    problems = eset.manifest.problems(data, checksums=True)
    assert f"{first}: sha256 differs from the manifest's" in problems
    assert f"{second}: missing" in problems
    assert f"{data / 'stray-00000000-00000.parquet'}: a shard the manifest does not name" in problems
    assert eset.manifest.problems(data, checksums=False) == [p for p in problems if "sha256" not in p]
    eset.manifest.totals.events += 1
    with pytest.raises(DatasetError, match="totals are not the sum of the inputs' counts"):
        eset.validate(checksums=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "unreadable manifest"),
        ('{"format": "something-else"}', "not an fm4npp manifest"),
        ('{"format": "fm4npp-events", "manifest_version": 1}', "manifest version 1"),
        ('{"format": "fm4npp-events", "manifest_version": 2, "options": {}}', "damaged manifest"),
    ],
)
def test_a_damaged_manifest_is_a_message_not_a_traceback(converted, tmp_path, text, message):
    data = _copy(converted, tmp_path)
    (data / MANIFEST).write_text(text)
    with pytest.raises(DatasetError, match=message):
        Manifest.load(data)
    for command in (["inspect", str(data)], ["prepare", str(data)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2
        assert message in result.output
        assert isinstance(result.exception, SystemExit)


def test_find_sets_and_read_events_with_selections(converted, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(converted, root / "a")
    shutil.copytree(converted, root / "b" / "c")
    assert find_sets(root) == [root / "a", root / "b" / "c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no manifest.json here or below"):
        find_sets(tmp_path / "empty")
    everything = read_events(converted)
    assert everything.num_rows == 240
    shards = EventSet.open(converted).shard_paths
    direct = [pq.read_table(s) for s in shards]
    assert everything.column("x").to_pylist() == [v for t in direct for v in t.column("x").to_pylist()]
    run = everything["run"][0].as_py()
    event = everything["event"][0].as_py()
    one = read_events(converted, columns=["run", "event", "x"], run=run, event=event)
    assert one.column_names == ["run", "event", "x"]
    assert one.num_rows == 1
    assert one["x"].to_pylist() == everything["x"].to_pylist()[:1]
    several = read_events(converted, columns=["event"], run=run, event=[0, 1, 2, 10**9])
    assert sorted(several["event"].to_pylist()) == [0, 1, 2]
    none = read_events(converted, columns=["run", "event"], event=10**9)
    assert none.num_rows == 0
    assert none.column_names == ["run", "event"]
    both = read_events(root)
    assert both.num_rows == 480
    _, per_run = np.unique(both["run"].to_numpy(), return_counts=True)
    assert per_run.tolist() == [240, 240]  # two files of 120 events, each set copied twice


def test_read_events_limit_reads_only_the_first_events(converted):
    first = read_events(converted, columns=["run", "event"], limit=70)
    assert first.num_rows == 70
    everything = read_events(converted, columns=["run", "event"])
    assert first.to_pylist() == everything.slice(0, 70).to_pylist()
    assert read_events(converted, limit=10**6).num_rows == 240
