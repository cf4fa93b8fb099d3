"""The dataset card (README.md of a repository): dataset_card.md with its placeholders filled, under a YAML header
that `datasets` and `huggingface_hub` write (configs, dataset_info with Arrow sizes, the hub's task and size
categories, the paper's link).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import Fm4nppError, RepoError, require
from ..labels import PID_CLASSES
from .layout import Assignment, Catalog, data_files


def card_template() -> str:
    """The project's dataset_card.md (shipped with the package as fm4npp_data/dataset_card.md when installed)."""
    for candidate in (Path(__file__).parents[1] / "dataset_card.md", Path(__file__).parents[2] / "dataset_card.md"):
        if candidate.is_file():
            return candidate.read_text()
    raise RepoError("dataset_card.md is missing from this installation of fm4npp")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


#: The paper the benchmark follows (linked from the card; the hub derives its `arxiv:` tag from the link).
PAPER = "https://arxiv.org/abs/2508.14087"
#: The hub's task categories of the benchmark: per-spacepoint labels (PID, noise, track) and pretrained features.
TASK_CATEGORIES = ["token-classification", "feature-extraction"]
#: The hub's size buckets (events, i.e. rows, of the whole repository), smallest first.
SIZE_CATEGORIES = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
)


def size_category(rows: int) -> str:
    """The hub's bucket of a dataset of `rows` rows: n<1K below 1,000, then one per power of ten."""
    return SIZE_CATEGORIES[min(max(len(str(int(rows))) - 3, 0), len(SIZE_CATEGORIES) - 1)]


def dataset_infos(folder: Path, splits: dict) -> dict:
    """{config: datasets.DatasetInfo} as `datasets` computes it for the repository in `folder`: each config is
    prepared from its Parquet shards by datasets' own Parquet builder (the builder `load_dataset(folder, config)`
    uses), so `dataset_size` and the splits' `num_bytes` are Arrow sizes and `download_size` the Parquet bytes. The
    Arrow files go to a temporary cache beside `folder`, removed after (a stale one goes with the build's staging)."""
    datasets = require("datasets", "hub", "fm4npp-data build (the card's dataset_info)")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    infos = {}
    try:
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f"{folder.name}.datasets-") as cache:
            for config, split_info in splits.items():
                files = {
                    split: [str(folder / "data" / config / shard["path"]) for shard in info["shards"]]
                    for split, info in split_info.items()
                    if info["events"]
                }
                if files:
                    builder = datasets.load_dataset_builder("parquet", data_files=files, cache_dir=cache)
                    builder.download_and_prepare()
                    infos[config] = builder.info
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the folder and the fix
        raise RepoError(
            f"{folder}: datasets cannot prepare the repository's shards ({type(exc).__name__}: {exc}); "
            "check the installed datasets and pyarrow, then build again"
        ) from exc
    finally:
        if bars:
            datasets.enable_progress_bars()
    return infos


def _yaml_header(stage: Path, splits: dict) -> str:
    """The card's YAML metadata, written by `datasets`' and `huggingface_hub`'s own helpers: license, the hub's task
    and size categories, tags, the `configs` (data files of each split) and the `dataset_info` that datasets computes
    (features, Arrow sizes, examples per split, download size)."""
    hub = require("huggingface_hub", "hub", "fm4npp-data build (the card's YAML header)")
    require("datasets", "hub", "fm4npp-data build (the card's dataset_info)")
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    rows = sum(v["events"] for d in splits.values() for v in d.values())
    data = hub.DatasetCardData(
        license="cc-by-4.0",
        pretty_name="sPHENIX TPC p+p 200 GeV (fm4npp)",
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(rows)],
        tags=["physics", "particle-physics", "point-cloud", "sphenix"],
    )
    configs = {}
    for config, split_info in splits.items():
        files = [{"split": s, "path": data_files(config, s)} for s, v in split_info.items() if v["events"]]
        if files:
            configs[config] = {"data_files": files, **({"default": True} if config == "labeled" else {})}
    MetadataConfigs(configs).to_dataset_card_data(data)
    DatasetInfosDict(dataset_infos(stage, splits)).to_dataset_card_data(data)
    return f"---\n{data.to_yaml()}\n---\n"


