"""RealNVP inference in numpy: the same maps as `flows.RealNVP`, without importing torch.

Scoring and sampling are matmuls and elementwise maps over the bundle's weights, so they run
here and start in a fraction of a second. Tests prove this path equal to the torch one.
"""

from __future__ import annotations

import math

import numpy as np

from flowcli import mixture
from flowcli.architecture import INVERSE_DF_RATE, MIN_BIN, MIN_SLOPE, MIN_INVERSE_DF, SLOPE_OFFSET, FlowConfig


class _Mixing:
    """`flows.LinearMixing`: z = x Wᵀ + b, with W composed from its LU factors in float64 once.

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
    """`flows.Coupling` on features stored conditioning first: z_C = x_C, z_T = τ(x_T; θ(x_C)),
    with x_C = x[:, :c] and x_T = x[:, c:]. Subclasses give τ.

    The conditioner folds each bias into its matmul (a column of ones rides along the
    activations) and computes ReLU as h + |h| = 2·ReLU(h), halving the next weights to match:
    numpy's `maximum` and a broadcast bias add each cost about half a matmul here.
    """

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, config: FlowConfig, layer: int, dtype: type):
        self.config = config
        self.c = len(config.split(layer)[0])
        self.linears = [
            (0.5 if j else 1.0) * np.vstack([weights[f"{prefix}{j}.weight"].T, weights[f"{prefix}{j}.bias"][None]]).astype(dtype)
            for j in range(config.depth + 1)
        ]  # each (inputs + 1, outputs): the bias is the last row
        self.dtype = dtype

    def _conditioner(self, x_conditioning: np.ndarray) -> np.ndarray:
        h = np.empty((len(x_conditioning), self.c + 1), self.dtype)
        h[:, :-1], h[:, -1] = x_conditioning, 1
        for weight in self.linears[:-1]:
            hidden = np.empty((len(h), weight.shape[1] + 1), self.dtype)
            hidden[:, -1] = 1
            np.matmul(h, weight, out=hidden[:, :-1])
            hidden += np.abs(hidden)  # 2·ReLU, and the ones become twos: the next weights are halved
            h = hidden
        return h @ self.linears[-1]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x[:, self.c:], log_det = self.elementwise(x[:, self.c:], self._conditioner(x[:, :self.c]))
        return x, log_det

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z[:, self.c:] = self.elementwise_inverse(z[:, self.c:], self._conditioner(z[:, :self.c]))
        return z


class _AffineCoupling(_Coupling):
    def _scale_shift(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = out.shape[1] // 2
        bound = self.dtype(self.config.scale_bound)
        return bound * np.tanh(out[:, :half] / bound), out[:, half:]

    def elementwise(self, x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, t = self._scale_shift(out)
        return x * np.exp(s) + t, s.sum(axis=1)

    def elementwise_inverse(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        s, t = self._scale_shift(out)
        return (z - t) * np.exp(-s)


class _SplineCoupling(_Coupling):
    def elementwise(self, x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, log_det = rational_quadratic(x, out.reshape(len(x), x.shape[1], -1), self.config.tail_bound)
        return y, log_det.sum(axis=1)

    def elementwise_inverse(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        return rational_quadratic(z, out.reshape(len(z), z.shape[1], -1), self.config.tail_bound, inverse=True)[0]


def rational_quadratic(x: np.ndarray, params: np.ndarray, bound: float, inverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`flows.rational_quadratic` in numpy: the spline (or its inverse) at x (N, T) with params
    (N, T, 3K−1), and log|dτ/dx| (N, T) of the forward map."""
    bins = (params.shape[-1] + 1) // 3
    x_knots, y_knots = _knots(params[..., :bins], bound), _knots(params[..., bins : 2 * bins], bound)
    ones = np.ones_like(params[..., :1])
    raw = params[..., 2 * bins :] + SLOPE_OFFSET
    slopes = np.concatenate([ones, MIN_SLOPE + np.logaddexp(0, raw), ones], axis=-1)  # softplus
    inside = (x > -bound) & (x < bound)
    x_in = np.clip(x, -bound, bound)
    interior = (y_knots if inverse else x_knots)[..., 1:-1]
    k = (interior < x_in[..., None]).sum(axis=-1, keepdims=True)  # each value's bin, as torch.searchsorted finds it

    def at_bin(table: np.ndarray) -> np.ndarray:
        return np.take_along_axis(table, k, axis=-1)[..., 0]

    x0, width = at_bin(x_knots[..., :-1]), at_bin(np.diff(x_knots, axis=-1))
    y0, height = at_bin(y_knots[..., :-1]), at_bin(np.diff(y_knots, axis=-1))
    d0, d1 = at_bin(slopes[..., :-1]), at_bin(slopes[..., 1:])
    delta = height / width
    with np.errstate(divide="ignore", invalid="ignore"):
        if inverse:
            dy = x_in - y0
            a = height * (delta - d0) + dy * (d0 + d1 - 2 * delta)
            b = height * d0 - dy * (d0 + d1 - 2 * delta)
            c = -delta * dy
            theta = np.clip(2 * c / (-b - np.sqrt(np.maximum(b**2 - 4 * a * c, 0))), 0, 1)
        else:
            theta = (x_in - x0) / width
        spread = theta * (1 - theta)
        denominator = delta + (d0 + d1 - 2 * delta) * spread
        value = x0 + theta * width if inverse else y0 + height * (delta * theta**2 + d0 * spread) / denominator
        log_slope = (2 * np.log(delta) + np.log(d1 * theta**2 + 2 * delta * spread + d0 * (1 - theta) ** 2)
                     - 2 * np.log(denominator))
    return np.where(inside, value, x), np.where(inside, log_slope, 0).astype(x.dtype)


