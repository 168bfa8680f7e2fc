"""RealNVP inference in numpy: the same maps as `flows.RealNVP`, without importing torch.

Scoring and sampling are matmuls, ReLUs and exps over the bundle's weights, so they run
here and start in a fraction of a second. Tests prove this path equal to the torch one.
"""

from __future__ import annotations

import math

import numpy as np

from flowcli.architecture import FlowConfig


class _Mixing:
    """`flows.LinearMixing`: z = x Wᵀ + b, with W composed from its LU factors in float64 once."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, dtype: type):
        log_scale = weights[prefix + "log_scale"].astype(np.float64)
        lower = np.tril(weights[prefix + "lower"].astype(np.float64), -1) + np.eye(len(log_scale))
        upper = np.triu(weights[prefix + "upper"].astype(np.float64), 1) + np.diag(np.exp(log_scale))
        weight = lower @ upper
        self.weight_t = np.ascontiguousarray(weight.T, dtype=dtype)
        self.inverse_t = np.ascontiguousarray(np.linalg.inv(weight).T, dtype=dtype)
        self.bias = weights[prefix + "bias"].astype(dtype)
        self.log_det = dtype(log_scale.sum())

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | np.floating]:
        return x @ self.weight_t + self.bias, self.log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z - self.bias) @ self.inverse_t


class _Coupling:
    """`flows.AffineCoupling`: z_T = x_T · exp(s(x_C)) + t(x_C), with s soft-bounded."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, config: FlowConfig, layer: int, dtype: type):
        self.conditioning, self.transformed = config.split(layer)
        self.linears = [
            (np.ascontiguousarray(weights[f"{prefix}{j}.weight"].T, dtype=dtype), weights[f"{prefix}{j}.bias"].astype(dtype))
            for j in range(config.depth + 1)
        ]
        self.bound = dtype(config.scale_bound)

    def _scale_shift(self, x_conditioning: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = x_conditioning
        for weight, bias in self.linears[:-1]:
            h = h @ weight
            h += bias
            np.maximum(h, 0, out=h)
        weight, bias = self.linears[-1]
        out = h @ weight + bias
        half = out.shape[1] // 2
        return self.bound * np.tanh(out[:, :half] / self.bound), out[:, half:]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, t = self._scale_shift(x[:, self.conditioning])
        x[:, self.transformed] = x[:, self.transformed] * np.exp(s) + t
        return x, s.sum(axis=1)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        s, t = self._scale_shift(z[:, self.conditioning])
        z[:, self.transformed] = (z[:, self.transformed] - t) * np.exp(-s)
        return z


class NumpyRealNVP:
    """Evaluate a RealNVP given its `FlowConfig` and weights (named as in `weight_shapes`)."""

    def __init__(self, config: FlowConfig, weights: dict[str, np.ndarray], dtype: type = np.float32):
        self.config = config
        self.dtype = dtype
        self.steps: list[_Mixing | _Coupling] = []  # in data → latent order
        for k in range(config.layers):
            if config.mixing:
                self.steps.append(_Mixing(weights, f"mixings.{k}.", dtype))
            self.steps.append(_Coupling(weights, f"couplings.{k}.linears.", config, k, dtype))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data (N, D) → latent (N, D) and log|det ∂z/∂x| (N,)."""
        z = np.array(x, dtype=self.dtype)
        log_det = np.zeros(len(z), dtype=self.dtype)
        for step in self.steps:
            z, step_log_det = step.forward(z)
            log_det += step_log_det
        return z, log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Latent (N, D) → data (N, D)."""
        x = np.array(z, dtype=self.dtype)
        for step in reversed(self.steps):
            x = step.inverse(x)
        return x

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log p(x) per row (N,) as float64, in the units of x."""
        z, log_det = self.forward(x)
        z = z.astype(np.float64)
        log_p = -0.5 * np.einsum("ij,ij->i", z, z) - 0.5 * z.shape[1] * math.log(2 * math.pi) + log_det
        # A row so extreme that float32 overflows has, in the limit, density zero.
        return np.where(np.isnan(log_p), -np.inf, log_p)
