"""The elementwise maps τ of coupling layers, each with its torch form (training) and its numpy
form (scoring and sampling) side by side, registered by name in `registry`.

A coupling keeps its conditioning features and maps each transformed one by τ(x; θ), with θ the
conditioner MLP's output, `outputs_per_feature` numbers per transformed feature. Both forms
return z and the log-slopes log|τ'(x)| (N, T) of the forward map. The torch forms import torch
when called, so the numpy path never loads it. Tests run every registered map through both.
"""

from __future__ import annotations

import functools
import math

import numpy as np

MIN_BIN = 1e-3  # a spline's smallest bin width or height, as a share of its span 2B
MIN_SLOPE = 1e-3  # a spline's smallest slope at a knot
SLOPE_OFFSET = math.log(math.expm1(1 - MIN_SLOPE))  # added to raw slopes: a raw 0 gives slope 1, the identity


class ElementwiseMap:
    """τ and its inverse, given θ (N, P·T) for x (N, T). Subclasses give all six methods."""

    name: str

    def outputs_per_feature(self, config) -> int:
        raise NotImplementedError

    def describe(self, architecture: dict) -> str:
        """τ's settings for `inspect`, from a manifest's architecture."""
        raise NotImplementedError


class Affine(ElementwiseMap):
    """τ(x) = x · exp(s) + t (RealNVP), with |s| soft-bounded by `scale_bound`: θ is (s, t)."""

    name = "affine"

    def outputs_per_feature(self, config) -> int:
        return 2

    def describe(self, architecture: dict) -> str:
        return f"log-scale bound ±{architecture['scale_bound']}"

    def forward_torch(self, x, out, config):
        import torch

        s, t = self._scale_shift_torch(out, config.scale_bound)
        return torch.addcmul(t, x, torch.exp(s)), s

    def inverse_torch(self, z, out, config):
        s, t = self._scale_shift_torch(out, config.scale_bound)
        return (z - t) * (-s).exp()

    def forward_numpy(self, x, out, config):
        s, t = self._scale_shift_numpy(out, x.dtype.type(config.scale_bound))
        return x * np.exp(s) + t, s

    def inverse_numpy(self, z, out, config):
        s, t = self._scale_shift_numpy(out, z.dtype.type(config.scale_bound))
        return (z - t) * np.exp(-s)

    @staticmethod
    def _scale_shift_torch(out, bound: float):
        """Log-scale s and shift t, each (N, T), from the conditioner's output (N, 2T)."""
        s, t = out.chunk(2, dim=-1)
        return bound * (s / bound).tanh(), t

    @staticmethod
    def _scale_shift_numpy(out: np.ndarray, bound: np.floating) -> tuple[np.ndarray, np.ndarray]:
        half = out.shape[1] // 2
        return bound * np.tanh(out[:, :half] / bound), out[:, half:]


class RationalQuadraticSpline(ElementwiseMap):
    """τ a monotone rational-quadratic spline of `bins` bins on [-B, B] (Durkan et al. 2019), the
    identity outside: θ is K raw widths, K raw heights and K−1 raw interior slopes per feature."""

    name = "spline"

    def outputs_per_feature(self, config) -> int:
        return 3 * config.bins - 1

    def describe(self, architecture: dict) -> str:
        return f"spline of {architecture['bins']} bins on ±{architecture['tail_bound']}"

    def forward_torch(self, x, out, config):
        return rational_quadratic_torch(x, out.unflatten(-1, (x.shape[1], -1)), config.tail_bound)

    def inverse_torch(self, z, out, config):
        return rational_quadratic_torch(z, out.unflatten(-1, (z.shape[1], -1)), config.tail_bound, inverse=True)[0]

    def forward_numpy(self, x, out, config):
        return rational_quadratic_numpy(x, out.reshape(len(x), x.shape[1], -1), config.tail_bound)

    def inverse_numpy(self, z, out, config):
        return rational_quadratic_numpy(z, out.reshape(len(z), z.shape[1], -1), config.tail_bound, inverse=True, log_slopes=False)[0]


def rational_quadratic_torch(x, params, bound: float, inverse: bool = False):
    """The spline (or its inverse) at x (N, T), with params (N, T, 3K−1): K raw widths, K raw
    heights, K−1 raw interior slopes. Returns the value and log|dτ/dx| (N, T) (of the forward map).

    Written in few operations on whole tables, as at a batch of 256 each one costs about as much
    as its arithmetic: one softmax and one cumsum give both rows of knots, and one gather reads
    the knots and slopes at both ends of each value's bin."""
    import torch
    from torch import nn

    bins = (params.shape[-1] + 1) // 3
    raw_shares, raw_slopes = params.split([2 * bins, bins - 1], dim=-1)
    inner_knots = _inner_knots_torch(raw_shares.unflatten(-1, (2, bins)), bound)  # (N, T, 2, K−1): x, then y
    inner_slopes = MIN_SLOPE + nn.functional.softplus(raw_slopes + SLOPE_OFFSET)
    # Rows x knots, y knots, slopes (N, T, 3, K+1): the inner columns, padded, plus the constant ends.
    table = nn.functional.pad(torch.cat([inner_knots, inner_slopes[..., None, :]], dim=-2), (1, 1))
    table = table + _ends_torch(bins, bound, x.dtype, x.device)
    inside = (x > -bound) & (x < bound)
    x_in = x.clamp(-bound, bound)
    k = torch.searchsorted(inner_knots[..., int(inverse), :].contiguous(), x_in[..., None].contiguous())  # (N, T, 1)
    ends_of_bin = table.gather(-1, torch.cat([k, k + 1], dim=-1)[..., None, :].expand(-1, -1, 3, 2))
    x0, x1, y0, y1, d0, d1 = ends_of_bin.flatten(-2).unbind(-1)
    value, log_slope = _within_bin(torch, x_in, x0, x1 - x0, y0, y1 - y0, d0, d1, inverse)
    return torch.where(inside, value, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))