def render_card(stage: Path, manifest: dict, splits: dict, catalog: Catalog, assignment: Assignment) -> str:
    """README.md of the repository: the YAML header, then dataset_card.md with its {{placeholders}} filled."""
    kept = assignment.config >= 0
    sp = catalog.spacepoints[kept]
    values = {
        "tool_version": manifest["tool_version"],
        "build_date": manifest["built"],
        "total_events": f"{int(kept.sum()):,}",
        "total_spacepoints": f"{int(sp.sum()):,}",
        "mean_spacepoints": f"{sp.mean():.0f}" if sp.size else "0",
        "max_spacepoints": f"{int(sp.max()):,}" if sp.size else "0",
        "splits_table": _table(
            ["config", "split", "events", "spacepoints", "shards", "bytes"],
            [
                [
                    c,
                    s,
                    f"{v['events']:,}",
                    f"{v['spacepoints']:,}",
                    len(v["shards"]),
                    f"{sum(x['bytes'] for x in v['shards']):,}",
                ]
                for c, d in splits.items()
                for s, v in d.items()
            ],
        ),
        "class_table": _class_table(stage, splits),
        "noise_rule": _noise_rule(manifest["inputs"]),
        "sources_table": _table(
            ["input", "layouts", "events", "fast simulation"],
            [
                [
                    Path(i["path"]).name or i["path"],
                    ", ".join(i["layouts"]),
                    f"{i['events']:,}",
                    "yes" if i["simulated"] else "no",
                ]
                for i in manifest["inputs"]
            ],
        ),
        "simulated": _simulated_sentence(manifest["inputs"]),
        "excluded_table": _table(["reason", "events"], [[k, f"{v:,}"] for k, v in assignment.excluded.items()]),
        "k": _k(stage),
        "binning_key": manifest["binning"],
    }
    text = card_template()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise RepoError(f"dataset_card.md has placeholders build does not know: {', '.join(left)}")
    return _yaml_header(stage, splits) + "\n" + text


def _k(stage: Path) -> str:
    for path in sorted((stage / "data").rglob("*.parquet")):
        field_type = pq.read_schema(path).field("knn").type
        return str(field_type.value_type.list_size)
    return "-"


def _noise_rule(inputs: list[dict]) -> str:
    rules = sorted(
        {
            f"{'p_T' if i['noise_rule'] == 'pt' else 'p'} < {i['noise_cut']:.3f} GeV/c"
            for i in inputs
            if i["noise_cut"] is not None
        }
    )
    return ", ".join(rules) or "p_T < 0.060 GeV/c (the release's own labels)"


def _simulated_sentence(inputs: list[dict]) -> str:
    sim = sum(i["events"] for i in inputs if i["simulated"])
    total = sum(i["events"] for i in inputs)
    if sim == total:
        return f"All {total:,} events of this build come from fm4npp's fast simulation, not from the GEANT4 chain."
    if sim == 0:
        return "No event of this build comes from fm4npp's fast simulation."
    return f"{sim:,} of the {total:,} events of this build come from fm4npp's fast simulation."


def _class_table(stage: Path, splits: dict) -> str:
    rows = []
    for split, info in splits.get("labeled", {}).items():
        if not info["events"]:
            continue
        counts = np.zeros(len(PID_CLASSES), np.int64)
        noise = total = 0
        for shard in info["shards"]:
            table = pq.read_table(stage / "data" / "labeled" / shard["path"], columns=["pid", "noise"])
            pid = pc.list_flatten(table["pid"]).to_numpy()
            counts += np.bincount(pid, minlength=len(PID_CLASSES))
            noise += int(pc.sum(pc.list_flatten(table["noise"]).cast(pa.int64())).as_py() or 0)
            total += pid.shape[0]
        total = max(total, 1)
        rows.append([split, *(f"{c / total:.1%}" for c in counts), f"{noise / total:.1%}"])
    if not rows:
        return "(no labeled events in this build)"
    return _table(["split", *PID_CLASSES, "noise"], rows)
