"""The PyTorch loader (fm4npp_data.loader) on a tiny repository: every event once per epoch over ranks and workers,
determinism, collation against a slow per-event reference, length bucketing under a token budget, k, weights,
resuming mid-epoch, a datasets.Dataset source, and the errors."""

import json
import math
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.errors import DatasetError, MissingExtraError
from fm4npp_data.loader import make_loader
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.prepared import difficulty_bin
from fm4npp_data.simulation import simulate

K = 4
ROW_GROUP = 15
#: (config, split) of an event by its position in (run, event) order, modulo 10; SHARDS: shards per split (else 1)
LAYOUT = {
    0: ("labeled", "train"),
    1: ("labeled", "train"),
    2: ("labeled", "train"),
    3: ("labeled", "train"),
    4: ("labeled", "train"),
    5: ("labeled", "train"),
    6: ("labeled", "validation"),
    7: ("labeled", "test"),
    8: ("pretrain", "train"),
    9: ("pretrain", "validation"),
}
SHARDS = {("labeled", "train"): 2}
LABELS = ["track_id", "pid", "noise"]
# a forked DataLoader worker: Python >= 3.12 warns when the parent has threads (pyarrow's, Numba's); the loader runs
# nothing in a worker that needs the parent's thread pools
FORK_OK = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def build_repo(tmp):
    """Simulate, convert and prepare 200 events, and lay them out as a dataset repository:
    REPO/data/{labeled,pretrain}/{split}-NNNNN-of-MMMMM.parquet (row groups of 15 events), difficulty.json."""
    simulate(200, tmp / "sim", seed=3, events_per_file=100)
    convert([tmp / "sim"], tmp / "events", ConvertOptions(row_group_events=20))
    prepare(tmp / "events", PrepareOptions(k=K, sample_events=100))
    table = pq.read_table(sorted((tmp / "events").glob("*.parquet")))
    table = table.drop_columns([c for c in table.column_names if c.startswith("particle_")])
    table = table.sort_by([("run", "ascending"), ("event", "ascending")])
    repo = tmp / "repo"
    position = np.arange(table.num_rows) % 10
    for config, split in sorted(set(LAYOUT.values())):
        rows = np.flatnonzero(np.isin(position, [p for p, cs in LAYOUT.items() if cs == (config, split)]))
        part = table.take(rows)
        if config == "pretrain":
            part = part.drop_columns(LABELS)
        n = SHARDS.get((config, split), 1)
        folder = repo / "data" / config
        folder.mkdir(parents=True, exist_ok=True)
        for i, piece in enumerate(np.array_split(np.arange(part.num_rows), n)):
            path = folder / f"{split}-{i:05d}-of-{n:05d}.parquet"
            pq.write_table(part.take(piece), path, compression="zstd", row_group_size=ROW_GROUP)
    shutil.copy(tmp / "events" / "difficulty.json", repo / "difficulty.json")
    record_splits(repo)
    return repo


def record_splits(repo):
    """REPO/splits.json for the shards laid out by hand (the loader checks a repository's shards against it)."""
    from fm4npp_data.files import sha256_file
    from fm4npp_data.repo.layout import ids_digest

    configs = {}
    for path in sorted((repo / "data").glob("*/*.parquet")):
        table = pq.read_table(path, columns=["run", "event", "x"])
        run, event = table["run"].to_numpy(), table["event"].to_numpy()
        spacepoints = int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0)
        info = configs.setdefault(path.parent.name, {}).setdefault(
            path.name.split("-")[0],
            {"events": 0, "spacepoints": 0, "ids": [], "columns": pq.read_schema(path).names, "shards": []},
        )
        info["events"] += table.num_rows
        info["spacepoints"] += spacepoints
        info["ids"].append((run, event))
        info["shards"].append(
            {
                "path": path.name,
                "events": table.num_rows,
                "spacepoints": spacepoints,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    for by_split in configs.values():
        for info in by_split.values():
            ids = info.pop("ids")
            info["ids_sha256"] = ids_digest(np.concatenate([r for r, _ in ids]), np.concatenate([e for _, e in ids]))
    (repo / "splits.json").write_text(json.dumps({"rule": {}, "files": {}, "configs": configs}))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_repo(tmp_path_factory.mktemp("loader"))


def split_table(repo, config="labeled", split="train"):
    return pq.read_table(sorted((repo / "data" / config).glob(f"{split}-*.parquet")))


def events_by_id(table):
    """{(run, event): row as a dict of numpy arrays}."""
    out = {}
    for row in table.to_pylist():
        out[(row["run"], row["event"])] = {k: np.asarray(v) if isinstance(v, list) else v for k, v in row.items()}
    return out


def ids(batches):
    return [(int(r), int(e)) for b in batches for r, e in zip(b["run"], b["event"], strict=True)]


def same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            assert x[name].dtype == y[name].dtype, name
            assert np.array_equal(x[name].numpy(), y[name].numpy()), name


# ------------------------------------------------------------------------------------------------------------
# Every event once per epoch; determinism
# ------------------------------------------------------------------------------------------------------------


@FORK_OK
@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 0), (2, 2), (3, 1)])
def test_every_event_once_per_epoch(repo, world_size, num_workers):
    expected = sorted(zip(*(split_table(repo)[c].to_pylist() for c in ("run", "event")), strict=True))
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            loader = make_loader(
                repo,
                batch_tokens=3000,
                rank=rank,
                world_size=world_size,
                num_workers=num_workers,
                epoch=epoch,
                buffer_events=40,
            )
            seen += ids(loader)
        assert sorted(seen) == expected


