"""The dataset repository: build -> verify -> load_dataset offline; splits disjoint, complete and stable; errors."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import convert
from fm4npp_data.dataset import read_events
from fm4npp_data.errors import RepoError
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.repo.build import BuildOptions, build
from fm4npp_data.repo.hub import load, publish
from fm4npp_data.repo.verify import verify
from fm4npp_data.simulation import simulate
from fm4npp_data.splits import labeled_key, pretrain_split_of, split_of


@pytest.fixture(scope="module")
def prepared(sim_svtx, sim_trkr, tmp_path_factory):
    """A prepared svtx set (240 events, labels) and a prepared truth-less set (trkr, with the svtx binning)."""
    root = tmp_path_factory.mktemp("repo-in")
    convert([sim_svtx], root / "svtx")
    prepare(root / "svtx", PrepareOptions(k=4, sample_events=100))
    convert([sim_trkr], root / "trkr")
    prepare(root / "trkr", PrepareOptions(k=4), binning=root / "svtx" / "binning.json")
    return root


@pytest.fixture(scope="module")
def repo(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo") / "tpc-pp200"
    build([prepared / "svtx", prepared / "trkr"], out, BuildOptions(labeled_events=100, shard_events=30))
    return out


def _ids(table):
    return set(zip(table["run"].to_pylist(), table["event"].to_pylist(), strict=True))


def test_configs_and_splits_are_disjoint_complete_and_follow_the_rules(prepared, repo):
    inputs = read_events(prepared / "svtx", columns=["run", "event", "x"])
    truthless = read_events(prepared / "trkr", columns=["run", "event", "x"])
    nonempty = set()
    for table in (inputs, truthless):
        keys = zip(table["run"].to_pylist(), table["event"].to_pylist(), strict=True)
        nonempty |= {key for key, x in zip(keys, table["x"].to_pylist(), strict=True) if x}
    splits = json.loads((repo / "splits.json").read_text())["configs"]
    seen = {}
    for config, names in (("labeled", ("train", "validation", "test")), ("pretrain", ("train", "validation"))):
        for split in names:
            table = _split_table(repo, config, split)
            assert table.num_rows == splits[config][split]["events"]
            for key in _ids(table):
                assert key not in seen, f"{key} in {seen.get(key)} and {config}/{split}"
                seen[key] = (config, split)
            run, event = table["run"].to_numpy(), table["event"].to_numpy()
            if config == "labeled":
                np.testing.assert_array_equal(split_of(run, event), names.index(split))
            else:
                np.testing.assert_array_equal(pretrain_split_of(run, event), names.index(split))
    assert set(seen) == nonempty  # complete: every non-empty event once
    labeled = {k for k, v in seen.items() if v[0] == "labeled"}
    assert len(labeled) == 100
    assert labeled <= _ids(inputs)  # only events with labels
    svtx = np.array(sorted(_ids(inputs) & nonempty))
    keys = labeled_key(svtx[:, 0], svtx[:, 1])
    smallest = {tuple(x) for x in svtx[np.argsort(keys)[:100]].tolist()}
    assert labeled == smallest
    manifest = json.loads((repo / "manifest.json").read_text())
    empty = inputs.num_rows + truthless.num_rows - len(nonempty)
    assert manifest["excluded"] == {"empty": empty}


def _split_table(repo, config, split):
    paths = sorted((repo / "data" / config).glob(f"{split}-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else pa.table({"run": [], "event": []})


def test_load_dataset_offline_gives_exactly_the_parquet_content(repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = load(repo, "labeled")
    assert set(ds) == {"train", "validation", "test"}
    for split in ds:
        expected = _split_table(repo, "labeled", split)
        got = ds[split].with_format("arrow")[:]
        assert got.column_names == expected.column_names
        for name in expected.column_names:
            assert got[name].to_pylist() == expected[name].to_pylist(), (split, name)
    pretrain = load(repo, "pretrain", split="train")
    assert "pid" not in pretrain.column_names
    assert pretrain.num_rows == _split_table(repo, "pretrain", "train").num_rows
    with pytest.raises(RepoError, match="unknown config 'nope'"):
        load(repo, "nope")


def test_rebuilding_in_another_order_with_other_workers_gives_the_same_repository(prepared, repo, tmp_path):
    other = tmp_path / "again"
    build([prepared / "trkr", prepared / "svtx"], other, BuildOptions(labeled_events=100, shard_events=30), workers=2)
    a = json.loads((repo / "splits.json").read_text())
    b = json.loads((other / "splits.json").read_text())
    assert a == b  # same events, same shards, same sha256


def test_verify_names_a_corrupted_shard_and_a_misplaced_event(repo, tmp_path):
    assert verify(repo)["labeled"]["train"] > 0
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    shard = sorted((broken / "data" / "labeled").glob("train-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["verify", str(broken)])
    assert result.exit_code == 2
    assert f"{shard}: its sha256 or size differs from splits.json" in result.output
    # an event moved to another split, with splits.json rewritten to match the files: the rule catches it
    moved = tmp_path / "moved"
    shutil.copytree(repo, moved)
    val = sorted((moved / "data" / "labeled").glob("validation-*.parquet"))[0]
    test = sorted((moved / "data" / "labeled").glob("test-*.parquet"))[0]
    t_val, t_test = pq.read_table(val), pq.read_table(test)
    ordered = [("run", "ascending"), ("event", "ascending")]
    pq.write_table(pa.concat_tables([t_test, t_val.slice(0, 1)]).sort_by(ordered), test)
    pq.write_table(t_val.slice(1), val)
    splits = json.loads((moved / "splits.json").read_text())
    from fm4npp_data.files import sha256_file
    from fm4npp_data.repo.layout import ids_digest

    for path, split in ((val, "validation"), (test, "test")):
        info = splits["configs"]["labeled"][split]
        table = pq.read_table(path)
        info["shards"][0].update(bytes=path.stat().st_size, sha256=sha256_file(path), events=table.num_rows)
        info["events"] = table.num_rows
        info["spacepoints"] = sum(len(x) for x in table["x"].to_pylist())
        info["ids_sha256"] = ids_digest(table["run"].to_numpy(), table["event"].to_numpy())
    (moved / "splits.json").write_text(json.dumps(splits))
    run, event = t_val["run"][0].as_py(), t_val["event"][0].as_py()
    with pytest.raises(
        RepoError, match=rf"\(run {run}, event {event}\) belongs to labeled/validation by the split rule"
    ):
        verify(moved)


def test_build_refuses_two_binnings_and_unprepared_sets(prepared, sim_svtx, tmp_path):
    other = tmp_path / "other"
    convert([sim_svtx], other)
    with pytest.raises(RepoError, match="not prepared"):
        build([other], tmp_path / "r1")
    prepare(other, PrepareOptions(k=4, sample_events=50, seed=9))
    with pytest.raises(RepoError, match=r"was prepared with .* but .* with .*: a repository holds one binning"):
        build([prepared / "trkr", other], tmp_path / "r2")
    shutil.rmtree(other)
    shutil.copytree(prepared / "svtx", other)
    with pytest.raises(RepoError, match="the inputs overlap"):
        build([prepared / "svtx", other], tmp_path / "r3")
    assert not (tmp_path / "r3").exists()


def test_the_default_labeled_size_keeps_both_configs(tmp_path):
    simulate(30, tmp_path / "sim", seed=21, events_per_file=30)
    convert([tmp_path / "sim"], tmp_path / "ev")
    prepare(tmp_path / "ev", PrepareOptions(k=3))
    result = CliRunner().invoke(main, ["build", str(tmp_path / "ev"), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    counts = verify(tmp_path / "repo")
    nonempty = sum(1 for x in read_events(tmp_path / "ev", columns=["x"])["x"].to_pylist() if x)
    assert sum(counts["labeled"].values()) == nonempty // 5
    assert sum(counts["pretrain"].values()) == nonempty - nonempty // 5


def test_an_imported_release_keeps_its_splits(tmp_path, make_release):
    from fm4npp_data.conversion.release import import_release

    make_release(tmp_path / "release", seed=2)
    import_release(tmp_path / "release", tmp_path / "data")
    prepare(tmp_path / "data", PrepareOptions(k=3))
    build([tmp_path / "data"], tmp_path / "repo")
    counts = verify(tmp_path / "repo")
    for split in ("train", "validation", "test"):
        part = read_events(tmp_path / "data" / "labeled" / split, columns=["x"])
        assert counts["labeled"][split] == sum(1 for x in part["x"].to_pylist() if x)
    assert sum(counts["pretrain"].values()) == 0


def test_the_card_is_filled_from_the_data_and_publish_stops_before_the_network(repo, monkeypatch):
    text = (repo / "README.md").read_text()
    assert text.startswith("---\nlicense: cc-by-4.0\n")
    assert "{{" not in text
    manifest = json.loads((repo / "manifest.json").read_text())
    total = sum(v["events"] for d in manifest["counts"].values() for v in d.values())
    assert f"{total:,}" in text
    plan = publish(repo, "fm4npp/tpc-pp200", dry_run=True)
    assert ("splits.json", (repo / "splits.json").stat().st_size) in plan
    assert all(not p.startswith(".") for p, _ in plan)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RepoError, match="HF_HUB_OFFLINE is set"):
        publish(repo, "fm4npp/tpc-pp200")
    with pytest.raises(RepoError, match="--repo-id must look like OWNER/NAME"):
        publish(repo, "no slash", dry_run=True)


def test_repository_figures_show_the_data_of_each_split(repo, tmp_path):
    from matplotlib.colors import to_rgba

    from fm4npp_data.plots import dataset as dp

    result = CliRunner().invoke(main, ["stats", str(repo), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(line.split("/")[-1] for line in result.output.splitlines())
    assert names == ["class_ratios.png", "energy_vs_momentum.png", "event_labels.png", "event_sizes.png"]
    # class ratios: bar heights are the fractions computed here from the shards
    table = dp.split_table(repo, "labeled", "test", ["pid", "noise"])
    pid = np.concatenate([np.asarray(v, np.int64) for v in table["pid"].to_pylist()])
    noise = np.concatenate([np.asarray(v, bool) for v in table["noise"].to_pylist()])
    expected = np.append(np.bincount(pid, minlength=5) / pid.size, noise.mean())
    fig = dp.class_ratios_figure({"test": expected})
    np.testing.assert_allclose([b.get_height() for b in fig.axes[0].patches], expected)
    # event sizes: each split's histogram holds all its events (density: the areas sum to 1)
    sizes = {"labeled/test": np.array([5, 7, 7, 120]), "pretrain/train": np.array([3, 400])}
    fig = dp.event_sizes_figure(sizes, {"labeled/test": np.array([1, 2, 2, 9])})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["labeled/test: 4 events, mean 35", "pretrain/train: 2 events, mean 202"]
    # the labeled event: PID colours per spacepoint, noise drawn on top in red
    x, y = np.arange(4.0), np.arange(4.0) + 10
    fig = dp.event_labels_figure(
        x, y, np.array([0, 0, 1, -1]), np.array([1, 2, 4, 0]), np.array([1, 0, 0, 0], bool), "t"
    )
    by_pid = fig.axes[1].collections[0].get_facecolors()
    np.testing.assert_allclose(by_pid, [to_rgba(dp.PID_COLORS[c]) for c in (1, 2, 4, 0)])
    by_noise = fig.axes[2].collections[0]
    np.testing.assert_array_equal(by_noise.get_offsets()[-1], [0.0, 10.0])  # the noise point, last
    np.testing.assert_allclose(by_noise.get_facecolors()[-1], to_rgba("tab:red"))


def test_the_loader_reads_a_built_repository_every_event_once(repo):
    pytest.importorskip("torch")
    from fm4npp_data.loader import make_loader

    for config, split in (("labeled", "train"), ("pretrain", "train")):
        seen = []
        for rank in (0, 1):
            loader = make_loader(repo, config, split, batch_tokens=4096, seed=3, rank=rank, world_size=2)
            for batch in loader:
                seen += list(zip(batch["run"].tolist(), batch["event"].tolist(), strict=True))
                assert ("track" in batch) == (config == "labeled")
        expected = _split_table(repo, config, split)
        assert sorted(seen) == sorted(_ids(expected))
        assert len(seen) == expected.num_rows


def test_build_checks_its_inputs_against_their_manifests(prepared, tmp_path):
    shutil.copytree(prepared / "svtx", tmp_path / "svtx")
    shard = sorted((tmp_path / "svtx").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(shard).slice(0, 10), shard)  # 110 events silently gone
    with pytest.raises(RepoError, match=f"{tmp_path / 'svtx'}: the set does not match its manifest"):
        build([tmp_path / "svtx"], tmp_path / "repo")


def test_interleaved_inputs_give_sorted_shards(prepared, tmp_path):
    data = tmp_path / "ev"
    shutil.copytree(prepared / "svtx", data)
    from fm4npp_data.dataset import Manifest
    from fm4npp_data.files import sha256_file

    manifest = Manifest.load(data)
    for i, shard in enumerate(manifest.shards):  # one run, events 2n and 2n + 1 in the two shards
        table = pq.read_table(data / shard.path)
        n = table.num_rows
        table = table.set_column(0, "run", pa.array(np.full(n, 7, np.int32)))
        table = table.set_column(1, "event", pa.array(2 * np.arange(n, dtype=np.int64) + i))
        pq.write_table(table, data / shard.path)
        shard.bytes, shard.sha256 = (data / shard.path).stat().st_size, sha256_file(data / shard.path)
    manifest.save(data)
    build([data], tmp_path / "repo", BuildOptions(labeled_events=50, shard_events=1000))
    assert verify(tmp_path / "repo")["labeled"]["train"] > 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "binning.json").write_text('{"r": [1]}'), "binning.json: its sha256 differs"),
        (lambda r: (r / "README.md").write_text("---\n---\n"), "README.md: its sha256 differs"),
        (lambda r: (r / "data" / "notes.txt").write_text("x"), "notes.txt: a file the repository does not list"),
        (lambda r: (r / "difficulty.json").unlink(), "difficulty.json: missing"),
    ],
)
def test_verify_checks_the_files_beside_the_data(repo, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    damage(copy)
    with pytest.raises(RepoError, match=message):
        verify(copy)


def test_labeled_events_cannot_apply_to_an_imported_release(tmp_path, make_release):
    from fm4npp_data.conversion.release import import_release

    make_release(tmp_path / "release", seed=4)
    import_release(tmp_path / "release", tmp_path / "data")
    prepare(tmp_path / "data", PrepareOptions(k=3))
    with pytest.raises(RepoError, match="--labeled-events cannot apply"):
        build([tmp_path / "data"], tmp_path / "repo", BuildOptions(labeled_events=3))
