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

from flowcli.architecture import MIN_BIN, MIN_SLOPE, SLOPE_OFFSET, FlowConfig


class Coupling(nn.Module):
    """z_C = x_C and z_T = τ(x_T; θ(x_C)): a monotone elementwise map τ of the transformed
    features, whose parameters θ an MLP computes from the conditioning ones. Subclasses give τ."""

    def __init__(self, conditioning: np.ndarray, transformed: np.ndarray, config: FlowConfig):
        super().__init__()
        self.register_buffer("conditioning", torch.as_tensor(conditioning, dtype=torch.long), persistent=False)
        self.register_buffer("transformed", torch.as_tensor(transformed, dtype=torch.long), persistent=False)
        self.config = config
        widths = [len(conditioning)] + [config.hidden] * config.depth + [config.outputs_per_feature * len(transformed)]
        self.linears = nn.ModuleList(_linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # Zero output weights make τ the identity, so training begins from the standardized data itself.
        nn.init.zeros_(self.linears[-1].weight)
        nn.init.zeros_(self.linears[-1].bias)

    def conditioner(self, x_conditioning: torch.Tensor) -> torch.Tensor:
        """The MLP's output (N, P·|T|) from the conditioning features (N, |C|)."""
        h = x_conditioning
        for linear in self.linears[:-1]:
            h = torch.relu(linear(h))
        return self.linears[-1](h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_transformed, log_det = self.elementwise(x[:, self.transformed], self.conditioner(x[:, self.conditioning]))
        z = x.clone()
        z[:, self.transformed] = z_transformed
        return z, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = z.clone()
        x[:, self.transformed] = self.elementwise_inverse(z[:, self.transformed], self.conditioner(z[:, self.conditioning]))
        return x


class AffineCoupling(Coupling):
    """τ(x) = x · exp(s) + t, with |s| soft-bounded by `scale_bound`."""

    def scale_shift(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-scale s and shift t, each (N, |T|), from the conditioner's output (N, 2|T|)."""
        s, t = out.chunk(2, dim=-1)
        return self.config.scale_bound * torch.tanh(s / self.config.scale_bound), t

    def elementwise(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.scale_shift(out)
        return x * torch.exp(s) + t, s.sum(dim=-1)

    def elementwise_inverse(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        s, t = self.scale_shift(out)
        return (z - t) * torch.exp(-s)


class SplineCoupling(Coupling):
    """τ a monotone rational-quadratic spline on [-B, B] (Durkan et al. 2019), the identity outside."""

    def elementwise(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_det = rational_quadratic(x, out.unflatten(-1, (x.shape[1], -1)), self.config.tail_bound)
        return y, log_det.sum(dim=-1)

    def elementwise_inverse(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return rational_quadratic(z, out.unflatten(-1, (z.shape[1], -1)), self.config.tail_bound, inverse=True)[0]




def rational_quadratic(
    x: torch.Tensor, params: torch.Tensor, bound: float, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline (or its inverse) at x (N, T), with params (N, T, 3K−1): K raw widths, K raw
    heights, K−1 raw interior slopes. Returns the value and log|dτ/dx| (N, T) (of the forward map)."""
    bins = (params.shape[-1] + 1) // 3
    x_knots = _knots(params[..., :bins], bound)
    y_knots = _knots(params[..., bins : 2 * bins], bound)
    ones = torch.ones_like(params[..., :1])  # slope 1 at ±B joins the identity tails smoothly
    slopes = torch.cat([ones, MIN_SLOPE + nn.functional.softplus(params[..., 2 * bins :] + SLOPE_OFFSET), ones], dim=-1)
    inside = (x > -bound) & (x < bound)
    x_in = x.clamp(-bound, bound)
    interior = (y_knots if inverse else x_knots)[..., 1:-1].contiguous()
    k = torch.searchsorted(interior, x_in[..., None].contiguous())  # each value's bin, (N, T, 1)

    def at_bin(table: torch.Tensor) -> torch.Tensor:
        return table.gather(-1, k).squeeze(-1)

    x0, width, y0, height = at_bin(x_knots[..., :-1]), at_bin(x_knots.diff()), at_bin(y_knots[..., :-1]), at_bin(y_knots.diff())
    d0, d1 = at_bin(slopes[..., :-1]), at_bin(slopes[..., 1:])
    delta = height / width
    if inverse:  # solve the quadratic for the position θ within the bin
        dy = x_in - y0
        a = height * (delta - d0) + dy * (d0 + d1 - 2 * delta)
        b = height * d0 - dy * (d0 + d1 - 2 * delta)
        c = -delta * dy
        theta = (2 * c / (-b - torch.sqrt((b**2 - 4 * a * c).clamp(min=0)))).clamp(0, 1)
    else:
        theta = (x_in - x0) / width
    spread = theta * (1 - theta)
    denominator = delta + (d0 + d1 - 2 * delta) * spread
    value = x0 + theta * width if inverse else y0 + height * (delta * theta**2 + d0 * spread) / denominator
    log_slope = (2 * torch.log(delta) + torch.log(d1 * theta**2 + 2 * delta * spread + d0 * (1 - theta) ** 2)
                 - 2 * torch.log(denominator))
    return torch.where(inside, value, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))


def _knots(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """K + 1 increasing knots from -bound to bound (…, K+1), each bin at least MIN_BIN of the span."""
    share = MIN_BIN + (1 - MIN_BIN * raw.shape[-1]) * torch.softmax(raw, dim=-1)
    inner = 2 * bound * torch.cumsum(share, dim=-1)[..., :-1] - bound
    edge = torch.full_like(inner[..., :1], bound)
    return torch.cat([-edge, inner, edge], dim=-1)


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
        kind = AffineCoupling if config.coupling == "affine" else SplineCoupling
        self.couplings = nn.ModuleList(kind(*config.split(k), config) for k in range(config.layers))

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