def test_same_seed_same_batches_other_epoch_other_order(repo):
    def run(**kw):
        return list(make_loader(repo, batch_tokens=3000, buffer_events=40, **kw))

    first = run(seed=1, epoch=2)
    same_batches(first, run(seed=1, epoch=2))
    assert ids(first) != ids(run(seed=1, epoch=3))
    assert ids(first) != ids(run(seed=2, epoch=2))
    assert sorted(ids(first)) == sorted(ids(run(seed=1, epoch=3)))


@FORK_OK
def test_workers_are_deterministic(repo):
    a = list(make_loader(repo, batch_tokens=3000, num_workers=2, buffer_events=40, seed=4))
    same_batches(a, list(make_loader(repo, batch_tokens=3000, num_workers=2, buffer_events=40, seed=4)))


def test_epochs_advance_after_a_full_pass(repo):
    loader = make_loader(repo, batch_tokens=3000, buffer_events=40)
    first = list(loader)
    assert loader.epoch == 1
    assert loader.summary()["epoch"] == 0
    assert loader.summary()["events"] == loader.num_events == 120
    second = list(loader)
    same_batches(second, list(make_loader(repo, batch_tokens=3000, buffer_events=40, epoch=1)))
    assert ids(first) != ids(second)
    loader.set_epoch(0)
    same_batches(first, list(loader))


def test_without_shuffle_the_order_is_the_same_every_epoch(repo):
    a = list(make_loader(repo, "labeled", "validation", batch_tokens=3000, shuffle=False))
    same_batches(a, list(make_loader(repo, "labeled", "validation", batch_tokens=3000, shuffle=False, epoch=5)))
    lengths = [int(b["mask"].sum(1).max()) for b in a]
    assert lengths == sorted(lengths)  # one pool: its batches shortest first


# ------------------------------------------------------------------------------------------------------------
# Collation against a slow per-event reference
# ------------------------------------------------------------------------------------------------------------


def reference(row, k):
    """What one event's part of a batch must be, computed spacepoint by spacepoint from the stored columns."""
    order = row["order"]

    def norm(i):
        return [
            (row["eta"][i] + 2.0) / 4.0,
            (row["phi"][i] + math.pi) / (2 * math.pi),
            (row["r"][i] - 31.372) / (75.385 - 31.372),
        ]

    features, targets, target_mask = [], [], []
    for i in order:
        features.append([(row["energy"][i] - 253.0982) / 268.7093, *norm(i)])
        neighbours = row["knn"][i][:k]
        targets.append([norm(j) if j >= 0 else [0.0, 0.0, 0.0] for j in neighbours])
        target_mask.append([j >= 0 for j in neighbours])
    return {
        "features": np.array(features, np.float64).reshape(-1, 4),
        "targets": np.array(targets, np.float64).reshape(-1, k, 3),
        "target_mask": np.array(target_mask, bool).reshape(-1, k),
        "index": np.array(order, np.int64),
        "track": np.array([row["track_id"][i] for i in order], np.int64),
        "pid": np.array([row["pid"][i] for i in order], np.int64),
        "noise": np.array([row["noise"][i] for i in order], bool),
    }


