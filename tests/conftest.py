"""Shared fixtures: small simulated runs in each ROOT layout (simulated once per test session), a small dataset
repository for the model tests, and a small release in the TPCpp-10M layout."""

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fm4npp_data.simulation import simulate


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory):
    """XDG_CACHE_HOME in a temporary folder for the session, so that the stamps of verified shards
    (fm4npp_data.integrity) never go to the user's cache; Hugging Face's cache stays where it was."""
    import os

    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", os.environ.get("HF_HOME") or os.path.join(home, "huggingface"))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


@pytest.fixture(scope="session")
def rows_only():
    """The transport's detector with its 48 TPC pad rows alone, all gas: no material, no calorimeter; a particle
    leaves after the last row."""
    from fm4npp_data.simulation.transport import detector

    det = detector()
    keep = det.tpc == 1
    arrays = {name: getattr(det, name)[keep] for name in det._fields if name not in ("first_gas", "last_gas")}
    return det._replace(**arrays, first_gas=0, last_gas=int(keep.sum()))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): its tensors are tiny,
    threads only add overhead, and intra-op threads crawl on a loaded 2-core machine."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sim_svtx(tmp_path_factory):
    """Two svtx-evaluator files of 120 events each."""
    out = tmp_path_factory.mktemp("sim") / "svtx"
    simulate(240, out, seed=5, events_per_file=120)
    return out


@pytest.fixture(scope="session")
def sim_trkr(tmp_path_factory):
    """Two trkr-ntuplizer (truth-less) files of 50 events each."""
    out = tmp_path_factory.mktemp("sim") / "trkr"
    simulate(100, out, seed=6, events_per_file=50, layout="trkr-ntuplizer")
    return out


@pytest.fixture
def python_without():
    """run(blocked, code): `code` in a fresh interpreter (at the repository root) in which the top-level packages
    `blocked` cannot be imported, as if not installed; the CompletedProcess (stdout, stderr as text)."""

    def run(blocked: tuple[str, ...], code: str, timeout: int = 300) -> subprocess.CompletedProcess:
        prelude = textwrap.dedent(f"""
            import importlib.abc, sys
            class Block(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in {tuple(blocked)!r}:
                        raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not installed)")
            sys.meta_path.insert(0, Block())
        """)
        return subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).parents[1],
        )

    return run


def _rerecord(repo):
    """Record the sha256 and size of every shard of a repository in its splits.json again, as if the shards were
    built so: a test that changes a shard on purpose uses it to reach the check after fm4npp_data.integrity's."""
    import json

    from fm4npp_data.files import sha256_file

    splits = json.loads((repo / "splits.json").read_text())
    for config, by_split in splits["configs"].items():
        for info in by_split.values():
            for shard in info["shards"]:
                path = repo / "data" / config / shard["path"]
                shard["sha256"], shard["bytes"] = sha256_file(path), path.stat().st_size
    (repo / "splits.json").write_text(json.dumps(splits))


@pytest.fixture
def rerecord():
    """rerecord(repo): the shards' sha256 and sizes recorded again in splits.json (after a deliberate change)."""
    return _rerecord


#: The neighbours prepared in `small_repo` (the model tests train with k = 4).
SMALL_REPO_K = 4


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory):
    """400 simulated events as a dataset repository (row groups of 8 events): about 80 labeled (56 / 10 / 5 after
    the 70 : 13 : 7 split) and 320 pretraining events (about 300 / 15), prepared with k = 4."""
    from fm4npp_data.conversion.convert import ConvertOptions, convert
    from fm4npp_data.preparation.prepare import PrepareOptions, prepare
    from fm4npp_data.repo.build import BuildOptions, build

    tmp = tmp_path_factory.mktemp("small_repo")
    simulate(400, tmp / "sim", seed=5, events_per_file=200)
    convert([tmp / "sim"], tmp / "events", ConvertOptions())
    prepare(tmp / "events", PrepareOptions(k=SMALL_REPO_K, sample_events=100))
    build([tmp / "events"], tmp / "repo", BuildOptions(row_group_events=8))
    return tmp / "repo"


SPLITS = {"train": [7, 5], "validation": [4], "test": [3]}  # events per shard


def _make_release(root, seed=0):
    """The release's folders and npz files, with random content; returns {split: (size, data, labels)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, shards in SPLITS.items():
        folder = root / "labeled" / split
        folder.mkdir(parents=True)
        sizes, datas, labels = [], [], []
        for i, n_events in enumerate(shards):
            size = rng.integers(0, 30, n_events)
            size[0] = 0  # an empty event
            n = int(size.sum())
            data = rng.normal(0, 50, (n, 4)).astype(np.float32)
            track = rng.integers(0, 500, n).astype(np.uint16)
            pid = rng.integers(0, 5, n).astype(np.uint8)
            noise = rng.random(n) < 0.1
            suffix = f"_{i:03d}" if len(shards) > 1 else ""
            np.savez(folder / f"spacepoints{suffix}.npz", data=data, size=size)
            np.savez_compressed(folder / f"track_ids{suffix}.npz", data=track)
            np.savez(folder / f"pid_labels{suffix}.npz", data=pid)
            np.savez(folder / f"noise_tags{suffix}.npz", data=noise)
            sizes.append(size)
            datas.append(data)
            labels.append((track, pid, noise))
        truth[split] = (
            np.concatenate(sizes),
            np.concatenate(datas),
            [np.concatenate(x) for x in zip(*labels, strict=True)],
        )
    return truth


def _zip_release(root, path, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for f in sorted(root.rglob("*.npz")):
            z.write(f, f.relative_to(root).as_posix())
    return path


@pytest.fixture
def make_release():
    """make_release(root, seed=0): a small release in the TPCpp-10M layout; returns {split: (size, data, labels)}."""
    return _make_release


@pytest.fixture
def zip_release():
    """zip_release(root, path, compression=ZIP_STORED): the release folder as a zip archive."""
    return _zip_release
