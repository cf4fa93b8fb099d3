"""`fm4npp-data prepare`: derived columns equal the slow references on simulated data; idempotent, resumable."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import convert
from fm4npp_data.files import sha256_file
from fm4npp_data.kernels.binning import boxes_reference
from fm4npp_data.kernels.cylindrical import cylindrical
from fm4npp_data.kernels.knn import knn_reference
from fm4npp_data.kernels.raster import raster_order_reference
from fm4npp_data.preparation.prepare import PrepareOptions, prepare, prepare_shard
from fm4npp_data.prepared import difficulty_bin
from fm4npp_data.splits import split_of


@pytest.fixture(scope="module")
def converted(sim_svtx, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "events"
    convert([sim_svtx], out)
    return out


def _copy(converted, tmp_path):
    dst = tmp_path / "events"
    shutil.copytree(converted, dst)
    return dst


def test_prepare_adds_columns_equal_to_the_references(converted, tmp_path):
    data = _copy(converted, tmp_path)
    result = CliRunner().invoke(main, ["prepare", str(data), "--k", "4", "--sample-events", "100"])
    assert result.exit_code == 0, result.output
    binning = json.loads((data / "binning.json").read_text())
    assert len(binning["r"]) == 7
    assert len(binning["phi"]) == 9
    assert len(binning["eta"]) == 9
    assert binning["sample_events"] == 100
    assert binning["phi"][0] == pytest.approx(-np.pi)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["prepare"]["k"] == 4
    distances, runs, events = [], [], []
    for shard in manifest["shards"]:
        path = data / shard["path"]
        assert sha256_file(path) == shard["sha256"]
        table = pq.read_table(path)
        assert str(table.schema.field("knn").type) == "list<element: fixed_size_list<element: int32>[4]>"
        for row in table.slice(0, 40).to_pylist():
            x, y, z = (np.array(row[c], np.float32) for c in ("x", "y", "z"))
            r, phi, eta = cylindrical(x, y, z)
            np.testing.assert_array_equal(np.array(row["r"], np.float32), r)
            np.testing.assert_array_equal(np.array(row["eta"], np.float32), eta)
            box = boxes_reference(r, phi, eta, binning["r"], binning["phi"], binning["eta"])
            np.testing.assert_array_equal(np.array(row["box"], np.int16), box)
            offsets = np.array([0, len(x)])
            np.testing.assert_array_equal(row["order"], raster_order_reference(box, r, phi, eta, offsets))
            want, mean = knn_reference(x, y, z, offsets, 4)
            np.testing.assert_array_equal(np.array(row["knn"], np.int32).reshape(-1, 4), want)
            np.testing.assert_allclose(row["knn_mean_distance"], mean[0], rtol=1e-6)
            # neighbours lie at strictly larger r, and visiting in `order` sweeps boxes outward
            got = np.array(row["knn"], np.int64).reshape(-1, 4)
            has = got >= 0
            r64 = np.hypot(x.astype(np.float64), y.astype(np.float64))
            assert (r64[got[has]] > np.repeat(r64, 4).reshape(-1, 4)[has]).all()
            assert (np.diff(box[row["order"]]) >= 0).all()
        distances.append(table["knn_mean_distance"].to_numpy())
        runs.append(table["run"].to_numpy())
        events.append(table["event"].to_numpy())
    difficulty = json.loads((data / "difficulty.json").read_text())
    d = np.concatenate(distances)
    train = split_of(np.concatenate(runs), np.concatenate(events)) == 0
    assert difficulty["training_events"] == train.sum()
    bins = difficulty_bin(d[train], difficulty)
    assert (bins[~np.isfinite(d[train])] == -1).all()
    weights = np.array(difficulty["weights"])[bins[bins >= 0]]
    assert weights.mean() == pytest.approx(1.0, rel=1e-9)
    assert difficulty["weights"] == sorted(difficulty["weights"], reverse=True)  # sparse, hard events weigh less


def test_prepare_is_idempotent_resumable_and_parallel_safe(converted, tmp_path):
    a = _copy(converted, tmp_path / "a")
    b = _copy(converted, tmp_path / "b")
    first = prepare(a, PrepareOptions(k=3, sample_events=50))
    assert first.errors == []
    assert len(first.prepared) == len(json.loads((a / "manifest.json").read_text())["shards"])
    before = {p.name: sha256_file(p) for p in a.glob("*.parquet")}
    again = prepare(a, PrepareOptions(k=3))
    assert again.prepared == []
    assert len(again.unchanged) == len(before)
    assert {p.name: sha256_file(p) for p in a.glob("*.parquet")} == before
    # "interrupted" run: one shard done by hand, then the rest, in two processes, with a's binning
    shard = sorted(b.glob("*.parquet"))[0]
    prepare_shard(str(shard), json.loads((a / "binning.json").read_text()), 3, "hierarchical")
    resumed = prepare(b, PrepareOptions(k=3), binning=a / "binning.json", workers=2)
    assert resumed.unchanged == [str(shard)]
    assert len(resumed.prepared) == len(before) - 1
    assert {p.name: sha256_file(p) for p in b.glob("*.parquet")} == before
    assert json.loads((b / "difficulty.json").read_text()) == json.loads((a / "difficulty.json").read_text())


def test_prepare_errors_name_the_problem(tmp_path):
    result = CliRunner().invoke(main, ["prepare", str(tmp_path)])
    assert result.exit_code == 2
    assert "no manifest.json" in result.output
    bad = tmp_path / "binning.json"
    bad.write_text('{"r": [1, 2], "phi": [], "eta": []}')
    (tmp_path / "manifest.json").write_text('{"format": "fm4npp-events", "shards": []}')
    result = CliRunner().invoke(main, ["prepare", str(tmp_path), "--binning", str(bad)])
    assert result.exit_code == 2
    assert "binning.json: 'r' must be a list of 7 increasing finite numbers" in result.output
    bad.write_text('{"r": [31, 35, 40, 45, 50, 60, 76], "phi": [0, 1, 2, 3, 4, 5, 6, 7, 8], "eta": [1, 2]}')
    result = CliRunner().invoke(main, ["prepare", str(tmp_path), "--binning", str(bad)])
    assert result.exit_code == 2
    assert "'eta' must be a list of 9 increasing finite numbers" in result.output
    result = CliRunner().invoke(main, ["prepare", str(tmp_path)])  # a damaged manifest: a message, no traceback
    assert result.exit_code == 2
    assert "manifest.json: manifest version None" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_published_knn_variant_and_an_imported_release(tmp_path, make_release):
    from fm4npp_data import geometry as g
    from fm4npp_data.conversion.release import import_release
    from fm4npp_data.kernels.cylindrical import minmax

    make_release(tmp_path / "release", seed=8)
    import_release(tmp_path / "release", tmp_path / "data")
    summary = prepare(tmp_path / "data", PrepareOptions(k=3, knn="published"))
    assert summary.errors == []
    assert len(summary.prepared) == 3
    binning = json.loads((tmp_path / "data" / "binning.json").read_text())
    assert binning["training_events"] == "split 'train' part"
    assert binning["sample_events"] == 12
    table = pq.read_table(tmp_path / "data" / "labeled" / "test" / "test-00000.parquet")
    for row in table.to_pylist():
        x, y, z = (np.array(row[c], np.float32) for c in ("x", "y", "z"))
        r, phi, eta = cylindrical(x, y, z)
        by_r = np.lexsort((np.arange(len(r)), eta, phi, r))
        p = np.stack([minmax(eta, *g.ETA_RANGE), minmax(phi, *g.PHI_RANGE), minmax(r, *g.R_RANGE)], 1).astype(
            np.float64
        )
        got = np.array(row["knn"], np.int64).reshape(-1, 3)
        for pos, i in enumerate(by_r):  # candidates: the spacepoints after i in r order
            later = by_r[pos + 1 :]
            d = np.sqrt(((p[later] - p[i]) ** 2).sum(1))
            want = later[np.lexsort((later, d))][:3]
            assert got[i].tolist() == want.tolist() + [-1] * (3 - len(want))


def test_display_of_a_prepared_event(converted, tmp_path):
    from PIL import Image

    from fm4npp_data.plots.events import DPI, FIGSIZE

    data = _copy(converted, tmp_path)
    prepare(data, PrepareOptions(k=5, sample_events=50))
    ids = pq.read_table(sorted(data.glob("*.parquet"))[0], columns=["run", "event"])
    run, event = ids["run"][3].as_py(), ids["event"][3].as_py()
    out = tmp_path / "png" / "event.png"
    args = ["display", str(data), "--event", str(event), "--run", str(run), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    order_png = tmp_path / "png" / "event_order.png"
    assert result.output.splitlines() == [f"wrote {out}", f"wrote {order_png}"]
    for png, name in ((out, "event_display"), (order_png, "serialization")):
        with Image.open(png) as image:
            assert image.size == (int(FIGSIZE[name][0] * DPI), int(FIGSIZE[name][1] * DPI))
    missing = CliRunner().invoke(main, ["display", str(data), "--event", "999999", "--out", str(tmp_path / "x.png")])
    assert missing.exit_code == 2
    assert "no event 999999; events present: " in missing.output