def test_collation_matches_a_per_event_reference(repo):
    table = split_table(repo)
    rows = events_by_id(table)
    batches = list(make_loader(repo, batch_tokens=2500, buffer_events=40, seed=7))
    assert sorted(ids(batches)) == sorted(rows)
    checked = padded = 0
    for batch in batches:  # every batch (the whole split: some 120 events, about a second of reference)
        b, s = batch["mask"].shape
        assert batch["features"].shape == (b, s, 4)
        assert batch["targets"].shape == (b, s, K, 3)
        assert s == max(1, int(batch["mask"].sum(1).max()))
        for i, key in enumerate(ids([batch])):
            row, ref = rows[key], reference(rows[key], K)
            n = len(row["order"])
            assert batch["mask"][i].tolist() == [True] * n + [False] * (s - n)
            np.testing.assert_allclose(batch["features"][i, :n].numpy(), ref["features"], rtol=1e-6, atol=2e-7)
            np.testing.assert_allclose(batch["targets"][i, :n].numpy(), ref["targets"], rtol=1e-6, atol=2e-7)
            for name in ("index", "target_mask", "track", "pid", "noise"):
                assert np.array_equal(batch[name][i, :n].numpy(), ref[name]), name
            # padding
            assert (batch["features"][i, n:] == 0).all()
            assert (batch["targets"][i, n:] == 0).all()
            assert not batch["target_mask"][i, n:].any()
            assert not batch["noise"][i, n:].any()
            for name in ("index", "track", "pid"):
                assert (batch[name][i, n:] == -1).all(), name
            checked += 1
            padded += n < s
    assert checked == len(rows)
    assert padded >= 20  # the padding of many events (shorter than their batch's longest) checked
    assert any(batch["mask"].shape[0] >= 5 for batch in batches)
    assert any(batch["target_mask"][..., -1][batch["mask"]].logical_not().any() for batch in batches)


def test_pretrain_batches_have_no_labels(repo):
    batch = next(iter(make_loader(repo, "pretrain", "train", batch_tokens=3000)))
    assert set(batch) == {"run", "event", "features", "mask", "index", "targets", "target_mask", "weight"}


def test_a_set_folder_or_shard_reads_every_event(repo, tmp_path):
    folder = repo.parent / "events"  # the prepared set: 200 events, configs not used
    loader = make_loader(folder, "pretrain", "nope", batch_tokens=3000)
    expected = pq.read_table(sorted(folder.glob("*.parquet")), columns=["run", "event"])
    assert sorted(ids(loader)) == sorted(zip(*(expected[c].to_pylist() for c in ("run", "event")), strict=True))
    shard = sorted(folder.glob("*.parquet"))[0]
    assert len(ids(make_loader(shard, batch_tokens=3000))) == pq.ParquetFile(shard).metadata.num_rows
    release = tmp_path / "release"  # a dataset of sets laid out as an imported release: ROOT/{config}/{split}
    shutil.copytree(folder, release / "labeled" / "train")
    assert sorted(ids(make_loader(release, "labeled", "train", batch_tokens=3000))) == sorted(ids(loader))
    loose = tmp_path / "loose"  # a folder of shards without a manifest (nor difficulty.json): weights 1
    loose.mkdir()
    shutil.copy(shard, loose / shard.name)
    batches = list(make_loader(loose, batch_tokens=3000))
    assert "track" in batches[0]
    assert all((b["weight"] == 1).all() for b in batches)


# ------------------------------------------------------------------------------------------------------------
# Length bucketing under the token budget
# ------------------------------------------------------------------------------------------------------------


def pad_to_longest(lengths, budget, rng):
    """Baseline: events in random order, each batch as many as fit when padded to its longest."""
    real = padded = 0
    batch = []
    for n in rng.permutation(lengths):
        if batch and (len(batch) + 1) * max(max(batch), n, 1) > budget:
            real, padded = real + sum(batch), padded + len(batch) * max(max(batch), 1)
            batch = []
        batch.append(n)
    return (real + sum(batch)) / (padded + len(batch) * max(max(batch), 1))