@functools.lru_cache(maxsize=16)
def _ends_torch(bins: int, bound: float, dtype, device):
    """The spline table's first and last columns (3, K+1), zero between: knots ±bound and slopes 1,
    where the spline joins the identity tails. Built once, not in every training step."""
    import torch

    ends = torch.zeros(3, bins + 1, dtype=dtype, device=device)
    ends[:2, 0], ends[:2, -1], ends[2, 0], ends[2, -1] = -bound, bound, 1, 1
    return ends


def _inner_knots_torch(raw, bound: float):
    """The K − 1 increasing knots (…, K−1) strictly between -bound and bound from K raw bin shares,
    each bin at least MIN_BIN of the span. The softmax is spelled out: torch's is several times
    slower on a last dimension of 8."""
    import torch

    shifted = torch.exp(raw - raw.detach().amax(dim=-1, keepdim=True))  # the shift cancels, so its gradient is 0
    share = MIN_BIN + (1 - MIN_BIN * raw.shape[-1]) * shifted / shifted.sum(dim=-1, keepdim=True)
    return 2 * bound * torch.cumsum(share[..., :-1], dim=-1) - bound


def rational_quadratic_numpy(x: np.ndarray, params: np.ndarray, bound: float, inverse: bool = False,
                             log_slopes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """`rational_quadratic_torch` in numpy: the spline (or its inverse) at x (N, T) with params
    (N, T, 3K−1), and log|dτ/dx| (N, T) of the forward map, or None without `log_slopes` (sampling
    needs none).

    Only the knots are built whole; each value's bin ends and the softplus of its two slopes are
    gathered per value, not computed for every bin: sampling a spline flow spent most of its
    time on tables of K slopes and widths it then read two of."""
    bins = (params.shape[-1] + 1) // 3
    x_knots, y_knots = _knots_numpy(params[..., :bins], bound), _knots_numpy(params[..., bins : 2 * bins], bound)
    inside = (x > -bound) & (x < bound)
    x_in = np.clip(x, -bound, bound)
    interior = (y_knots if inverse else x_knots)[..., 1:-1]
    k = (interior < x_in[..., None]).sum(axis=-1, keepdims=True)  # each value's bin, as torch.searchsorted finds it
    ends = np.concatenate([k, k + 1], axis=-1)  # (N, T, 2): the knots at both ends of the bin

    def at_ends(table: np.ndarray) -> np.ndarray:
        return np.moveaxis(np.take_along_axis(table, ends, axis=-1), -1, 0)  # (2, N, T)

    (x0, x1), (y0, y1) = at_ends(x_knots), at_ends(y_knots)
    # Interior knot j (1 to K−1) has raw slope params[..., 2K − 1 + j]; the end knots have slope 1.
    raw = np.take_along_axis(params[..., 2 * bins - 1 :], np.minimum(ends, bins - 1), axis=-1)
    slopes = np.where((ends == 0) | (ends == bins), 1, MIN_SLOPE + np.logaddexp(0, raw + SLOPE_OFFSET))
    d0, d1 = slopes[..., 0], slopes[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        value, log_slope = _within_bin(np, x_in, x0, x1 - x0, y0, y1 - y0, d0, d1, inverse, log_slopes)
    return np.where(inside, value, x), (np.where(inside, log_slope, 0).astype(x.dtype) if log_slopes else None)


def _within_bin(xp, x_in, x0, width, y0, height, d0, d1, inverse: bool, log_slopes: bool = True):
    """The spline's value and log-slope (N, T) inside each value's bin, for both forms: `xp` is
    torch or numpy, and the arrays are the bin's left knot x0, its width and height, its left
    y0, and the slopes d0, d1 at its ends. The inverse solves the quadratic for the position θ.
    Without `log_slopes`, the log-slope is None."""
    delta = height / width
    if inverse:
        dy = x_in - y0
        a = height * (delta - d0) + dy * (d0 + d1 - 2 * delta)
        b = height * d0 - dy * (d0 + d1 - 2 * delta)
        c = -delta * dy
        theta = (2 * c / (-b - xp.sqrt((b**2 - 4 * a * c).clip(0)))).clip(0, 1)
    else:
        theta = (x_in - x0) / width
    spread = theta * (1 - theta)
    denominator = delta + (d0 + d1 - 2 * delta) * spread
    value = x0 + theta * width if inverse else y0 + height * (delta * theta**2 + d0 * spread) / denominator
    if not log_slopes:
        return value, None
    log_slope = (2 * xp.log(delta) + xp.log(d1 * theta**2 + 2 * delta * spread + d0 * (1 - theta) ** 2)
                 - 2 * xp.log(denominator))
    return value, log_slope


def _knots_numpy(raw: np.ndarray, bound: float) -> np.ndarray:
    """`_inner_knots_torch` with the ends ±bound: K + 1 increasing knots from -bound to bound."""
    shifted = np.exp(raw - raw.max(axis=-1, keepdims=True))
    share = MIN_BIN + (1 - MIN_BIN * raw.shape[-1]) * shifted / shifted.sum(axis=-1, keepdims=True)
    inner = 2 * bound * np.cumsum(share, axis=-1)[..., :-1] - bound
    edge = np.full_like(inner[..., :1], bound)
    return np.concatenate([-edge, inner, edge], axis=-1)
