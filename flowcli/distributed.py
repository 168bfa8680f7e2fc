"""Training across processes with torch.distributed, as started by `torchrun`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous variables) in each
process's environment. Every rank reads and encodes the whole table, so that all ranks share
one preprocessing fit; each then trains on its own shard of the training rows and validates
on its own shard of the validation rows, under DistributedDataParallel (gloo on CPU, NCCL on
GPU). The sums are all-reduced, so every rank takes the same early-stopping decisions and ends
with the same weights. Rank 0 alone reports progress and writes the bundle.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that use it: the CLI asks `rank()` without paying for torch.


def world_size() -> int:
    """How many processes train together: 1 unless started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start(device: torch.device) -> torch.device:
    """Join the process group when there is more than one rank; returns this rank's device."""
    if world_size() == 1:
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    if world_size() == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def total(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over all ranks (itself with one rank)."""
    if world_size() > 1:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
    return value


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on any: so that all ranks stop at the same step."""
    if world_size() == 1:
        return flags
    import torch

    return (total(torch.tensor(flags, dtype=torch.float32, device=device)) > 0).tolist()


def shard(rows: torch.Tensor, *, equal: bool) -> torch.Tensor:
    """This rank's share of `rows` (the same on every rank). With `equal`, the few left over are
    dropped, so that every rank takes the same number of training steps."""
    size = world_size()
    if size == 1:
        return rows
    return (rows[: len(rows) // size * size] if equal else rows)[rank() :: size]
