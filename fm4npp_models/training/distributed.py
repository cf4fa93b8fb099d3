"""Distributed set-up of the training commands: this process's place under torchrun (`Dist`, `distributed`,
`finish`), its device (`device_of`, `to_device`), the collectives the loop needs (`all_sum`, `all_gather`, `barrier`)
and the model behind DistributedDataParallel (`unwrap`).

Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA); each
rank reads its share of the data (the loader's rank / world_size); rank 0 writes the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from fm4npp_data.errors import TrainError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed() -> Dist:
    """This process's place under torchrun (RANK, WORLD_SIZE, LOCAL_RANK), initializing the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish(where: Dist) -> None:
    """End this process's part in a distributed run: wait for every rank, then leave the process group (a rank
    that exits with the group alive can abort in the communication library's threads)."""
    if where.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def device_of(name: str, where: Dist) -> torch.device:
    """`auto` (this process's GPU when CUDA is available, else the CPU), `cpu`, `cuda`, `cuda:N`; TrainError else."""
    if name == "auto":
        return torch.device(f"cuda:{where.local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"--device {name!r} is not a device; give auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}, but this machine has no CUDA device; give --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise TrainError(f"--device {name}: fm4npp trains on cpu or cuda")
    return device


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def all_sum(values: list[float], where: Dist) -> list[float]:
    """Element-wise sum over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    if where.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


def all_gather(obj, where: Dist) -> list:
    if where.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * where.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(where: Dist) -> None:
    if where.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
