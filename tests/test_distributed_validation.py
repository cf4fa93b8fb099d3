"""Pretraining validation under data parallelism when the validation split has fewer work units than ranks: the rank
without a unit adds nothing to the sums of every rank (the mean offsets of the neighbour ranks and the losses) and
still takes part in their collectives, so two gloo processes report exactly the one-process validation."""

import datetime
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")

from fm4npp_data.errors import TrainError  # noqa: E402
from fm4npp_data.integrity import READ_OPTIONS, WRITE_OPTIONS  # noqa: E402
from fm4npp_data.loader import make_loader  # noqa: E402
from fm4npp_models import Backbone  # noqa: E402
from fm4npp_models.pretrain import NeighbourTask  # noqa: E402
from fm4npp_models.training.distributed import Dist  # noqa: E402

K = 4  # conftest.SMALL_REPO_K


def _loader(shard: Path, rank: int, world_size: int):
    return make_loader(shard, batch_tokens=2_048, rank=rank, world_size=world_size, shuffle=False, k=K)


def _validate(tmp: Path, where: Dist) -> tuple[dict, int]:
    """The validation of the saved model over this rank's share of the one-unit shard, and its batch count."""
    model = Backbone.of_size("tiny", k=K)
    model.load_state_dict(torch.load(tmp / "model.pt", weights_only=True))
    model.eval()
    loader = _loader(tmp / "one-unit.parquet", where.rank, where.world_size)
    with torch.no_grad():
        val = NeighbourTask(where=where).validate(model, loader)
    return val, sum(1 for _ in loader)


def _rank(rank: int, tmp: Path) -> None:  # a spawned process of two
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=(tmp / "rendezvous").as_uri(), rank=rank, world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        val, batches = _validate(tmp, Dist(rank, 2))
        (tmp / f"rank{rank}.json").write_text(json.dumps({"val": val, "batches": batches}))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_unit(small_repo, tmp_path):
    """tmp_path with one-unit.parquet (the first row group of small_repo's pretraining validation split) and the
    state of a tiny backbone (model.pt)."""
    shard = next((small_repo / "data" / "pretrain").glob("validation-*.parquet"))
    table = pq.ParquetFile(shard, **READ_OPTIONS).read_row_group(0)
    pq.write_table(table, tmp_path / "one-unit.parquet", row_group_size=table.num_rows, **WRITE_OPTIONS)
    torch.manual_seed(0)
    torch.save(Backbone.of_size("tiny", k=K).state_dict(), tmp_path / "model.pt")
    return tmp_path


def test_a_rank_without_validation_units_adds_nothing(one_unit):
    alone, batches = _validate(one_unit, Dist())
    assert batches > 0
    assert alone["val_events"] > 0
    torch.multiprocessing.spawn(_rank, args=(one_unit,), nprocs=2, join=True)
    ranks = [json.loads((one_unit / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["batches"] for r in ranks] == [batches, 0]  # rank 1 has no unit: the situation of the flaky run
    for r in ranks:  # both ranks report the one-process validation, the mean offsets included
        assert r["val"]["val_events"] == alone["val_events"]
        assert r["val"] == pytest.approx(alone, rel=1e-12)
    assert alone["offset_loss"] < alone["own_loss"]  # the offsets are real, not zeros from the empty rank


def test_an_empty_validation_split_in_one_process_is_refused():
    with pytest.raises(TrainError, match=r"the validation data \(\[\]\) is empty$"):
        NeighbourTask().validate(Backbone.of_size("tiny", k=K), [])