def _knots(raw: np.ndarray, bound: float) -> np.ndarray:
    """`flows._inner_knots` with the ends ±bound: K + 1 increasing knots from -bound to bound."""
    shifted = np.exp(raw - raw.max(axis=-1, keepdims=True))
    share = MIN_BIN + (1 - MIN_BIN * raw.shape[-1]) * shifted / shifted.sum(axis=-1, keepdims=True)
    inner = 2 * bound * np.cumsum(share, axis=-1)[..., :-1] - bound
    edge = np.full_like(inner[..., :1], bound)
    return np.concatenate([-edge, inner, edge], axis=-1)


class NumpyRealNVP:
    """Evaluate a RealNVP given its `FlowConfig` and weights (named as in `weight_shapes`)."""

    def __init__(self, config: FlowConfig, weights: dict[str, np.ndarray], dtype: type = np.float32):
        self.config = config
        self.dtype = dtype
        self.inverse_df = None  # a normal or mixture base; a t base has 1/ν in float64: (D,) per feature, (1,) multivariate
        if config.degrees_of_freedom:
            self.inverse_df = 0.5 + 0.5 * np.tanh(0.5 * INVERSE_DF_RATE * weights["inverse_df"].astype(np.float64)) + MIN_INVERSE_DF  # a sigmoid that cannot overflow
            d = config.features if config.base == "multivariate-t" else 1  # the dimension of each t
            self._t_constant = sum(math.lgamma((v + d) / 2) - math.lgamma(v / 2) - 0.5 * d * math.log(v * math.pi)
                                   for v in 1 / self.inverse_df)
        self.mixture = {name: value for name, value in weights.items() if name.startswith("mixture_")}  # empty unless a mixture base
        self.steps: list[_Mixing | _Permutation | _Coupling] = []  # in data → latent order
        order = identity = np.arange(config.features)  # the feature each storage column holds
        for k in range(config.layers):
            target = np.concatenate(config.split(k))  # conditioning first, then transformed
            if config.mixing:
                self.steps.append(_Mixing(weights, f"mixings.{k}.", dtype, order, target))
            elif not np.array_equal(order, target):
                self.steps.append(_Permutation(order, target))
            order = target
            kind = _AffineCoupling if config.coupling == "affine" else _SplineCoupling
            self.steps.append(kind(weights, f"couplings.{k}.linears.", config, k, dtype))
        if not np.array_equal(order, identity):
            self.steps.append(_Permutation(order, identity))

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
        if self.mixture:
            log_base = mixture.log_pdf(z, self.mixture)
        elif self.inverse_df is None:
            log_base = -0.5 * np.einsum("ij,ij->i", z, z) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        else:  # `flows.t_log_pdf`: K independent d-dimensional t's
            squares = z * z if self.config.base == "student" else np.einsum("ij,ij->i", z, z)[:, None]
            dimension = z.shape[1] // squares.shape[1]
            power = (1 + dimension * self.inverse_df) / (2 * self.inverse_df)  # (ν + d) / 2
            log_base = self._t_constant - np.log1p(squares * self.inverse_df) @ power
        log_p = log_base + log_det
        # A row so extreme that float32 overflows has, in the limit, density zero.
        return np.where(np.isnan(log_p), -np.inf, log_p)

    def sample_latent(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """`rows` draws (rows, D) from the base, in the flow's dtype."""
        if self.mixture:
            return mixture.sample(rng, rows, self.mixture).astype(self.dtype)
        if self.inverse_df is None:
            # Drawn in float32, as flowcli always has: a seed gives the samples it gave before format 4.
            return rng.standard_normal((rows, self.config.features), dtype=np.float32).astype(self.dtype, copy=False)
        if self.config.base == "student":
            return rng.standard_t(1 / self.inverse_df, (rows, self.config.features)).astype(self.dtype)
        df = 1 / self.inverse_df[0]  # a normal draw scaled per row by √(ν/χ²_ν)
        scale = np.sqrt(df / rng.chisquare(df, rows))
        return (rng.standard_normal((rows, self.config.features)) * scale[:, None]).astype(self.dtype)
