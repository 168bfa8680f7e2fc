"""RealNVP inference in numpy: the same maps as `flows.RealNVP`, without importing torch.

Scoring and sampling are matmuls, ReLUs and exps over the bundle's weights, so they run
here and start in a fraction of a second. Tests prove this path equal to the torch one.
"""

from __future__ import annotations

import math

import numpy as np

from flowcli.architecture import FlowConfig


class NumpyRealNVP:
    """Evaluate a RealNVP given its `FlowConfig` and weights (named as in `weight_shapes`)."""

    def __init__(self, config: FlowConfig, weights: dict[str, np.ndarray], dtype: type = np.float32):
        self.config = config
        self.dtype = dtype
        self.couplings = []
        for k in range(config.layers):
            linears = [
                (
                    np.ascontiguousarray(weights[f"couplings.{k}.linears.{j}.weight"].T, dtype=dtype),
                    weights[f"couplings.{k}.linears.{j}.bias"].astype(dtype),
                )
                for j in range(config.depth + 1)
            ]
            self.couplings.append((*config.split(k), linears))

    def _scale_shift(self, x_conditioning: np.ndarray, linears: list) -> tuple[np.ndarray, np.ndarray]:
        h = x_conditioning
        for weight, bias in linears[:-1]:
            h = h @ weight
            h += bias
            np.maximum(h, 0, out=h)
        weight, bias = linears[-1]
        out = h @ weight + bias
        half = out.shape[1] // 2
        bound = self.dtype(self.config.scale_bound)
        return bound * np.tanh(out[:, :half] / bound), out[:, half:]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data (N, D) → latent (N, D) and log|det ∂z/∂x| (N,)."""
        z = np.array(x, dtype=self.dtype)
        log_det = np.zeros(len(z), dtype=self.dtype)
        for conditioning, transformed, linears in self.couplings:
            s, t = self._scale_shift(z[:, conditioning], linears)
            z[:, transformed] = z[:, transformed] * np.exp(s) + t
            log_det += s.sum(axis=1)
        return z, log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Latent (N, D) → data (N, D)."""
        x = np.array(z, dtype=self.dtype)
        for conditioning, transformed, linears in reversed(self.couplings):
            s, t = self._scale_shift(x[:, conditioning], linears)
            x[:, transformed] = (x[:, transformed] - t) * np.exp(-s)
        return x

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log p(x) per row (N,) as float64, in the units of x."""
        z, log_det = self.forward(x)
        z = z.astype(np.float64)
        log_p = -0.5 * np.einsum("ij,ij->i", z, z) - 0.5 * z.shape[1] * math.log(2 * math.pi) + log_det
        # A row so extreme that float32 overflows has, in the limit, density zero.
        return np.where(np.isnan(log_p), -np.inf, log_p)
