"""The dataset repository and the hub: `inspect REPO`, the card's metadata as `datasets` computes it, `publish` to a
branch, a pull request or a tag with its check of the hub's files, progress on `verify`, and one name per thing.

The hub cannot be reached from the tests. Nothing read from data is mocked: the card's numbers are compared with what
`datasets` computes offline from the built folder. For `publish`, only the calls that would go over the network are
replaced, by `FakeHub`: a huggingface_hub.HfApi whose network methods act on a listing held in memory (see there).
"""

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import huggingface_hub
import pytest
import yaml
from click.testing import CliRunner
from fm4npp_cli import data as data_cli
from fm4npp_cli.data import main
from fm4npp_cli.main import main as models_main
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.hf_api import CommitInfo, GitRefInfo, GitRefs, RepoFile
from rich.console import Console

from fm4npp_data.description import describe
from fm4npp_data.errors import RepoError
from fm4npp_data.repo.card import PAPER, size_category
from fm4npp_data.repo.hub import hub_differences, publish

REPO_ID = "fm4npp/tpc-pp200"


def _splits(repo: Path) -> dict:
    return json.loads((repo / "splits.json").read_text())


def _card_metadata(repo: Path) -> dict:
    text = (repo / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# ------------------------------------------------------------------------------------------------------------
# inspect REPO
# ------------------------------------------------------------------------------------------------------------


def test_inspect_shows_a_built_repository(small_repo):
    splits = _splits(small_repo)
    result = CliRunner().invoke(main, ["inspect", str(small_repo)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"{small_repo} (dataset repository, fm4npp " in result.output
    for config, split_info in splits["configs"].items():
        for split, info in split_info.items():
            assert f"{config}/{split}" in result.output
            assert info["ids_sha256"] in result.output  # the whole digest, not cut
    d = describe(small_repo)
    assert d.kind == "repo"
    files = [p for p in small_repo.rglob("*") if p.is_file()]
    facts = d.sections["repository"]
    assert facts["bytes on disk"] == sum(p.stat().st_size for p in files)
    assert facts["files"] == len(files)
    assert facts["k"] == 4
    assert facts["configs"] == ["labeled (train, validation, test)", "pretrain (train, validation)"]
    manifest = json.loads((small_repo / "manifest.json").read_text())
    assert facts["tool version"] == manifest["tool_version"]
    assert facts["binning"] == manifest["binning"]
    assert facts["events"] == sum(v["events"] for c in splits["configs"].values() for v in c.values())
    test = splits["configs"]["labeled"]["test"]
    assert d.sections["labeled/test"] == {
        "events": test["events"],
        "spacepoints": test["spacepoints"],
        "spacepoints per event": test["spacepoints"] / test["events"],
        "shards": len(test["shards"]),
        "bytes": sum(s["bytes"] for s in test["shards"]),
        "columns": len(test["columns"]),
        "ids sha256": test["ids_sha256"],
    }


def test_inspect_names_a_damaged_splits_json(small_repo, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(small_repo, broken)
    (broken / "splits.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["inspect", str(broken)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {broken / 'splits.json'}: not a splits.json of fm4npp")


# ------------------------------------------------------------------------------------------------------------
# The card's metadata
# ------------------------------------------------------------------------------------------------------------


def test_the_cards_dataset_info_is_what_datasets_computes_offline(small_repo, monkeypatch, tmp_path):
    """load_dataset(folder, config) with HF_HUB_OFFLINE=1 and a fresh cache (so datasets computes its info from the
    shards, not from the card): the card's dataset_size, download_size and per-split num_bytes / num_examples are
    datasets' numbers; download_size is the Parquet bytes splits.json records."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = _card_metadata(small_repo)
    card = {info["config_name"]: info for info in meta["dataset_info"]}
    assert set(card) == {"labeled", "pretrain"}
    splits = _splits(small_repo)
    for config in ("labeled", "pretrain"):
        ds = datasets.load_dataset(str(small_repo), config, cache_dir=str(tmp_path / config))
        info = next(iter(ds.values())).info
        assert card[config]["dataset_size"] == info.dataset_size
        assert card[config]["download_size"] == info.download_size
        parquet = sum(s["bytes"] for v in splits["configs"][config].values() for s in v["shards"])
        assert info.download_size == parquet
        assert {s["name"]: (s["num_bytes"], s["num_examples"]) for s in card[config]["splits"]} == {
            name: (split.num_bytes, split.num_examples) for name, split in info.splits.items()
        }
        assert {name: split.num_examples for name, split in info.splits.items()} == {
            name: v["events"] for name, v in splits["configs"][config].items() if v["events"]
        }
        assert info.dataset_size == sum(split.num_bytes for split in info.splits.values())
        assert info.dataset_size != parquet  # Arrow sizes, not the files' sizes
    total = sum(v["events"] for c in splits["configs"].values() for v in c.values())
    assert meta["size_categories"] == [size_category(total)] == ["n<1K"]
    assert meta["task_categories"] == ["token-classification", "feature-extraction"]
    assert meta["license"] == "cc-by-4.0"
    assert [c["config_name"] for c in meta["configs"]] == ["labeled", "pretrain"]
    assert PAPER == "https://arxiv.org/abs/2508.14087"
    assert f"[arXiv:2508.14087]({PAPER})" in (small_repo / "README.md").read_text()
    assert not list(small_repo.parent.glob(".*datasets-*"))  # the build's temporary datasets cache is gone


def test_size_categories_are_the_hubs_buckets():
    import datasets.utils

    names = json.loads((Path(datasets.utils.__file__).parent / "resources" / "size_categories.json").read_text())
    cases = {
        0: "n<1K",
        999: "n<1K",
        1000: "1K<n<10K",
        9999: "1K<n<10K",
        10_000: "10K<n<100K",
        90_000: "10K<n<100K",
        2_500_000: "1M<n<10M",
        10**12: "n>1T",
        10**15: "n>1T",
    }
    for rows, name in cases.items():
        assert size_category(rows) == name, rows
        assert name in names


# ------------------------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------------------------


def _hub_file(path: str, content: bytes) -> RepoFile:
    """A RepoFile as the hub lists it: Parquet files in LFS (their sha256), the others as git blobs."""
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    lfs = None
    if path.endswith(".parquet"):
        lfs = {"size": len(content), "oid": hashlib.sha256(content).hexdigest(), "pointerSize": 134}
    return RepoFile(path=path, size=len(content), oid=blob, lfs=lfs)


class FakeHub(huggingface_hub.HfApi):
    """huggingface_hub.HfApi with its network calls answered from `self.files` (path -> content of the hub's one
    repository); everything else (upload_folder choosing the files to send and building the commit operations,
    filtering, the deletions of an earlier build) is huggingface_hub's own code. `calls` records the calls."""

    def __init__(self, files: dict[str, bytes] | None = None, tags=(), lose: str | None = None):
        super().__init__(token="hf_fake")
        self.files = dict(files or {".gitattributes": b"*.parquet filter=lfs\n"})
        self.tags = list(tags)
        self.lose = lose  # a path the fake hub drops from each commit (to test the check after the upload)
        self.calls: list[tuple] = []
        self.commits = 0

    def _validate_yaml(self, content, **kwargs):  # noqa: ARG002 - the HfApi signature
        self.calls.append(("validate_yaml", huggingface_hub.DatasetCard(content).data.to_dict()))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, *, branch, **kwargs):  # noqa: ARG002 - the HfApi signature
        self.calls.append(("create_branch", branch))

    def list_repo_refs(self, repo_id, **kwargs):  # noqa: ARG002 - the HfApi signature
        tags = [GitRefInfo(name=t, ref=f"refs/tags/{t}", target_commit="0" * 40) for t in self.tags]
        return GitRefs(branches=[], converts=[], tags=tags)

    def list_repo_files(self, repo_id, **kwargs):  # noqa: ARG002 - the HfApi signature
        self.calls.append(("list_repo_files", kwargs.get("revision")))
        return sorted(self.files)

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", kwargs.get("revision"), kwargs.get("create_pr"), list(operations)))
        for op in operations:
            if isinstance(op, CommitOperationDelete):
                self.files.pop(op.path_in_repo, None)
            elif op.path_in_repo != self.lose:
                with op.as_file() as f:
                    self.files[op.path_in_repo] = f.read()
        self.commits += 1
        pr = f"https://huggingface.co/datasets/{repo_id}/discussions/7" if kwargs.get("create_pr") else None
        return CommitInfo(
            commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{self.commits:040x}",
            commit_message="",
            commit_description="",
            oid=f"{self.commits:040x}",
            pr_url=pr,
        )

    def list_repo_tree(self, repo_id, **kwargs):  # noqa: ARG002 - the HfApi signature
        self.calls.append(("list_repo_tree", kwargs.get("revision"), kwargs.get("recursive")))
        return [_hub_file(path, content) for path, content in sorted(self.files.items())]

    def create_tag(self, repo_id, *, tag, revision, **kwargs):  # noqa: ARG002 - the HfApi signature
        self.calls.append(("create_tag", tag, revision))

    def called(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]


@pytest.fixture
def online(monkeypatch):
    """As if online with a token; huggingface_hub's upload_folder takes its create_commit path (the operations it
    builds are the same ones its hf_xet pipeline commits in batches)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)


@pytest.fixture
def local_repo(small_repo, tmp_path):
    repo = tmp_path / "tpc-pp200"
    shutil.copytree(small_repo, repo)
    (repo / ".upload.partial-1").write_text("a temporary file")  # never sent
    return repo


def _build_files(repo: Path) -> dict[str, int]:
    return {
        p.relative_to(repo).as_posix(): p.stat().st_size
        for p in repo.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.usefixtures("online")
def test_publish_to_a_branch_replaces_the_earlier_build_checks_the_hub_and_tags(local_repo):
    earlier = {
        ".gitattributes": b"*.parquet filter=lfs\n",
        "README.md": b"old card",
        "splits.json": b"{}",
        "data/labeled/train-00000-of-00099.parquet": b"PAR1 old",
        "LICENSE": b"kept",
    }
    hub = FakeHub(earlier)
    result = publish(local_repo, REPO_ID, revision="v1-build", tag="v1.0", api=hub)
    assert hub.called("create_branch") == [("v1-build",)]
    assert hub.called("list_repo_files") == [("v1-build",)]  # the deletions are computed on the branch
    [(revision, create_pr, operations)] = hub.called("create_commit")
    assert (revision, create_pr) == ("v1-build", False)
    added = {op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)}
    deleted = {op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)}
    assert added == set(_build_files(local_repo))
    assert ".upload.partial-1" not in added
    assert deleted == {"data/labeled/train-00000-of-00099.parquet"}  # README and splits.json are replaced
    assert hub.called("list_repo_tree") == [(result.commit, True)]  # the check reads the new commit
    assert hub.called("create_tag") == [("v1.0", result.commit)]
    [(card,)] = hub.called("validate_yaml")
    assert card["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in card["dataset_info"]] == [
        "labeled",
        "pretrain",
    ]
    assert {p: len(c) for p, c in hub.files.items()} == {**_build_files(local_repo), ".gitattributes": 21, "LICENSE": 4}
    assert (result.revision, result.tag, result.pr_url, result.target) == ("v1-build", "v1.0", None, "branch v1-build")
    assert sorted(result) == sorted(_build_files(local_repo).items())


@pytest.mark.usefixtures("online")
def test_publish_as_a_pull_request(local_repo):
    hub = FakeHub()
    result = publish(local_repo, REPO_ID, create_pr=True, api=hub)
    assert hub.called("create_branch") == []
    assert hub.called("list_repo_files") == [("main",)]  # a pull request replaces what main holds
    [(revision, create_pr, _)] = hub.called("create_commit")
    assert (revision, create_pr) == (None, True)
    assert result.revision == "refs/pr/7"
    assert result.pr_url.endswith("/discussions/7")
    assert hub.called("list_repo_tree") == [(result.commit, True)]


@pytest.mark.usefixtures("online")
def test_the_publish_command_names_the_pull_request_the_commit_and_the_tag(local_repo, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)  # the command's own HfApi()
    result = CliRunner().invoke(main, ["publish", str(local_repo), "--repo-id", REPO_ID, "--create-pr", "--tag", "v1"])
    assert result.exit_code == 0, result.output
    n, size = len(_build_files(local_repo)), sum(_build_files(local_repo).values())
    assert result.output.endswith(
        f"sent {n} files, {size / 1e6:.1f} MB, to the dataset {REPO_ID} (a new pull request against main)\n"
        f"checked: the hub's files at commit {1:040x} are the ones splits.json lists\n"
        f"pull request: https://huggingface.co/datasets/{REPO_ID}/discussions/7 (resume into it with --revision "
        "refs/pr/7)\n"
        f"tagged v1: load_dataset('{REPO_ID}', 'labeled', revision='v1')\n"
    )


@pytest.mark.usefixtures("online")
def test_publish_to_main_is_refused_over_a_published_build_unless_named(local_repo):
    """An update of main takes several commits (an interrupted one leaves main mixed): without --create-pr or
    --revision it is refused before anything is sent; a new dataset goes to main; --revision main replaces it."""
    earlier = {".gitattributes": b"*.parquet filter=lfs\n", "README.md": b"old card", "splits.json": b"{}"}
    hub = FakeHub(earlier)
    with pytest.raises(RepoError, match=r"already holds a build on main.*--create-pr.*--revision main"):
        publish(local_repo, REPO_ID, api=hub)
    assert hub.called("create_commit") == []
    assert hub.files == earlier
    result = publish(local_repo, REPO_ID, revision="main", api=hub)
    assert (result.revision, hub.commits) == ("main", 1)
    fresh = FakeHub()
    assert publish(local_repo, REPO_ID, api=fresh).revision == "main"
    assert fresh.commits == 1


@pytest.mark.usefixtures("online")
def test_publish_fails_naming_what_the_hub_lacks_and_does_not_tag(local_repo):
    shard = "data/labeled/test-00000-of-00001.parquet"
    hub = FakeHub(lose=shard)
    with pytest.raises(RepoError) as error:
        publish(local_repo, REPO_ID, revision="v2", tag="v2.0", api=hub)
    message = str(error.value)
    assert message.startswith(f"{REPO_ID} at v2 (commit {1:040x}): the hub's files differ from ")
    assert f"{shard}: missing on the hub" in message
    assert "run publish again" in message
    assert hub.called("create_tag") == []


@pytest.mark.usefixtures("online")
def test_publish_refuses_an_existing_tag_before_sending_anything(local_repo):
    hub = FakeHub(tags=["v1.0"])
    with pytest.raises(RepoError, match="the tag 'v1.0' already exists on fm4npp/tpc-pp200"):
        publish(local_repo, REPO_ID, tag="v1.0", api=hub)
    assert hub.called("create_commit") == []


def test_the_check_after_the_upload_names_every_difference(local_repo):
    files = {p: (local_repo / p).read_bytes() for p in _build_files(local_repo)}
    assert hub_differences(local_repo, [_hub_file(p, c) for p, c in files.items()]) == []
    shard, other = sorted(p for p in files if p.endswith(".parquet"))[:2]
    changed = dict(files)
    changed[shard] = files[shard][:-1]  # a truncated upload
    changed[other] = files[other][:-1] + b"x"  # same size, other bytes
    changed["README.md"] = files["README.md"].replace(b"cc-by-4.0", b"cc-by-4.1")
    del changed["manifest.json"]
    changed["data/pretrain/train-00000-of-00099.parquet"] = b"stale"  # an earlier build's shard left behind
    changed["LICENSE"] = b"not ours: ignored"
    assert hub_differences(local_repo, [_hub_file(p, c) for p, c in changed.items()]) == [
        "manifest.json: missing on the hub",
        "README.md: its content on the hub differs from " + str(local_repo / "README.md"),
        f"{shard}: {len(files[shard]) - 1} bytes on the hub, {len(files[shard])} in splits.json",
        f"{other}: its sha256 on the hub differs from splits.json's",
        "data/pretrain/train-00000-of-00099.parquet: on the hub but not in this build (load_dataset would read it)",
    ]


def test_publish_refuses_without_a_token_and_checks_its_options_offline(local_repo, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored token
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    with pytest.raises(RepoError, match="no Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        publish(local_repo, REPO_ID, api=FakeHub())
    runner = CliRunner()
    both = runner.invoke(main, ["publish", str(local_repo), "--repo-id", REPO_ID, "--revision", "b", "--create-pr"])
    assert both.exit_code == 2
    assert both.output.startswith("Error: --create-pr opens a pull request against main")
    bad = runner.invoke(main, ["publish", str(local_repo), "--repo-id", REPO_ID, "--dry-run", "--tag", "v 1"])
    assert bad.exit_code == 2
    assert "--tag 'v 1' is not a git reference name" in bad.output
    dry = runner.invoke(main, ["publish", str(local_repo), "--repo-id", REPO_ID, "--dry-run", "--revision", "v1"])
    assert dry.exit_code == 0, dry.output
    n, size = len(_build_files(local_repo)), sum(_build_files(local_repo).values())
    assert dry.output.endswith(f"would send {n} files, {size / 1e6:.1f} MB, to the dataset {REPO_ID} (branch v1)\n")


def test_publish_help_gives_the_installed_huggingface_hubs_commit_batches():
    from huggingface_hub import _upload_pipeline as pipeline

    scale = pipeline.COMMIT_SIZE_SCALE
    first = scale[pipeline.INITIAL_COMMIT_SIZE_INDEX]
    text = " ".join(CliRunner().invoke(main, ["publish", "--help"]).output.split())
    assert (
        f"the installed huggingface_hub {huggingface_hub.__version__} (with hf_xet) commits a folder in batches: "
        f"{first} files in the first commit, then between {min(scale)} and {max(scale)} per commit" in text
    )
    if (first, min(scale), max(scale)) == (250, 20, 1000):  # huggingface_hub 2.4: 250 + 400 + 600 files
        assert "A build of 1,000 shards takes 3 commits or more" in text
    for option in ("--revision BRANCH", "--create-pr", "--tag TAG"):
        assert option in text


# ------------------------------------------------------------------------------------------------------------
# verify's progress
# ------------------------------------------------------------------------------------------------------------


def test_verify_shows_progress_on_a_terminal_only(small_repo, monkeypatch):
    shards = sum(len(v["shards"]) for c in _splits(small_repo)["configs"].values() for v in c.values())
    quiet = CliRunner().invoke(main, ["verify", str(small_repo)])
    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert quiet.stdout.startswith(f"{small_repo}: verified (labeled: train ")
    screen = io.StringIO()
    monkeypatch.setattr(data_cli, "console", Console(file=screen, force_terminal=True, width=120))
    shown = CliRunner().invoke(main, ["verify", str(small_repo)])
    assert shown.exit_code == 0, shown.output
    assert "verify" in screen.getvalue()
    assert f"{shards}/{shards}" in screen.getvalue()


# ------------------------------------------------------------------------------------------------------------
# One name for one thing
# ------------------------------------------------------------------------------------------------------------


def _options():
    for tool, group in (("fm4npp-data", main), ("fm4npp", models_main)):
        for name, command in group.commands.items():
            for param in command.params:
                yield tool, name, param


def test_run_is_a_run_folder_and_a_repository_read_for_data_is_data():
    """--run names a run folder wherever it is shown (display's integer is --run-number; its old --run is a hidden
    alias), and an option that takes a dataset repository is spelled --data."""
    for tool, name, param in _options():
        if "--run" in getattr(param, "opts", ()) and not param.hidden:
            assert isinstance(param.type, click.Path), f"{tool} {name} --run is {param.type}"
        if getattr(param, "metavar", None) == "REPO" or param.name == "data":
            assert param.opts == ["--data"], f"{tool} {name} {param.opts}"
    display = main.commands["display"]
    assert [p.opts for p in display.params if p.name in ("run", "run_alias")] == [["--run-number"], ["--run"]]
    assert "--run-number" in CliRunner().invoke(main, ["display", "--help"]).output
    assert "--run " not in CliRunner().invoke(main, ["display", "--help"]).output


def test_display_takes_the_run_number_and_still_the_old_run(small_repo, tmp_path):
    pytest.importorskip("matplotlib")
    import pyarrow.parquet as pq

    shard = sorted((small_repo / "data" / "labeled").glob("test-*.parquet"))[0]
    ids = pq.read_table(shard, columns=["run", "event"])
    run, event = ids["run"][0].as_py(), ids["event"][0].as_py()
    runner = CliRunner()
    for option in ("--run-number", "--run"):
        out = tmp_path / f"{option.strip('-')}.png"
        result = runner.invoke(
            main, ["display", str(shard), "--event", str(event), option, str(run), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"wrote {out}\n")
        assert out.stat().st_size > 0
    both = runner.invoke(
        main,
        [
            "display",
            str(shard),
            "--event",
            str(event),
            "--run-number",
            str(run),
            "--run",
            str(run + 1),
            "--out",
            str(tmp_path / "x.png"),
        ],
    )
    assert both.exit_code == 2
    assert f"--run {run + 1} and --run-number {run} disagree; give --run-number alone" in both.output


def test_the_cli_imports_no_hub_library_at_start():
    code = "import sys, fm4npp_cli.data; print(sorted(m for m in ('datasets', 'huggingface_hub') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
