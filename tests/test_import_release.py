"""`fm4npp-data import-release`: a small archive in the TPCpp-10M layout, read straight from the zip."""

import json
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.release import import_release
from fm4npp_data.errors import ReleaseError
from fm4npp_data.files import sha256_file


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_import_from_zip_keeps_splits_order_and_labels(tmp_path, compression, make_release, zip_release):
    truth = make_release(tmp_path / "release")
    archive = zip_release(tmp_path / "release", tmp_path / "TPCpp-10M.zip", compression)
    out = tmp_path / "out"
    summary = import_release(archive, out, shard_events=4, row_group_events=2, events_per_chunk=3)
    assert summary.errors == []
    assert sorted(m.part for m in summary.imported) == ["labeled/test", "labeled/train", "labeled/validation"]
    for split, (size, data, (track, pid, noise)) in truth.items():
        manifest = json.loads((out / "labeled" / split / "manifest.json").read_text())
        assert manifest["split"] == split
        assert manifest["run"] == {"train": 1, "validation": 2, "test": 3}[split]
        tables = [pq.read_table(out / "labeled" / split / s["path"]) for s in manifest["shards"]]
        assert [t.num_rows for t in tables] == [4] * (len(size) // 4) + ([len(size) % 4] if len(size) % 4 else [])
        events = {k: [v for t in tables for v in t[k].to_pylist()] for k in tables[0].column_names}
        assert events["event"] == list(range(len(size)))
        assert [len(x) for x in events["x"]] == size.tolist()

        def flat(k, events=events):
            return np.concatenate([np.asarray(v, dtype=np.float64) for v in events[k]])

        np.testing.assert_array_equal(flat("energy"), data[:, 0])
        np.testing.assert_array_equal(flat("x"), data[:, 1])
        np.testing.assert_array_equal(flat("z"), data[:, 3])
        np.testing.assert_array_equal(flat("track_id"), track)
        np.testing.assert_array_equal(flat("pid"), pid)
        np.testing.assert_array_equal(flat("noise"), noise)
        assert set(flat("layer")) == {-1}
        assert manifest["totals"]["spacepoints_out"] == data.shape[0]
        assert manifest["totals"]["pid_counts"] == np.bincount(pid, minlength=5).tolist()
        member = manifest["inputs"][0]["members"]
        assert all("crc32" in v for v in member.values())


def test_import_from_a_folder_resume_and_cli(tmp_path, make_release):
    make_release(tmp_path / "release", seed=3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["import-release", str(tmp_path / "release"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train" in result.output
    assert "validation" in result.output
    manifest = json.loads((out / "labeled" / "test" / "manifest.json").read_text())
    for member, identity in manifest["inputs"][0]["members"].items():
        assert identity["sha256"] == sha256_file(tmp_path / "release" / member)
    again = import_release(tmp_path / "release", out, resume=True)
    assert len(again.skipped) == 3
    assert again.imported == []
    refused = CliRunner().invoke(main, ["import-release", str(tmp_path / "release"), "--out", str(out)])
    assert refused.exit_code == 2
    assert "not empty" in refused.output


def test_unreadable_member_is_named_and_nothing_is_left(tmp_path, make_release, zip_release):
    make_release(tmp_path / "release", seed=4)
    archive = zip_release(tmp_path / "release", tmp_path / "r.zip", zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("labeled/validation/spacepoints.npz")
    start = info.header_offset + 30 + len(info.filename) + 40
    data[start : start + 200] = bytes(200)
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["import-release", str(archive), "--out", str(out)])
    assert result.exit_code == 2
    assert "labeled/validation/spacepoints.npz" in result.output
    assert "damaged" in result.output
    assert not (out / "labeled" / "validation").exists()  # the damaged part left nothing
    assert (out / "labeled" / "train" / "manifest.json").is_file()  # the others finished
    assert not [p for p in out.rglob(".*")]


def test_inconsistent_sizes_and_missing_labels(tmp_path, make_release):
    root = tmp_path / "release"
    make_release(root, seed=5)
    (root / "labeled" / "test" / "noise_tags.npz").unlink()
    with pytest.raises(ReleaseError, match=r"part labeled/test: .*noise_tags\*\.npz"):
        import_release(root, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    root2 = tmp_path / "release2"
    make_release(root2, seed=6)
    np.savez(root2 / "labeled" / "test" / "track_ids.npz", data=np.zeros(3, np.uint16))
    summary = import_release(root2, tmp_path / "b")
    assert any("track_ids.npz: 3 labels for" in e for e in summary.errors)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleaseError, match="empty: no spacepoints"):
        import_release(tmp_path / "empty", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_inspect_an_imported_release_lists_its_parts(tmp_path, make_release):
    make_release(tmp_path / "release", seed=9)
    import_release(tmp_path / "release", tmp_path / "out")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 sets" in result.output
    assert "labeled/validation" in result.output
