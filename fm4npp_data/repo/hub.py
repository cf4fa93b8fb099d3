"""The Hugging Face hub: `publish` a verified repository (to main, a branch or a pull request; a tag), the check of
the hub's files against splits.json after the upload, and `load` (a local repository or a hub id, as `datasets`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

from ..errors import Fm4nppError, RepoError, require
from ..files import sha256_file
from ..integrity import SPLITS_FILE, checked_shards, read_splits
from ..version import tool_version
from .layout import CONFIGS, README
from .verify import verify


def publish_plan(repo: str | Path) -> list[tuple[str, int]]:
    """(path in the repository, bytes) of every file `publish` sends, after `verify`."""
    repo = Path(repo)
    verify(repo)
    files = sorted(
        p for p in repo.rglob("*") if p.is_file() and not any(q.startswith(".") for q in p.relative_to(repo).parts)
    )
    return [(p.relative_to(repo).as_posix(), p.stat().st_size) for p in files]


#: What publish leaves out (a run's temporary files) and what it replaces on the hub (an earlier build's files).
PUBLISH_IGNORE = [".*", "**/.*"]
PUBLISH_REPLACE = ["data/**", "*.json", README]
_REF = re.compile(r"(?!-)(?!.*\.\.)[\w.-]+(/[\w.-]+)*")


class Published(list):
    """The files sent, [(path, bytes)], and where they went: `target` (in words), `revision` (the branch or the pull
    request's refs/pr/N), `commit`, `pr_url` and `tag` (None on a dry run, or where they do not apply)."""

    def __init__(
        self,
        plan,
        target: str,
        revision: str | None = None,
        commit: str | None = None,
        pr_url: str | None = None,
        tag: str | None = None,
    ) -> None:
        super().__init__(plan)
        self.target, self.revision, self.commit, self.pr_url, self.tag = target, revision, commit, pr_url, tag


def _check_publish_options(repo_id: str, revision: str | None, create_pr: bool, tag: str | None) -> str:
    """The options checked before anything is read or sent; the target in words."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise RepoError(f"--repo-id must look like OWNER/NAME, not {repo_id!r}")
    if revision is not None and create_pr:
        raise RepoError(
            "--create-pr opens a pull request against main, --revision names the branch to publish to: "
            "give one of them (to resume into a pull request: --revision refs/pr/N alone)"
        )
    for name, value in (("--revision", revision), ("--tag", tag)):
        if value is not None and not _REF.fullmatch(value):
            raise RepoError(f"{name} {value!r} is not a git reference name (letters, digits, . _ - and /)")
    if create_pr:
        return "a new pull request against main"
    return f"branch {revision}" if revision and not revision.startswith("refs/pr/") else (revision or "branch main")


def publish(
    repo: str | Path,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    tag: str | None = None,
    api=None,
) -> Published:
    """Upload a verified repository to the Hugging Face hub as dataset `repo_id`; the files sent.

    To main (default, only while main holds no build: an update of a published build must name its target), to the
    branch `revision` (created from main if absent; "main" replaces main's build in place; `refs/pr/N` resumes into a
    pull request) or, with `create_pr`, to a new pull request against main; the earlier build's files there are
    deleted.
    huggingface_hub's upload_folder commits a large folder in several commits (the first one carries the
    deletions), so an interrupted upload leaves its target mixed until it is run again: a branch or a pull request
    keeps main as it was. After the upload, the hub's files and sizes at the new commit are checked against
    splits.json (RepoError naming the differences); then `tag` is created at that commit. `dry_run` returns the
    plan without touching the network. The upload sends only what the hub lacks, so running it again resumes it.
    `api`: a huggingface_hub.HfApi (default: a new one)."""
    target = _check_publish_options(repo_id, revision, create_pr, tag)
    plan = publish_plan(repo)
    if dry_run:
        return Published(plan, target)
    hub = require("huggingface_hub", "hub", "fm4npp-data publish")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise RepoError("HF_HUB_OFFLINE is set: publishing needs the network; unset it, or use --dry-run")
    if hub.get_token() is None:
        raise RepoError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then publish again")
    api = api or hub.HfApi()
    repo = Path(repo)
    try:
        commit = _upload(api, repo, repo_id, private, revision, create_pr, tag)
        listing = list(api.list_repo_tree(repo_id, repo_type="dataset", revision=commit.oid, recursive=True))
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub errors of many types: one message, the fix
        resume = " (with --create-pr: resume into the pull request with --revision refs/pr/N)" if create_pr else ""
        raise RepoError(
            f"publishing {repo} to {repo_id} ({target}) failed ({type(exc).__name__}: {exc}); run it "
            f"again to resume{resume}: files already on the hub are not sent twice"
        ) from exc
    where = f"{repo_id} at {commit.pr_revision or revision or 'main'} (commit {commit.oid})"
    differences = hub_differences(repo, listing)
    if differences:
        raise RepoError(
            f"{where}: the hub's files differ from {repo / SPLITS_FILE}: "
            + "; ".join(differences[:10])
            + (f"; and {len(differences) - 10} more" if len(differences) > 10 else "")
            + "; run publish again (it sends what differs)"
        )
    if tag is not None:
        try:
            api.create_tag(
                repo_id,
                tag=tag,
                revision=commit.oid,
                repo_type="dataset",
                tag_message=f"fm4npp {tool_version()}: dataset build",
            )
        except Exception as exc:  # noqa: BLE001 - hub errors of many types
            raise RepoError(
                f"{where}: published and checked, but the tag {tag!r} could not be created "
                f"({type(exc).__name__}: {exc}); create it on the hub, or publish again with "
                "another --tag"
            ) from exc
    return Published(plan, target, commit.pr_revision or revision or "main", commit.oid, commit.pr_url, tag)


def _upload(api, repo: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool, tag: str | None):
    """Create the dataset and the branch as needed, refuse a tag that exists, upload the folder; its CommitInfo."""
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if tag is not None and tag in {t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}:
        raise RepoError(
            f"the tag {tag!r} already exists on {repo_id}: a citable version names one build; choose another --tag"
        )
    if revision is None and not create_pr and SPLITS_FILE in api.list_repo_files(repo_id, repo_type="dataset"):
        raise RepoError(
            f"{repo_id} already holds a build on main: an upload there takes several commits, and one that "
            "is interrupted leaves main mixed; publish to a pull request (--create-pr) or a branch "
            "(--revision NAME), or give --revision main to replace it in place"
        )
    if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)  # from main's head if new
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(repo),
        revision=revision,
        create_pr=create_pr,
        commit_message=f"fm4npp {tool_version()}: dataset build",
        ignore_patterns=list(PUBLISH_IGNORE),
        delete_patterns=list(PUBLISH_REPLACE),
    )


def expected_files(repo: Path) -> dict[str, tuple[int, str]]:
    """{path in the repository: (bytes, sha256)} of every file a published build holds: the shards as splits.json
    records them, the files beside data/ with splits.json's sha256, and splits.json itself."""
    splits = read_splits(repo)
    files = {
        f"data/{config}/{shard['path']}": (shard["bytes"], shard["sha256"])
        for config, split_info in splits["configs"].items()
        for info in split_info.values()
        for shard in info["shards"]
    }
    for name, sha in splits["files"].items():
        files[name] = ((repo / name).stat().st_size, sha)
    files[SPLITS_FILE] = ((repo / SPLITS_FILE).stat().st_size, sha256_file(repo / SPLITS_FILE))
    return files


