"""RealNVP in torch (Dinh, Sohl-Dickstein & Bengio 2017), used for training.

`forward` maps data to latent and returns `(z, log_det)`, where log_det = log|det ∂z/∂x|
per row, so log p(x) = log N(z; 0, I) + log_det. The numpy twin in `numpy_flow` evaluates
the same weights for scoring and sampling without importing torch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from flowcli.architecture import FlowConfig


class AffineCoupling(nn.Module):
    """z_T = x_T · exp(s(x_C)) + t(x_C), z_C = x_C, with |s| soft-bounded by `scale_bound`."""

    def __init__(self, conditioning: np.ndarray, transformed: np.ndarray, hidden: int, depth: int, scale_bound: float):
        super().__init__()
        self.register_buffer("conditioning", torch.as_tensor(conditioning, dtype=torch.long), persistent=False)
        self.register_buffer("transformed", torch.as_tensor(transformed, dtype=torch.long), persistent=False)
        self.scale_bound = scale_bound
        widths = [len(conditioning)] + [hidden] * depth + [2 * len(transformed)]
        self.linears = nn.ModuleList(_linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # Start as the identity map, so training begins from the standardized data itself.
        nn.init.zeros_(self.linears[-1].weight)
        nn.init.zeros_(self.linears[-1].bias)

    def scale_shift(self, x_conditioning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-scale s and shift t, each (N, |T|), from the conditioning features (N, |C|)."""
        h = x_conditioning
        for linear in self.linears[:-1]:
            h = torch.relu(linear(h))
        s, t = self.linears[-1](h).chunk(2, dim=-1)
        return self.scale_bound * torch.tanh(s / self.scale_bound), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.scale_shift(x[:, self.conditioning])
        z = x.clone()
        z[:, self.transformed] = x[:, self.transformed] * torch.exp(s) + t
        return z, s.sum(dim=-1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        s, t = self.scale_shift(z[:, self.conditioning])
        x = z.clone()
        x[:, self.transformed] = (z[:, self.transformed] - t) * torch.exp(-s)
        return x


class LinearMixing(nn.Module):
    """z = x Wᵀ + b with W = L·U: L unit lower-triangular, U upper-triangular with diagonal
    exp(log_scale). W is invertible for any parameters and log|det W| = Σ log_scale.
    It starts as the identity."""

    def __init__(self, features: int):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def weight(self) -> torch.Tensor:
        """W (D, D)."""
        eye = torch.eye(len(self.bias), dtype=self.bias.dtype, device=self.bias.device)
        return (torch.tril(self.lower, -1) + eye) @ (torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_scale)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight().T + self.bias, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.bias) @ torch.linalg.inv(self.weight()).T


class RealNVP(nn.Module):
    """Steps of (optional linear mixing, affine coupling) over a standard normal base, shaped by a `FlowConfig`."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        if config.mixing:
            self.mixings = nn.ModuleList(LinearMixing(config.features) for _ in range(config.layers))
        self.couplings = nn.ModuleList(
            AffineCoupling(*config.split(k), config.hidden, config.depth, config.scale_bound)
            for k in range(config.layers)
        )

    def steps(self) -> list[nn.Module]:
        """The maps in data → latent order."""
        mixings = self.mixings if self.config.mixing else [None] * self.config.layers
        return [step for pair in zip(mixings, self.couplings) for step in pair if step is not None]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data (N, D) → latent (N, D) and log|det ∂z/∂x| (N,)."""
        log_det = x.new_zeros(x.shape[0])
        for step in self.steps():
            x, ladj = step(x)
            log_det = log_det + ladj
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, D) → data (N, D)."""
        for step in reversed(self.steps()):
            z = step.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row (N,), in the units of x."""
        return change_of_variables(*self(x))

    def export_weights(self) -> dict[str, np.ndarray]:
        """The weights as float32 numpy arrays, named as `FlowConfig.weight_shapes` names them."""
        return {name: value.detach().to("cpu", torch.float32).numpy().copy() for name, value in self.state_dict().items()}

    def import_weights(self, weights: dict[str, np.ndarray]) -> RealNVP:
        self.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()})
        return self


def change_of_variables(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """log p(x) (N,) from the latent z (N, D) and log|det ∂z/∂x| (N,), under the standard normal base."""
    return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi) + log_det


def _linear(fan_in: int, fan_out: int) -> nn.Linear:
    with warnings.catch_warnings():
        # A coupling of one feature has no conditioning inputs: torch warns about the empty weight.
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        return nn.Linear(fan_in, fan_out)
