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
MIN_STRETCH = 1.5  # ... to be this much denser than its surroundings
SIGNIFICANCE = 1e-3  # ... and to be so dense by chance this rarely (Poisson), over all the column's candidate cells
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
        t (N,). A cell is an atom when it holds MIN_ROWS rows or more, MIN_STRETCH times or more
        the rows that the density of the other rows within its window would put in it, and more
        than chance allows (a Poisson tail below SIGNIFICANCE, split over the candidate cells).
        Each atom is widened to the width its rows fill at the density of the cells around it that
        are not atoms, so that in s the flow sees no bump there; at most MAX_WIDTH windows (an atom
        with no rows around it). The window reaches a bandwidth, Silverman's 0.9 σ N^(−1/5), and at
        least NEIGHBOURS cell widths, each side. None when there are none."""
        n = len(centres)
        if n < MIN_ROWS:
            return None
        values, first, counts = np.unique(centres, return_index=True, return_counts=True)
        candidates = counts >= MIN_ROWS
        bandwidth = 0.9 * float(np.std(centres)) * n ** -0.2
        if not candidates.any() or not bandwidth > 0:
            return None
        from scipy.special import gammainc  # fitting imports torch anyway

        widths = highs[first] - lows[first]
        # A coarse cell (a year of schooling) is wider than the bandwidth, so its window reaches
        # half way into the cells beside it: their rows are the surroundings it is judged by. At
        # the column's end the window reaches past the range, where no rows are, so an edge cell
        # is judged against one neighbour's rows spread over both sides (18 years, the most seen).
        reach = np.maximum(bandwidth, NEIGHBOURS * widths)
        left, right = np.searchsorted(values, values - reach, side="left"), np.searchsorted(values, values + reach, side="right")

        def in_window(per_cell: np.ndarray) -> np.ndarray:
            cumulative = np.concatenate([[0.0], np.cumsum(per_cell)])
            return cumulative[right] - cumulative[left]

        def density_around(atoms: np.ndarray) -> np.ndarray:
            """Per cell, rows per unit of t (a share of N) of the other cells in its window that
            are not `atoms` (a mask), over the length those cells take."""
            kept = np.where(atoms, 0.0, counts)
            rows = in_window(kept) - kept
            length = 2 * reach - in_window(np.where(atoms, widths, 0.0)) - np.where(atoms, 0.0, widths)
            return rows / (np.maximum(length, widths) * n)

        def stretch(density: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.minimum(counts / n / density, MAX_WIDTH * reach) / widths

        around = density_around(np.zeros(len(values), bool))
        factors = stretch(around)
        chance = gammainc(counts, around * n * widths)  # P(Poisson(the rows expected) >= the rows seen)
        atoms = np.flatnonzero(candidates & (factors >= MIN_STRETCH) & (widths > 0)
                               & (chance < SIGNIFICANCE / candidates.sum()))
        if not len(atoms):
            return None
        atoms = np.sort(atoms[np.argsort(-counts[atoms], kind="stable")[:MAX_ATOMS]])
        # Atoms side by side (a hundred weekly wages, heaped years of schooling) would count each
        # other as surroundings, though in s each is spread out: so each is judged again against
        # the cells around it that are not atoms.
        mask = np.zeros(len(values), bool)
        mask[atoms] = True
        factors = np.maximum(factors, stretch(density_around(mask)))
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