def test_batches_fit_the_budget_and_pad_little(repo):
    folder = repo.parent / "events"
    lengths = pc.list_value_length(pq.read_table(sorted(folder.glob("*.parquet")), columns=["order"])["order"])
    lengths = lengths.to_numpy()
    # the longest event (the simulation's tail: several thousand spacepoints) rounded up to a multiple of 256: every
    # event fits, and a pool (all 200 events, of some 700 spacepoints on average) cuts into some 20 batches
    budget = -(-int(lengths.max()) // 256) * 256
    assert budget >= 4 * np.median(lengths)  # room for batches of several events, or padding is not at stake
    loader = make_loader(folder, batch_tokens=budget)
    batches = list(loader)
    for b in batches:
        assert b["mask"].numel() <= budget
    summary = loader.summary()
    assert summary["over_budget_events"] == 0
    assert summary["padding_efficiency"] == pytest.approx(
        sum(int(b["mask"].sum()) for b in batches) / sum(b["mask"].numel() for b in batches)
    )
    assert summary["padding_efficiency"] >= 0.9
    baseline = np.mean([pad_to_longest(lengths, budget, np.random.default_rng(s)) for s in range(5)])
    assert baseline < 0.8
    assert summary["padding_efficiency"] > baseline + 0.1


def test_events_over_the_budget_are_alone_and_counted(repo):
    budget = 700
    table = split_table(repo)
    lengths = dict(
        zip(
            ids([{"run": table["run"].to_numpy(), "event": table["event"].to_numpy()}]),
            pc.list_value_length(table["order"]).to_pylist(),
            strict=True,
        )
    )
    over = sorted(key for key, n in lengths.items() if n > budget)
    assert over  # the fixture has some
    loader = make_loader(repo, batch_tokens=budget, buffer_events=40)
    batches = list(loader)
    for b in batches:
        if b["mask"].numel() > budget:
            assert b["mask"].shape[0] == 1
            assert int(b["mask"].sum()) > budget
    assert sorted(ids(batches)) == sorted(lengths)  # none dropped
    summary = loader.summary()
    assert summary["over_budget_events"] == len(over)
    assert sorted(summary["over_budget"]) == over


# ------------------------------------------------------------------------------------------------------------
# k, weights
# ------------------------------------------------------------------------------------------------------------


def test_a_smaller_k_keeps_the_nearest(repo):
    full = list(make_loader(repo, batch_tokens=3000, buffer_events=40))
    two = list(make_loader(repo, batch_tokens=3000, buffer_events=40, k=2))
    assert make_loader(repo, batch_tokens=3000).k == K
    for a, b in zip(full, two, strict=True):
        assert b["targets"].shape[2] == 2
        assert np.array_equal(a["targets"][:, :, :2].numpy(), b["targets"].numpy())
        assert np.array_equal(a["target_mask"][:, :, :2].numpy(), b["target_mask"].numpy())
        assert np.array_equal(a["features"].numpy(), b["features"].numpy())
    with pytest.raises(DatasetError, match=r"k = 5, but the data has k = 4"):
        make_loader(repo, batch_tokens=3000, k=5)
    with pytest.raises(DatasetError, match=r"k must be an integer >= 1"):
        make_loader(repo, batch_tokens=3000, k=0)


def without_neighbours(repo, tmp_path, every=9):
    """A copy of `repo` in which every `every`-th event of each labeled train shard has knn_mean_distance NaN, as
    prepare writes it for an event none of whose spacepoints has a neighbour at larger r (the simulation keeps no
    event without TPC spacepoints, so the fixture has none), and one event each a distance below and above the
    difficulty edges."""
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    edges = json.loads((repo / "difficulty.json").read_text())["edges"]
    for path in sorted((copy / "data" / "labeled").glob("train-*.parquet")):
        table = pq.read_table(path)
        distance = table["knn_mean_distance"].to_numpy(zero_copy_only=False).copy()
        distance[::every] = np.nan
        distance[1], distance[2] = edges[0] / 2, edges[-1] * 2
        column = pa.array(distance, table.schema.field("knn_mean_distance").type)
        table = table.set_column(table.schema.get_field_index("knn_mean_distance"), "knn_mean_distance", column)
        pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP)
    record_splits(copy)
    return copy


