"""fm4npp_data.parallel: one map over this process, local processes or a Dask cluster, failures as values."""

import json
import shutil

import pytest

from fm4npp_data.conversion.convert import convert
from fm4npp_data.errors import ConvertError
from fm4npp_data.files import sha256_file
from fm4npp_data.parallel import Failed, parallel_map
from fm4npp_data.preparation.prepare import PrepareOptions, prepare


def _checked_square(x: int) -> int:
    if x == 3:
        raise ConvertError("three is refused")
    if x == 4:
        raise KeyError("four")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_and_failures_come_back_for_every_item(workers):
    results = dict(parallel_map(_checked_square, [(i,) for i in range(6)], workers=workers))
    assert sorted(results) == list(range(6))
    assert [results[i] for i in (0, 1, 2, 5)] == [0, 1, 4, 25]
    assert results[3] == Failed("three is refused")
    assert results[4] == Failed("unexpected error (KeyError: 'four')", expected=False)


def test_workers_must_be_positive():
    with pytest.raises(ConvertError, match="--workers must be at least 1, not 0"):
        list(parallel_map(_checked_square, [(1,)], workers=0))


def test_prepare_on_a_dask_cluster_writes_the_same_shards(sim_svtx, tmp_path):
    distributed = pytest.importorskip("distributed")
    convert([sim_svtx], tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "dask")
    options = PrepareOptions(k=3, sample_events=60)
    local = prepare(tmp_path / "local", options)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        remote = prepare(tmp_path / "dask", options, scheduler=c.scheduler_address)
    assert local.errors == remote.errors == []
    assert len(remote.prepared) == len(local.prepared) == 2
    for name in ("manifest.json", "binning.json", "difficulty.json"):
        a = json.loads((tmp_path / "local" / name).read_text())
        b = json.loads((tmp_path / "dask" / name).read_text())
        a.pop("tool_version", None), b.pop("tool_version", None)
        assert a == b
    for shard in sorted((tmp_path / "local").glob("*.parquet")):
        assert sha256_file(shard) == sha256_file(tmp_path / "dask" / shard.name)
