"""A numeric column's elementwise maps: log and logit with their log-Jacobians, and the rounding
that makes samples look like the values at fit (to their decimals, their grid, or the nearest of
their few values).

A map may have knees: outside [low knee, high knee] it continues as its tangent line, so that
every finite value maps to a finite t with a finite slope, and a value just past the range seen
at fit scores close to the range's edge (a refund of 0 in a column that was positive at fit).
"""

from __future__ import annotations

import math

import numpy as np

LOGIT_MARGIN = 1e-3  # [0, 1] maps into (−margin, 1 + margin) before the logit, so 0 and 1 stay finite


def nearest_within(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each x moved to the nearest of the increasing `values` when that is at most their median
    gap away: the grid is kept where the values are dense, and sparse tails stay continuous."""
    if len(values) == 1:
        return np.full_like(x, values[0])
    right = np.clip(np.searchsorted(values, x), 1, len(values) - 1)
    left, gap = right - 1, float(np.median(np.diff(values)))
    nearest = np.where(np.abs(x - values[left]) <= np.abs(values[right] - x), values[left], values[right])
    return np.where(np.abs(nearest - x) <= gap, nearest, x)


def decimal_places(x: np.ndarray, most: int = 6) -> int | None:
    """The fewest decimal places (up to `most`) that write every value of x exactly, or None."""
    for places in range(most + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # near float's limit scaling overflows: not decimal
            scaled = x * 10.0**places
            residue = np.abs(scaled - np.round(scaled))
        # Within float rounding error of a whole number of the last place (1e-7 is not 0 places).
        if np.all(residue <= 16 * np.finfo(float).eps * np.maximum(1.0, np.abs(scaled))):
            return places
    return None


def grid_step(x: np.ndarray, decimals: int | None) -> float | None:
    """The step of the grid the values x (N,) sit on, from their lowest: the greatest common
    step of their decimals (whole dollars: 1, half units: 0.5, tens: 10); None when the values
    have no decimals or too many digits to count exactly."""
    if decimals is None or not len(x):
        return None
    scale = 10.0**decimals
    with np.errstate(over="ignore", invalid="ignore"):
        counts = np.round((x - x.min()) * scale)
    if not np.all(np.isfinite(counts)) or counts.max() >= 2**53:
        return None
    step = int(np.gcd.reduce(counts.astype(np.int64)))
    return (step or 1) / scale


MAX_GRID_CELLS = 100_000  # a grid finer than the values' span over this many cells is no grid


def repeated_cells(distinct: np.ndarray) -> float | None:
    """The width of the cells that few repeated, increasing values (K,) are dequantized over: the
    step of an evenly spaced grid they all sit on, to within float rounding (the counts behind a
    standardized column, (k − μ)/σ, have no decimals to tell their step; Euclid's algorithm on the
    gaps, with a tolerance), unless it would split the span into more than MAX_GRID_CELLS cells;
    else, off any even grid (a standardized column whose one value holds most rows), their
    smallest gap beyond that tolerance, the widest cells they fill without overlapping. Without
    cells the flow puts a spike on a value repeated that often, hundreds of nats high. None for
    fewer than two values."""
    if len(distinct) < 2:
        return None
    gaps, span = np.diff(distinct), float(distinct[-1] - distinct[0])
    step, tolerance = float(gaps.min()), 1e-7 * span
    while step > span / MAX_GRID_CELLS:
        remainders = np.abs(gaps - np.round(gaps / step) * step)
        off = remainders[remainders > tolerance]
        if not len(off):
            return step
        step = float(off.min())
    apart = gaps[gaps > tolerance]
    return float(apart.min()) if len(apart) else None


def forward_transform(
    transform: str, v: np.ndarray, knees: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[np.ndarray, np.ndarray]:
    """t = T(v) and log|T'(v)|, with T linear beyond its knees."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t, log_slope = _forward(transform, v)
    for knee, beyond in ((knees[0], v < knees[0]), (knees[1], v > knees[1])):
        if math.isfinite(knee) and np.any(beyond):
            t_knee, log_slope_knee = _forward(transform, np.float64(knee))
            t = np.where(beyond, t_knee + math.exp(log_slope_knee) * (v - knee), t)
            log_slope = np.where(beyond, log_slope_knee, log_slope)
    return t, log_slope


def likeliest_transform(v: np.ndarray, candidates: tuple[str, ...]) -> str:
    """Of `candidates`, the map under which a normal fit to T(v) gives the values v (N,) the highest
    mean log-density in their own units, log φ(T(v)) + log|T'(v)| (Box and Cox's choice of a
    power by likelihood, here between the identity, the log and the logit). The flow starts from
    a normal base, so the map that leaves it the least to bend is taken: a log for Sachs'
    cytometry readings on the density bench, none for galaxy magnitudes, where a log for every
    positive column had cost 0.2 nats a row (docs/benchmarks/density.md)."""
    best, best_density = candidates[0], -math.inf
    for transform in candidates:
        t, log_slope = forward_transform(transform, v)
        scale = float(np.max(np.abs(t))) if np.all(np.isfinite(t)) else 0.0
        spread = float(np.std(t / scale)) * scale if scale else 0.0  # divided first: no underflow near 1e-170
        if spread > 0:
            density = -0.5 * math.log(2 * math.pi * math.e) - math.log(spread) + float(np.mean(log_slope))
            if density > best_density:
                best, best_density = transform, density
    return best


def inverse_transform(transform: str, t: np.ndarray, knees: tuple[float, float] = (-math.inf, math.inf)) -> np.ndarray:
    """v = T⁻¹(t), with T linear beyond its knees."""
    v = _inverse(transform, t)
    for knee, side in ((knees[0], -1), (knees[1], 1)):
        if math.isfinite(knee):
            t_knee, log_slope_knee = _forward(transform, np.float64(knee))
            v = np.where(side * (t - t_knee) > 0, knee + (t - t_knee) * math.exp(-log_slope_knee), v)
    return v


def _forward(transform: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t = T(v) and log|T'(v)|."""
    if transform == "log":
        t = np.log(v)
        return t, -t
    if transform == "logit":
        y = (v + LOGIT_MARGIN) / (1 + 2 * LOGIT_MARGIN)
        t = np.log(y) - np.log1p(-y)
        return t, -np.log(y) - np.log1p(-y) - math.log(1 + 2 * LOGIT_MARGIN)
    return v, np.zeros_like(v)


def _inverse(transform: str, t: np.ndarray) -> np.ndarray:
    if transform == "log":
        return np.exp(np.minimum(t, 700.0))
    if transform == "logit":
        return (1 + 2 * LOGIT_MARGIN) / (1 + np.exp(-t)) - LOGIT_MARGIN
    return t
