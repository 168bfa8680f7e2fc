"""Adam over one flat buffer that holds every weight of a module.

At a batch of a few hundred rows a training step is mostly per-operation overhead, and torch's
Adam, gradient clipping and zeroing each visit every one of a flow's tensors (about a hundred).
Here the parameters are views into one buffer and their gradients views into another, which
backward accumulates into in place, so each of those is one operation on one tensor.
"""

from __future__ import annotations

import torch
from torch import nn


class FlatAdam(torch.optim.Adam):
    """Adam (fused into one kernel where this torch has it) over all of `module`'s parameters.

    Building it moves the parameters into one buffer: build it after moving the module to its
    device and dtype. `zero_grad` zeros the gradient buffer in place and never sets it to None.
    """

    def __init__(self, module: nn.Module, lr: float):
        parameters = list(module.parameters())
        values = torch.cat([parameter.detach().reshape(-1) for parameter in parameters])
        gradients = torch.zeros_like(values)
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            parameter.data = values[offset : offset + size].view_as(parameter)
            parameter.grad = gradients[offset : offset + size].view_as(parameter)
            offset += size
        self.flat = nn.Parameter(values)
        self.flat.grad = gradients
        try:
            super().__init__([self.flat], lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch or device without fused Adam
            super().__init__([self.flat], lr=lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.flat.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> None:
        """Scale the gradients so that their joint Euclidean norm is at most `max_norm`."""
        nn.utils.clip_grad_norm_([self.flat], max_norm)

    def restart(self, lr: float) -> None:
        """Forget the moments, as a fresh optimizer at `lr` would."""
        self.state.clear()
        self.param_groups[0]["lr"] = lr
