"""The levels of held features, read by every coupling as one-hot inputs (`FlowConfig.held_levels`).

A held feature is a category's level slice of a standard normal (moved to its slice given its
parents' levels), and it passes to the latent unchanged (`FlowConfig.held`). A coupling's MLP
that reads only the coordinate must carve each level's slice out of it, a sharp step that the
few rows of a rare level teach slowly: on the conditional benchmark (`bench/conditional.py`),
a flow fitted to condition on CPS1988's ethnicity and region missed the mean of its 0.7 % pair's
rows by 0.218 standard deviations without level inputs (at b2f900f) and by 0.121 with them (at
d4178fc). Given each held column's level as a one-hot input as well, the first layer holds
weights for each level, which the rows of that level train directly. The levels are a function
of the held coordinates alone, the same in the data and the latent, so each coupling stays
invertible and its log-determinant is unchanged.

The level of a held coordinate g is where Φ(g) falls among its column's cumulative shares (a
linked column's, those given its parents' levels), exactly as decoding finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CELLS = 1_000_000  # cumulative shares over all held columns, at most (a manifest may be forged)


@dataclass(frozen=True)
class HeldLevels:
    """One held column's level slices: its parents' positions among the held features (one or
    two, or none), and its K − 1 cumulative shares for each combination of their levels (R, K − 1),
    row j1 · P2 + j2 for levels j1, j2 of the first and second parent."""

    parents: tuple[int, ...]
    cumulative: tuple[tuple[float, ...], ...]

    @property
    def size(self) -> int:
        """K, the column's levels: the width of its one-hot input."""
        return len(self.cumulative[0]) + 1

    @classmethod
    def from_json(cls, data: dict) -> HeldLevels:
        return cls(tuple(data["parents"]), tuple(tuple(row) for row in data["cumulative"]))


def width(held_levels: Sequence[HeldLevels]) -> int:
    """The one-hot inputs of every coupling: each held column's levels, summed."""
    return sum(column.size for column in held_levels)


def parents_first(held_levels: Sequence[HeldLevels]) -> list[int]:
    """The held columns' positions in an order with every parent before its children; a
    ValueError where the parents form a cycle."""
    order: list[int] = []
    while len(order) < len(held_levels):
        ready = [j for j, column in enumerate(held_levels) if j not in order and set(column.parents) <= set(order)]
        if not ready:
            raise ValueError("the held columns' parents form a cycle")
        order += ready
    return order


def valid(held_levels: tuple, held: tuple[int, ...]) -> bool:
    """Whether `held_levels` is empty, or one entry per held feature: parents among the other held
    columns (at most two, no cycle), and for each combination of their levels a row of rising
    shares in [0, 1], every row of the same length."""
    if held_levels == ():
        return True
    if type(held_levels) is not tuple or len(held_levels) != len(held) or any(type(c) is not HeldLevels for c in held_levels):
        return False
    cells = 0
    for j, column in enumerate(held_levels):
        if (type(column.parents) is not tuple or len(column.parents) > 2 or len(set(column.parents)) < len(column.parents)
                or any(type(k) is not int or not 0 <= k < len(held) or k == j for k in column.parents)
                or not column.cumulative or len({len(row) for row in column.cumulative}) != 1):
            return False
        rows = np.asarray(column.cumulative, dtype=float)
        cells += rows.size
        if cells > MAX_CELLS or not np.isfinite(rows).all() or (rows < 0).any() or (rows > 1).any() or (np.diff(rows, axis=1) < 0).any():
            return False
    if any(len(column.cumulative) != np.prod([held_levels[k].size for k in column.parents]) for column in held_levels):
        return False
    try:
        parents_first(held_levels)
    except ValueError:
        return False
    return True


def levels(held_levels: Sequence[HeldLevels], p: np.ndarray) -> np.ndarray:
    """Each held column's level (N, H) at probabilities p = Φ(held coordinates) (N, H), float64."""
    codes = np.zeros(p.shape, np.int64)
    for j in parents_first(held_levels):
        column = held_levels[j]
        if not column.parents:
            codes[:, j] = np.searchsorted(column.cumulative[0], p[:, j], side="right")
            continue
        row = np.zeros(len(p), np.int64)
        for parent in column.parents:
            row = row * held_levels[parent].size + codes[:, parent]
        for r in np.unique(row):
            rows = row == r
            codes[rows, j] = np.searchsorted(column.cumulative[r], p[rows, j], side="right")
    return codes


def levels_of(held_levels: Sequence[HeldLevels], coordinates: np.ndarray) -> np.ndarray:
    """Each held column's level (N, H) at its held coordinates (N, H), computed in float64 as
    decoding computes it."""
    from scipy.special import ndtr  # held flows only

    return levels(held_levels, ndtr(coordinates.astype(np.float64)))


def input_rows(held_levels: Sequence[HeldLevels], codes: np.ndarray) -> np.ndarray:
    """Levels (N, H) → each one's row (N, H) among the one-hot inputs, column after column: the
    row of the first layer's weights that its one-hot input multiplies, which the couplings
    gather rather than multiply a mostly zero matrix as wide as all the levels."""
    return np.cumsum([0] + [column.size for column in held_levels])[:-1] + codes