def test_weights_follow_the_difficulty_bins(repo, tmp_path):
    difficulty = json.loads((repo / "difficulty.json").read_text())
    repo = without_neighbours(repo, tmp_path)
    table = split_table(repo)
    distance = table["knn_mean_distance"].to_numpy(zero_copy_only=False)
    bins = difficulty_bin(distance, difficulty)
    assert np.array_equal(bins == -1, np.isnan(distance))  # -1: no distance (NaN), weight 1
    assert (bins == -1).sum() >= 10
    assert (bins >= 0).sum() >= 100
    edges, last = difficulty["edges"], len(difficulty["weights"]) - 1
    outside = difficulty_bin(np.array([edges[0] / 2, edges[-1] * 2, np.nan]), difficulty)
    assert outside.tolist() == [0, last, -1]  # outside the edges: the nearest end bin
    expected = {
        key: (difficulty["weights"][b] if b >= 0 else 1.0)
        for key, b in zip(
            ids([{"run": table["run"].to_numpy(), "event": table["event"].to_numpy()}]), bins, strict=True
        )
    }
    batches = list(make_loader(repo, batch_tokens=3000))
    got = {key: float(w) for b in batches for key, w in zip(ids([b]), b["weight"], strict=True)}
    assert got.keys() == expected.keys()
    for key, w in expected.items():
        assert got[key] == pytest.approx(w, rel=1e-6)
    assert len({round(w, 5) for w in got.values()}) > 3


# ------------------------------------------------------------------------------------------------------------
# Resuming mid-epoch
# ------------------------------------------------------------------------------------------------------------


@FORK_OK
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_rest_of_the_epoch(repo, num_workers):
    kw = {"batch_tokens": 2000, "buffer_events": 30, "num_workers": num_workers, "seed": 3, "epoch": 1}
    whole = list(make_loader(repo, **kw))
    assert len(whole) > 20  # pools of 30 events, some 6 batches each: skipping crosses pools
    for n in (3, 7, 16, len(whole) - 1):
        loader = make_loader(repo, **kw)
        taken = []
        for batch in loader:
            taken.append(batch)
            if len(taken) == n:
                break
        state = json.loads(json.dumps(loader.state_dict()))  # plain values
        assert state["epoch"] == 1
        assert state["batches"] == n
        again = make_loader(repo, **kw)
        again.load_state_dict(state)
        rest = list(again)
        same_batches(taken + rest, whole)
        assert again.epoch == 2
        assert again.summary()["batches"] == len(whole) - n


def test_a_state_of_other_settings_is_refused(repo):
    loader = make_loader(repo, batch_tokens=3000)
    state = loader.state_dict()
    with pytest.raises(DatasetError, match=r"other settings or data: batch_tokens 3000 \(now 2000\)"):
        make_loader(repo, batch_tokens=2000).load_state_dict(state)
    with pytest.raises(DatasetError, match=r"not a loader state"):
        loader.load_state_dict({"epoch": 0})


# ------------------------------------------------------------------------------------------------------------
# A datasets.Dataset source
# ------------------------------------------------------------------------------------------------------------


def test_a_datasets_source_gives_the_same_events(repo, tmp_path):
    datasets = pytest.importorskip("datasets")
    files = [str(p) for p in sorted((repo / "data" / "labeled").glob("train-*.parquet"))]
    ds = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    kw = {"batch_tokens": 3000, "difficulty": repo / "difficulty.json"}

    def by_event(batches):
        out = {}
        for b in batches:
            for i, key in enumerate(ids([b])):
                n = int(b["mask"][i].sum())
                out[key] = [b[c][i, :n].numpy() for c in ("features", "targets", "track")] + [b["weight"][i].item()]
        return out

    ours = by_event(make_loader(repo, **kw))
    theirs = by_event(make_loader(ds, **kw))
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        for a, b in zip(value, theirs[key], strict=True):
            assert np.array_equal(a, b)
    dd = datasets.load_dataset("parquet", data_files={"train": files}, cache_dir=str(tmp_path / "hf"))
    assert sorted(ids(make_loader(dd, split="train", batch_tokens=3000))) == sorted(ours)
    with pytest.raises(DatasetError, match=r"no split 'test'; the splits are: train"):
        make_loader(dd, split="test", batch_tokens=3000)


@pytest.mark.slow
@FORK_OK
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_workers_started_without_fork_give_the_same_batches(repo, tmp_path, context):
    datasets = pytest.importorskip("datasets")
    files = [str(p) for p in sorted((repo / "data" / "labeled").glob("train-*.parquet"))]
    ds = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    kw = {"batch_tokens": 3000, "buffer_events": 40, "num_workers": 2, "seed": 5}
    for source in (repo, ds):  # the stream and its source are pickled into the workers
        same_batches(list(make_loader(source, multiprocessing_context=context, **kw)), list(make_loader(source, **kw)))


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------


