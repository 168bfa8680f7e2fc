"""RealNVP inference in numpy: the same maps as `torch_flow.RealNVP`, without importing torch.

Scoring and sampling are matmuls and elementwise maps over the bundle's weights, so they run
here and start in a fraction of a second. Tests prove this path equal to the torch one.
"""

from __future__ import annotations

import numpy as np

from flowcli.flow import level_inputs, registry
from flowcli.flow.config import FlowConfig
from flowcli.parallel.threads import map_rows


class _Mixing:
    """`torch_flow.LinearMixing`: z = x Wᵀ + b, with W composed from its LU factors in float64 once.

    It reads features stored in `order_in` and writes them in `order_out` (storage column j holds
    feature order[j]): rows and columns of W permuted, exactly, so that the next coupling finds
    its conditioning features first and its transformed ones after, as contiguous slices.
    """

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, dtype: type, order_in: np.ndarray, order_out: np.ndarray):
        log_scale = weights[prefix + "log_scale"].astype(np.float64)
        lower = np.tril(weights[prefix + "lower"].astype(np.float64), -1) + np.eye(len(log_scale))
        upper = np.triu(weights[prefix + "upper"].astype(np.float64), 1) + np.diag(np.exp(log_scale))
        weight = lower @ upper
        self.weight_t = np.ascontiguousarray(weight[np.ix_(order_out, order_in)].T, dtype=dtype)
        self.inverse_t = np.ascontiguousarray(np.linalg.inv(weight)[np.ix_(order_in, order_out)].T, dtype=dtype)
        self.bias = weights[prefix + "bias"][order_out].astype(dtype)
        self.log_det = dtype(log_scale.sum())

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | np.floating]:
        z = x @ self.weight_t
        z += self.bias
        return z, self.log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z - self.bias) @ self.inverse_t


class _Permutation:
    """Features stored in one order → another; bundles without mixing need it between couplings."""

    def __init__(self, order_in: np.ndarray, order_out: np.ndarray):
        self.take = np.argsort(order_in)[order_out]  # storage column of each feature of order_out
        self.back = np.argsort(self.take)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        return x[:, self.take], 0

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z[:, self.back]


