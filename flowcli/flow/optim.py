"""Adam over one flat buffer that holds every weight of a module, and an average of those weights.

At a batch of a few hundred rows a training step is mostly per-operation overhead, and torch's
Adam, gradient clipping and zeroing each visit every one of a flow's tensors (about a hundred).
Here the parameters are views into one buffer and their gradients views into another, which
backward accumulates into in place, so each of those is one operation on one tensor. The Adam
step is written out rather than torch.optim's: building a torch optimizer imports TorchDynamo,
1 to 2 seconds of every `fit` on a CPU, and on one tensor the step is six operations anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


class FlatAdam:
    """Adam, exactly as torch.optim.Adam steps it, over all of `module`'s parameters.

    Building it moves the parameters into one buffer: build it after moving the module to its
    device and dtype. `zero_grad` zeros the gradient buffer in place and never sets it to None.
    Set `lr` between steps to schedule the learning rate.
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
        self.restart(lr)

    @torch.no_grad()
    def step(self) -> None:
        (beta1, beta2), gradient = BETAS, self.flat.grad
        self.steps += 1
        self.first.lerp_(gradient, 1 - beta1)
        self.second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        denominator = (self.second.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(EPS)
        self.flat.addcdiv_(self.first, denominator, value=-self.lr / (1 - beta1**self.steps))

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> None:
        """Scale the gradients so that their joint Euclidean norm is at most `max_norm`."""
        nn.utils.clip_grad_norm_([self.flat], max_norm)

    def restart(self, lr: float) -> None:
        """Forget the moments, as a fresh optimizer at `lr` would."""
        self.first, self.second = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.steps, self.lr = 0, lr


class WeightAverage:
    """An exponential moving average of a `FlatAdam`'s weights (Polyak averaging), one in-place
    lerp per step. Steps follow the raw weights; validation and checkpoints use the average,
    which sits nearer a minimum's centre than the weights that noisy steps circle it with.
    Its decay warms up as (1 + t)/(10 + t) after t steps, so that a short fit's average is not
    mostly the initial weights (45 steps at 0.99 would keep 64 % of them).
    Measured by bench/density.py at 30 s: banana-32 −0.30 nats, Sachs −0.05, weather −0.04,
    student-t-8 −0.015, galaxy and mixture-16 unchanged.
    """

    def __init__(self, optimizer: FlatAdam, decay: float):
        self.weights = optimizer.flat
        self.average = self.weights.detach().clone()
        self.decay = decay
        self.steps = 0

    def update(self) -> None:
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.average.lerp_(self.weights.detach(), 1 - decay)
        self.steps += 1

    def reset(self) -> None:
        """Start the average afresh from the weights (after they were reloaded)."""
        self.average.copy_(self.weights.detach())
        self.steps = 0

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The average in place of the weights while the block runs."""
        raw = self.weights.detach().clone()
        with torch.no_grad():
            self.weights.copy_(self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                self.weights.copy_(raw)