def test_unknown_config_or_split(repo):
    with pytest.raises(DatasetError, match=r"no config 'nope'; the configs are: labeled, pretrain"):
        make_loader(repo, "nope", batch_tokens=3000)
    with pytest.raises(DatasetError, match=r"no split 'test' in config 'pretrain'; the splits are: train, validation"):
        make_loader(repo, "pretrain", "test", batch_tokens=3000)


def test_incomplete_repositories(repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    (copy / "data" / "labeled" / "train-00001-of-00002.parquet").unlink()
    with pytest.raises(DatasetError, match=r"split 'train' should have 2 shards.*train-00001-of-00002\.parquet"):
        make_loader(copy, batch_tokens=3000)
    for p in (copy / "data" / "pretrain").glob("*"):
        p.unlink()
    with pytest.raises(DatasetError, match=r"pretrain: no shards"):
        make_loader(copy, "pretrain", "train", batch_tokens=3000)


def test_unprepared_shards(repo, tmp_path):
    shard = repo / "data" / "labeled" / "test-00000-of-00001.parquet"
    copy = tmp_path / "repo" / "data" / "labeled"
    copy.mkdir(parents=True)
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(["order", "knn", "knn_mean_distance"]), copy / shard.name)
    record_splits(tmp_path / "repo")
    message = r"not prepared \(no column order, knn, knn_mean_distance\): run `fm4npp-data prepare`"
    with pytest.raises(DatasetError, match=message):
        make_loader(tmp_path / "repo", "labeled", "test", batch_tokens=3000)
    pq.write_table(table.drop_columns(LABELS), copy / shard.name)
    record_splits(tmp_path / "repo")
    with pytest.raises(DatasetError, match=r"config 'labeled' but the shard has no track_id, pid, noise"):
        make_loader(tmp_path / "repo", "labeled", "test", batch_tokens=3000)


def test_a_damaged_shard_is_named(repo, tmp_path):
    shard = repo / "data" / "labeled" / "test-00000-of-00001.parquet"
    copy = tmp_path / "repo" / "data" / "labeled"
    copy.mkdir(parents=True)
    table = pq.read_table(shard)
    order = pc.list_flatten(table["order"]).to_numpy().copy()
    order[0] = 10_000
    bad = pa.ListArray.from_arrays(table["order"].combine_chunks().offsets, pa.array(order))
    pq.write_table(table.set_column(table.schema.get_field_index("order"), "order", bad), copy / shard.name)
    record_splits(tmp_path / "repo")
    loader = make_loader(tmp_path / "repo", "labeled", "test", batch_tokens=3000)
    with pytest.raises(DatasetError, match=r"test-00000-of-00001.parquet row group 0: the spacepoint columns do not"):
        list(loader)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, None])
def test_bad_batch_tokens(repo, bad):
    with pytest.raises(DatasetError, match=r"batch_tokens must be an integer >= 1"):
        make_loader(repo, batch_tokens=bad)


def test_bad_rank_and_missing_source(repo, tmp_path):
    with pytest.raises(DatasetError, match=r"rank must be below world_size \(2\), not 2"):
        make_loader(repo, batch_tokens=3000, rank=2, world_size=2)
    with pytest.raises(DatasetError, match=r"no such file or directory"):
        make_loader(tmp_path / "nothing", batch_tokens=3000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no shards \(\*\.parquet\) and no set"):
        make_loader(tmp_path / "empty", batch_tokens=3000)


def test_the_loader_imports_no_numba_kernel(python_without):
    """The loader reads the difficulty bins with fm4npp_data.prepared: neither numba, the kernels nor prepare."""
    code = """
        import sys
        import fm4npp_data.loader
        heavy = ("numba", "fm4npp_data.kernels", "fm4npp_data.preparation")
        print(sorted(m for m in sys.modules if m.split(".")[0] == "numba" or m.startswith(heavy[1:])))
    """
    done = python_without((), code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_torch_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "fm4npp_data.loader")
    message = r"the PyTorch loader needs the Python package 'torch'.*fm4npp\[models\]"
    with pytest.raises(MissingExtraError, match=message):
        import fm4npp_data.loader  # noqa: F401