class _Coupling:
    """`torch_flow.Coupling` on features stored conditioning first: z_C = x_C, z_T = τ(x_T; θ(x_C)),
    with x_C = x[:, :c] and x_T = x[:, c:], τ the config's registered coupling; with held levels,
    the conditioner reads them as one-hot inputs after x_C, by gathering the rows they set.

    The conditioner folds each bias into its matmul (a column of ones rides along the
    activations) and computes ReLU as h + |h| = 2·ReLU(h), halving the next weights to match:
    numpy's `maximum` and a broadcast bias add each cost about half a matmul here.
    """

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, config: FlowConfig, layer: int, dtype: type):
        self.config = config
        self.map = registry.coupling(config.coupling)
        self.c = len(config.split(layer)[0])
        self.linears = [
            (0.5 if j else 1.0) * np.vstack([weights[f"{prefix}{j}.weight"].T, weights[f"{prefix}{j}.bias"][None]]).astype(dtype)
            for j in range(config.depth + 1)
        ]  # each (inputs + 1, outputs): the bias is the last row
        # The first layer's rows for the held levels' one-hot inputs, gathered by level, not multiplied (`level_inputs`).
        levels = np.s_[self.c : self.c + level_inputs.width(config.held_levels)]
        self.level_weights, self.linears[0] = self.linears[0][levels], np.delete(self.linears[0], levels, axis=0)
        self.dtype = dtype

    def _conditioner(self, x_conditioning: np.ndarray, level_rows: np.ndarray | None) -> np.ndarray:
        h = np.empty((len(x_conditioning), self.c + 1), self.dtype)
        h[:, :-1], h[:, -1] = x_conditioning, 1
        for j, weight in enumerate(self.linears[:-1]):
            hidden = np.empty((len(h), weight.shape[1] + 1), self.dtype)
            hidden[:, -1] = 1
            np.matmul(h, weight, out=hidden[:, :-1])
            if j == 0 and level_rows is not None:
                hidden[:, :-1] += self.level_weights[level_rows].sum(axis=1)
            hidden += np.abs(hidden)  # 2·ReLU, and the ones become twos: the next weights are halved
            h = hidden
        return h @ self.linears[-1]

    def forward(self, x: np.ndarray, level_rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x[:, self.c:], log_slopes = self.map.forward_numpy(x[:, self.c:], self._conditioner(x[:, :self.c], level_rows), self.config)
        return x, log_slopes.sum(axis=1)

    def inverse(self, z: np.ndarray, level_rows: np.ndarray | None) -> np.ndarray:
        z[:, self.c:] = self.map.inverse_numpy(z[:, self.c:], self._conditioner(z[:, :self.c], level_rows), self.config)
        return z


class NumpyRealNVP:
    """Evaluate a RealNVP given its `FlowConfig` and weights (named as in `weight_shapes`).

    `front`, when given, is a fixed first step with float64 `forward(x) → (x', log-det)` and
    `inverse(x') → x`, whose outputs the weights were trained on (`encode.preprocess.FixedSteps`).
    """

    def __init__(self, config: FlowConfig, weights: dict[str, np.ndarray], dtype: type = np.float32, front=None):
        self.config = config
        self.front = front
        self.dtype = dtype
        self.base = registry.base(config.base)
        self.base_weights = {name: weights[name] for name in self.base.weight_shapes(config)}
        self.inverse_df = self.base.inverse_df(self.base_weights)  # 1/ν (float64) of a t base, else None
        self.steps: list[_Mixing | _Permutation | _Coupling] = []  # in data → latent order
        order = identity = np.arange(config.features)  # the feature each storage column holds
        for k in range(config.layers):
            target = np.concatenate(config.split(k))  # conditioning first, then transformed
            if config.mixing:
                self.steps.append(_Mixing(weights, f"mixings.{k}.", dtype, order, target))
            elif not np.array_equal(order, target):
                self.steps.append(_Permutation(order, target))
            order = target
            self.steps.append(_Coupling(weights, f"couplings.{k}.linears.", config, k, dtype))
        if not np.array_equal(order, identity):
            self.steps.append(_Permutation(order, identity))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data (N, D) → latent (N, D) and log|det ∂z/∂x| (N,)."""
        log_det = np.zeros(len(x), dtype=self.dtype)
        if self.front is not None:
            x, front_log_det = self.front.forward(x)
            log_det += front_log_det
        z = np.array(x, dtype=self.dtype)
        level_rows = self.level_rows(z)
        for step in self.steps:
            z, step_log_det = step.forward(z, level_rows) if isinstance(step, _Coupling) else step.forward(z)
            log_det += step_log_det
        return z, log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Latent (N, D) → data (N, D), in float64 with a front step, else the flow's dtype."""
        x = np.array(z, dtype=self.dtype)
        level_rows = self.level_rows(x)
        for step in reversed(self.steps):
            x = step.inverse(x, level_rows) if isinstance(step, _Coupling) else step.inverse(x)
        # float64 past a front step: the levels its inverse read are the ones decoding reads
        return x if self.front is None else self.front.inverse(x)

    def level_rows(self, x: np.ndarray) -> np.ndarray | None:
        """The held columns' levels as rows of the one-hot inputs (N, H) (`level_inputs.input_rows`),
        from features or latents (N, D) in the flow's dtype, whose held coordinates are the same;
        None without `held_levels`."""
        held_levels = self.config.held_levels
        if not held_levels:
            return None
        return level_inputs.input_rows(held_levels, level_inputs.levels_of(held_levels, x[:, list(self.config.held)]))

    def features(self, z: np.ndarray) -> np.ndarray:
        """Latent (N, D) → data (N, D) in float64, in row chunks over threads: the flow features
        that sampling decodes."""
        if not len(z):
            return np.empty(z.shape)
        return np.concatenate(map_rows(lambda first, stop: self.inverse(z[first:stop]), len(z))).astype(np.float64)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log p(x) per row (N,) as float64, in the units of x."""
        z, log_det = self.forward(x)
        log_base = self.base.log_prob_numpy(z.astype(np.float64), self.base_weights)
        log_p = log_base + log_det
        # A row so extreme that float32 overflows has, in the limit, density zero.
        return np.where(np.isnan(log_p), -np.inf, log_p)

    def sample_latent(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """`rows` draws (rows, D) from the base, in the flow's dtype."""
        return self.base.sample(rng, rows, self.config.features, self.base_weights).astype(self.dtype, copy=False)
