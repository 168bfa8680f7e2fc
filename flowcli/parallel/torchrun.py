"""Training across processes with torch.distributed, as started by `torchrun`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous variables) in each
process's environment. Each rank reads its own share of the rows (`table.shards`), and all ranks fit
one preprocessing on rows gathered from every share; each then trains and validates on its own
rows under DistributedDataParallel (gloo on CPU, NCCL on GPU). The sums are all-reduced, so
every rank takes the same early-stopping decisions and ends with the same weights. Rank 0 alone
reports progress and writes the bundle.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

# torch is imported inside the functions that use it: the CLI asks `rank()` without paying for torch.


def world_size() -> int:
    """How many processes train together: 1 unless started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start(device: torch.device) -> torch.device:
    """This rank's device for training, with the process group joined when there is more than one rank."""
    if world_size() == 1:
        return device
    import torch

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    _join()
    return device


def _join() -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")  # CPU tensors through gloo


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


def gather_bytes(data: bytes) -> list[bytes]:
    """`data` from every rank, in rank order: [data] with one rank."""
    if world_size() == 1:
        return [data]
    import torch
    import torch.distributed as dist

    _join()  # CPU tensors, so through gloo whatever the training device
    size = torch.tensor([len(data)])
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    buffer = torch.zeros(max(int(n) for n in sizes), dtype=torch.uint8)
    if data:
        buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    buffers = [torch.empty_like(buffer) for _ in sizes]
    dist.all_gather(buffers, buffer)
    return [bytes(part[: int(n)].numpy()) for part, n in zip(buffers, sizes)]


def gather_counts(count: int) -> list[int]:
    """An integer from every rank, in rank order."""
    return [int.from_bytes(part, "little") for part in gather_bytes(count.to_bytes(8, "little"))]


def mean(values: np.ndarray) -> float:
    """The mean of `values` over every rank's rows."""
    import numpy as np

    if world_size() == 1:
        return float(np.mean(values))
    parts = gather_bytes(np.array([np.sum(values), len(values)], np.float64).tobytes())
    total, count = np.frombuffer(b"".join(parts), np.float64).reshape(-1, 2).sum(axis=0)
    return float(total / count)
