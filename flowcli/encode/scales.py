"""Numeric columns standardized at a category's level: how a number's centre and spread move
with a category, counted exactly at fit.

A flow learns poorly how a numeric column moves with a category: the category's feature is a
slice of a normal per level (`dequantize.Levels`), and a number whose mean changes from one
slice to the next changes it at the slice's hard edge, which smooth couplings blur. So at fit, a
numeric column takes as its parent the category column whose levels tell most about its
feature: the largest gain in Gaussian log-likelihood per row from a mean and a standard
deviation at each level, less what those 2(P − 1) numbers cost by BIC. It takes it only where
that gain exceeds what the other numbers tell about it (−log(1 − R²) / 2 of a linear fit on
them): standardizing a number at a category's levels bends its relations to the other numbers
level by level, and where those are tight (diamonds' carat and its x, y and z) the flow's
likelihood fell by a nat per row. Each level's mean and spread are drawn towards the column's
own by PRIOR_ROWS rows' worth.

`LevelScales` is then the flow's fixed first step for those columns: it standardizes the
feature at its row's parent level, (u − mean_j) / std_j. It is affine at each level, with
log-determinant −log std_j, so likelihoods stay exact, and a flow that learns the number's
dependence on the category blurred still gives each level its own mean and spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from flowcli.encode.categorical import CategoricalColumn
from flowcli.encode.dequantize import Levels
from flowcli.encode.links import SCREEN_ROWS
from flowcli.encode.numeric import NumericColumn

MAX_PARENT_LEVELS = 1_000  # a parent's levels: two numbers each in the manifest, per child
PRIOR_ROWS = 10.0  # rows' worth of the column's own mean and spread behind each level's


def scaled(columns: Sequence, table: pa.Table, source: str) -> tuple:
    """`columns` (encoders fitted on `table`), with a parent category column and the mean and
    standard deviation of the feature at each of its levels set on the numeric columns that
    gain by one (see the module). Parents are chosen on up to SCREEN_ROWS rows of `table` (a
    million rows took 24 s on 2 cores), the linear fit on those where every number is present,
    and the moments counted on all its rows with a value."""
    categories = [i for i, column in enumerate(columns)
                  if isinstance(column, CategoricalColumn) and 1 < len(column.probabilities) <= MAX_PARENT_LEVELS]
    numeric = [j for j, column in enumerate(columns) if isinstance(column, NumericColumn)]
    if not categories or not numeric or not table.num_rows:
        return tuple(columns)
    rng, columns = np.random.default_rng(0), list(columns)
    screen = table if table.num_rows <= SCREEN_ROWS else table.take(rng.permutation(table.num_rows)[:SCREEN_ROWS])
    features = {j: _feature(columns[j], screen, source, rng) for j in numeric}  # (u, present) per column
    levels = {i: columns[i].level_index(screen.column(columns[i].name), source) for i in categories}
    complete = np.all([present for _, present in features.values()], axis=0)  # the linear fit's rows
    for j in numeric:
        (u, present), column = features[j], columns[j]
        others = [features[i][0][complete] for i in numeric if i != j]
        others = np.stack(others, axis=1) if others else np.empty((int(complete.sum()), 0))
        best, best_gain = None, numbers_gain(u[complete], others)
        for i in categories:
            _, gain = level_moments(u[present], levels[i][present], len(columns[i].probabilities))
            if gain > best_gain:
                best, best_gain = i, gain
        if best is not None:
            u, present = features[j] if screen is table else _feature(column, table, source, rng)
            parent = columns[best]
            moments, _ = level_moments(u[present], parent.level_index(table.column(parent.name), source)[present],
                                       len(parent.probabilities))
            columns[j] = replace(column, parent=parent.name, given_parent=moments.tolist())
    return tuple(columns)


def _feature(column: NumericColumn, table: pa.Table, source: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The column's value feature (N,) over `table`'s rows, dequantized with noise from `rng`,
    and whether each row has a value (N,)."""
    values = table.column(column.name)
    u = column.encode(values, rng.uniform(size=(table.num_rows, column.width)), source, 0)[0][:, 0]
    return u, ~np.isnan(column.numbers(values, source))