def _git_blob_id(path: Path) -> str:
    """git's object id of a file (sha1 of 'blob SIZE\\0' + content): what the hub lists for a file not in LFS."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id, not a security hash


def hub_differences(repo: Path, listing: Iterable) -> list[str]:
    """How the hub's files (`listing`: huggingface_hub RepoFile entries of list_repo_tree, folders ignored) differ
    from the build in `repo`: a file missing, a size or sha256 (LFS) / git blob id (other files) that differs, or a
    file of a build (data/, *.json, README.md) that this build does not have."""
    expected = expected_files(repo)
    remote = {f.path: f for f in listing if hasattr(f, "size") and hasattr(f, "blob_id")}
    problems = [f"{path}: missing on the hub" for path in sorted(set(expected) - set(remote))]
    for path in sorted(set(expected) & set(remote)):
        size, sha = expected[path]
        entry = remote[path]
        if entry.size != size:
            problems.append(f"{path}: {entry.size} bytes on the hub, {size} in splits.json")
        elif entry.lfs is not None and entry.lfs.sha256 != sha:
            problems.append(f"{path}: its sha256 on the hub differs from splits.json's")
        elif entry.lfs is None and entry.blob_id != _git_blob_id(repo / path):
            problems.append(f"{path}: its content on the hub differs from {repo / path}")
    stray = [p for p in sorted(set(remote) - set(expected)) if any(fnmatch(p, g) for g in PUBLISH_REPLACE)]
    problems += [f"{path}: on the hub but not in this build (load_dataset would read it)" for path in stray]
    return problems


def load(path_or_id: str | Path, config: str = "labeled", split: str | None = None):
    """The dataset as `datasets.Dataset` (one split) or `DatasetDict` (split=None), from a local repository folder
    or a hub id (`fm4npp/tpc-pp200`; from the local cache when HF_HUB_OFFLINE=1).

    A local folder's shards are checked against its splits.json first (fm4npp_data.integrity.checked_shards);
    `datasets` itself then only compares each split's number of events with the card's `dataset_info`."""
    datasets = require("datasets", "hub", "fm4npp_data.load")
    if config not in CONFIGS:
        raise RepoError(f"unknown config {config!r}; the configs are {', '.join(CONFIGS)}")
    local = Path(path_or_id)
    source = str(local) if local.exists() else str(path_or_id)
    if local.exists() and not (local / README).is_file():
        raise RepoError(f"{local}: not a dataset repository (no {README}); build one with fm4npp-data build")
    if local.exists():  # the shards datasets will read, checked against splits.json first (a hub id: see README)
        listed = read_splits(local)["configs"].get(config, {})
        for name in [split] if split is not None else [s for s, info in listed.items() if info["events"]]:
            checked_shards(local, config, name)
    try:
        return datasets.load_dataset(source, config, split=split)
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source and the fix
        raise RepoError(
            f"cannot load {source} ({config}, {split or 'all splits'}): {type(exc).__name__}: {exc}"
        ) from exc
