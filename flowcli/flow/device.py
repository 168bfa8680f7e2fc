"""Where training runs: the device, and whether the rows, weights and activations fit its free
memory, told before anything is allocated."""

from __future__ import annotations

import torch

from flowcli.errors import FlowcliError
from flowcli.flow.config import FlowConfig

EVAL_BATCH = 65_536  # rows a validation pass puts through the flow at once


def resolve_device(device: str) -> torch.device:
    """'auto' takes CUDA when it is available; asking for a missing CUDA is the user's error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise FlowcliError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise FlowcliError(f"--device {device!r} is not known; use auto, cpu or cuda")
    return torch.device(device)


def check_memory(rows: int, config: FlowConfig, batch_size: int, device: torch.device) -> None:
    """Fail with advice, before allocating, when training would not fit in free memory.

    The estimate counts float32 bytes: the rows on the device, the weights with their
    gradients, Adam moments and best copy, and the activations one step keeps for backward.
    """
    per_row_activations = config.layers * (2 * config.depth * config.hidden + 6 * config.features) + 3 * config.components * config.features
    needs = {
        "fewer rows (a sample of the table)": rows * config.features * 4,
        "--hidden or --layers": 5 * config.parameter_count() * 4,
        "--batch-size": max(min(batch_size, rows), min(rows, EVAL_BATCH) // 3) * per_row_activations * 4,
    }
    total = int(1.5 * sum(needs.values()))  # headroom for allocator slack and temporaries
    available = _available_bytes(device)
    if available is not None and total > available:
        biggest = max(needs, key=needs.get)
        raise FlowcliError(
            f"training needs about {total / 2**30:.1f} GiB of memory on {device} but {available / 2**30:.1f} GiB "
            f"is free; lower {biggest}"
        )


def _available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` in bytes, or None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