def numbers_gain(u: np.ndarray, others: np.ndarray) -> float:
    """The Gaussian log-likelihood per row that a linear fit on `others` (N, M) gains for u (N,)
    over its mean, −log(1 − R²) / 2; 0 without others."""
    if not others.shape[1] or len(u) < 2 or not u.var():
        return 0.0
    design = np.column_stack([np.ones(len(u)), others])
    residual = u - design @ np.linalg.lstsq(design, u, rcond=None)[0]
    return float(0.5 * np.log(u.var() / max(residual.var(), 1e-300)))


def level_moments(u: np.ndarray, levels: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The feature's mean and standard deviation at each level (size, 2), from its values u (N,)
    and their level indices (N,), each drawn towards the overall ones by PRIOR_ROWS rows; and
    the Gaussian log-likelihood per row they gain over the overall ones, less BIC's price of
    the 2(P − 1) numbers they add, P the levels seen. Rows without a level are left out."""
    u, levels = u[levels >= 0], levels[levels >= 0]
    n = len(u)
    if n < 2 or not u.var():  # a constant has no spread to share out
        return np.tile([float(u.mean()) if n else 0.0, 1.0], (size, 1)), 0.0
    mean, variance = float(u.mean()), float(u.var())
    rows = np.bincount(levels, minlength=size)
    means = (np.bincount(levels, u, size) + PRIOR_ROWS * mean) / (rows + PRIOR_ROWS)
    variances = (np.bincount(levels, (u - means[levels]) ** 2, size) + PRIOR_ROWS * variance) / (rows + PRIOR_ROWS)
    at_level = -0.5 * np.mean(np.log(variances[levels]) + (u - means[levels]) ** 2 / variances[levels])
    overall = -0.5 * (np.log(variance) + 1)
    price = 2 * (np.count_nonzero(rows) - 1) * np.log(n) / (2 * n)
    return np.column_stack([means, np.sqrt(variances)]), float(at_level - overall - price)


@dataclass(frozen=True)
class Scale:
    """One scaled column: its value `feature`, its parent's `parent` feature and level shares
    (P,), the feature's mean and standard deviation at each parent level (P, 2), and its
    missingness indicator's levels (the next feature), if it has one."""

    feature: int
    parent: int
    parent_shares: np.ndarray
    given_parent: np.ndarray
    indicator: Levels | None


class LevelScales:
    """The flow's fixed first step for scaled columns (see the module): features u (N, W) → v,
    in float64. It moves no category's feature, so its inverse reads the levels from v."""

    def __init__(self, scales: Sequence[Scale]):
        self.scales = tuple(scales)

    @classmethod
    def of(cls, columns: Sequence) -> LevelScales | None:
        """The step for encoders `columns`, or None when no numeric column has a parent."""
        feature = np.cumsum([0] + [column.width for column in columns])
        position = {column.name: i for i, column in enumerate(columns)}
        scales = [Scale(int(feature[j]), int(feature[position[column.parent]]),
                        np.asarray(columns[position[column.parent]].probabilities, np.float64),
                        np.asarray(column.given_parent, np.float64),
                        column.indicator)
                  for j, column in enumerate(columns) if isinstance(column, NumericColumn) and column.parent is not None]
        return cls(scales) if scales else None

    def forward(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features u (N, W) → standardized features v (N, W) and log|dv/du| (N,)."""
        v, log_det = np.array(u, np.float64), np.zeros(len(u))
        for scale, (mean, std) in zip(self.scales, self._moments(v)):
            v[:, scale.feature] = (v[:, scale.feature] - mean) / std
            log_det -= np.log(std)
        return v, log_det

    def inverse(self, v: np.ndarray) -> np.ndarray:
        """Standardized features v (N, W) → features u (N, W)."""
        u = np.array(v, np.float64)
        for scale, (mean, std) in zip(self.scales, self._moments(u)):
            u[:, scale.feature] = u[:, scale.feature] * std + mean
        return u

    def _moments(self, features: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per scale, the mean and standard deviation (N,) at each row's parent level; 0 and 1
        where the value is missing, whose feature is a standard normal draw integrated out."""
        moments = []
        for scale in self.scales:
            mean, std = scale.given_parent[Levels(scale.parent_shares).decode(features[:, scale.parent])].T
            if scale.indicator is not None:
                missing = scale.indicator.decode(features[:, scale.feature + 1]) == 1
                mean, std = np.where(missing, 0.0, mean), np.where(missing, 1.0, std)
            moments.append((mean, std))
        return moments
