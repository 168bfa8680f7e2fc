"""Atoms: grid cells that hold far more rows than the column's density around them (a wage of
exactly 712.25 in 3 % of rows, 40 hours a week, weights reported in whole pounds), widened
before the flow sees them.

A flow's density is smooth, so a cell one cent wide that holds 3 % of the rows is a spike it
cannot learn: its samples spread the spike over the neighbouring cents, and a classifier tells
them from the real rows by that value alone. Here each such cell of the mapped value t is
stretched by a factor f, a monotone piecewise-linear map t → s with slope f on the cell and 1
elsewhere, so that in s the cell is about as dense as its surroundings. The flow models s; the
likelihood gains log f inside the cell (an exact change of variables), and samples that land
in the widened cell map back into it, so the spike comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_ROWS = 20  # a cell needs at least so many rows to be an atom
MIN_STRETCH = 4.0  # ... and to be this much denser than its surroundings
MAX_WIDTH = 4.0  # windows: the widest an atom grows
NEIGHBOURS = 1.5  # cell widths: the least a window reaches on each side
MAX_ATOMS = 256  # the densest cells first


@dataclass(frozen=True)
class Atoms:
    """Cells [low, high) of the mapped values t, increasing and disjoint, each stretched by its
    factor (> 1)."""

    lows: tuple[float, ...]
    highs: tuple[float, ...]
    factors: tuple[float, ...]

    @classmethod
    def fit(cls, centres: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> Atoms | None:
        """Atoms of a column from each observed row's cell: its centre, low and high edge, all in
        t (N,). A cell is widened to the width that its rows fill at the density of the other
        rows within its window, so that in s the flow sees no bump there; at most MAX_WIDTH
        windows (an atom with no rows around it). The window reaches a bandwidth, and at least
        NEIGHBOURS cell widths, each side. It is an atom when it holds
        MIN_ROWS rows or more and that widens it MIN_STRETCH times or more: it holds that many
        times the rows the density around it would put in it. The bandwidth is Silverman's,
        0.9 σ N^(−1/5). None when there are none."""
        n = len(centres)
        if n < MIN_ROWS:
            return None
        values, first, counts = np.unique(centres, return_index=True, return_counts=True)
        candidates = counts >= MIN_ROWS
        if not candidates.any():
            return None
        bandwidth = 0.9 * float(np.std(centres)) * n ** -0.2
        if not bandwidth > 0:
            return None
        widths = highs[first] - lows[first]
        # A coarse cell (a year of schooling) is wider than the bandwidth, so its window reaches
        # half way into the cells beside it: their rows are the surroundings it is judged by. At
        # the column's end the window reaches past the range, where no rows are, so an edge cell
        # is judged against one neighbour's rows spread over both sides (18 years, the most seen).
        reach = np.maximum(bandwidth, NEIGHBOURS * widths)
        cumulative = np.concatenate([[0], np.cumsum(counts)])
        near = (cumulative[np.searchsorted(values, values + reach, side="right")]
                - cumulative[np.searchsorted(values, values - reach, side="left")])
        around = (near - counts) / ((2 * reach - widths) * n)  # the other rows' density, per unit of t
        with np.errstate(divide="ignore"):
            widened = np.minimum(counts / n / around, MAX_WIDTH * reach)
        with np.errstate(divide="ignore", invalid="ignore"):
            factors = widened / widths
        atoms = np.flatnonzero(candidates & (factors >= MIN_STRETCH) & (widths > 0))
        if not len(atoms):
            return None
        atoms = np.sort(atoms[np.argsort(-counts[atoms], kind="stable")[:MAX_ATOMS]])
        low, high = lows[first][atoms], highs[first][atoms]
        high = np.minimum(high, np.append(low[1:], np.inf))  # neighbouring cells' shared edge, mapped twice, may differ in its last bit
        return cls(tuple(low.tolist()), tuple(high.tolist()), tuple(factors[atoms].tolist()))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lows, widths, factors, the stretch added by all atoms before each) as arrays (K,)."""
        lows, highs, factors = (np.asarray(v, dtype=np.float64) for v in (self.lows, self.highs, self.factors))
        widths = highs - lows
        before = np.concatenate([[0.0], np.cumsum((factors - 1) * widths)[:-1]])
        return lows, widths, factors, before

    def forward(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s (N,) for t (N,), and log ds/dt (N,): log f inside an atom, 0 elsewhere."""
        lows, widths, factors, before = self._arrays()
        k = np.searchsorted(lows, t, side="right") - 1
        kk = np.maximum(k, 0)
        into = np.clip(t - lows[kk], 0.0, widths[kk])
        s = np.where(k >= 0, t + before[kk] + (factors[kk] - 1) * into, t)
        inside = (k >= 0) & (t - lows[kk] < widths[kk])
        return s, np.where(inside, np.log(factors[kk]), 0.0)

    def inverse(self, s: np.ndarray) -> np.ndarray:
        """t (N,) for s (N,)."""
        lows, widths, factors, before = self._arrays()
        starts = lows + before  # each atom's low edge in s
        k = np.searchsorted(starts, s, side="right") - 1
        kk = np.maximum(k, 0)
        into = s - starts[kk]
        stretched = factors[kk] * widths[kk]
        t = np.where(into < stretched, lows[kk] + into / factors[kk], s - before[kk] - stretched + widths[kk])
        return np.where(k >= 0, t, s)

    def to_json(self) -> list[list[float]]:
        return [[low, high, factor] for low, high, factor in zip(self.lows, self.highs, self.factors)]

    @classmethod
    def from_json(cls, data: list, name: str) -> Atoms:
        """Atoms from a manifest, checked: at most MAX_ATOMS finite cells, increasing and
        disjoint, each of positive width and a factor above 1."""
        cells = np.asarray(data, dtype=np.float64).reshape(-1, 3) if data else np.empty((0, 3))
        lows, highs, factors = cells.T
        if not (0 < len(cells) <= MAX_ATOMS and np.all(np.isfinite(cells)) and np.all(highs > lows)
                and np.all(lows[1:] >= highs[:-1]) and np.all(factors > 1)):
            raise ValueError(f"column {name!r} has invalid atoms")
        return cls(tuple(lows.tolist()), tuple(highs.tolist()), tuple(factors.tolist()))
