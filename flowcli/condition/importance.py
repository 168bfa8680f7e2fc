"""Candidates for the free columns, weighted by the flow's exact density.

For given columns g and free columns r, each candidate u comes from the proposal q (the given
columns encoded as `score` encodes them, with fresh dequantization noise; ranges and free
features from the conditioned Gaussian), with weight w = p(u) · exp(log-weights of the given
encodings) / q(u). Then E[w] = p(g) in the columns' units, the marginal likelihood of the given
values; and a candidate picked in proportion to w among many is a draw from p(r | g)
(sampling–importance–resampling). Both are exact as candidates grow; how far from that a
result is shows in the effective sample size (Σw)² / Σw², reported with every result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flowcli.condition.conditions import Condition
from flowcli.condition.proposal import FIT_ROWS, Gaussian, draw_normal, draw_truncated
from flowcli.encode.columns import CategoricalColumn, NumericColumn
from flowcli.encode.dequantize import Levels, normal_log_pdf
from flowcli.encode.preprocess import Preprocessor
from flowcli.flow.mixture import logsumexp
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.parallel.threads import map_rows
from flowcli.table.values import arrow_type

FIT_CLIP = 8.0  # flow draws beyond ±8 standard units (a heavy-tailed base's) do not shape the Gaussian
MIN_FIT = 10  # effective candidates per feature that a Gaussian is fitted to at least


@dataclass(frozen=True)
class Weighted:
    """Candidates u (N, M, W) for N rows, M each, and their log-weights (N, M)."""

    u: np.ndarray
    log_w: np.ndarray
    conditioner: Conditioner  # knows which features hold values, for `adapted`

    def take(self, rows: np.ndarray) -> Weighted:
        """The candidates of `rows` only."""
        return Weighted(self.u[rows], self.log_w[rows], self.conditioner)

    def log_mean(self) -> np.ndarray:
        """log of each row's mean weight (N,): the estimate of log p(given)."""
        with np.errstate(divide="ignore"):
            return logsumexp(self.log_w, axis=1) - math.log(self.log_w.shape[1])

    def effective_size(self) -> np.ndarray:
        """Each row's effective sample size (Σw)² / Σw² (N,), between 1 and M (0: no candidate fits)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            size = np.exp(2 * logsumexp(self.log_w, axis=1) - logsumexp(2 * self.log_w, axis=1))
        return np.nan_to_num(size)

    def adapted(self) -> Gaussian | None:
        """A Gaussian fitted to the candidates of all rows, each row's weights normalized so that
        every row counts alike: the proposal moved to where the conditionals put their mass.
        None when the candidates are too few to fit one (an effective count under MIN_FIT per
        feature): a covariance from a handful of points collapses, and so would the proposal."""
        with np.errstate(invalid="ignore", over="ignore"):
            w = np.exp(self.log_w - self.log_w.max(axis=1, keepdims=True))
            w = w / w.sum(axis=1, keepdims=True)
        w = np.nan_to_num(w).reshape(-1)
        if not w.any() or w.sum() ** 2 / (w * w).sum() < MIN_FIT * self.u.shape[2]:
            return None
        u = self.u.reshape(len(w), -1)
        return Gaussian.fit(u, weights=w, present=self.conditioner.present(u))

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """One candidate per row (N, W), drawn in proportion to its weight (Gumbel-max)."""
        keys = self.log_w + rng.gumbel(size=self.log_w.shape)
        return self.u[np.arange(len(self.u)), np.argmax(keys, axis=1)]


class Conditioner:
    """Draws weighted candidates from one model under conditions.

    A number column that may be missing has two features: its value and a missingness indicator.
    Where the indicator says missing, the flow learned the value feature as noise integrated out,
    N(0, 1) whatever the other columns; so the proposal draws it so there, and the Gaussian is
    fitted to present values only (pairwise), lest that noise blur the columns' dependence."""

    def __init__(self, flow: NumpyRealNVP, preprocessor: Preprocessor, seed: int = 0):
        self.flow, self.preprocessor = flow, preprocessor
        self.features = [list(range(span.start, span.stop)) for span in preprocessor.spans]
        self.missable = [(self.features[k][0], self.features[k][1], Levels(np.array([1 - c.missing_rate, c.missing_rate])))
                         for k, c in enumerate(preprocessor.columns) if isinstance(c, NumericColumn) and c.missing_rate is not None]
        rng = np.random.default_rng(seed)
        u = flow.inverse(flow.sample_latent(rng, FIT_ROWS)).astype(np.float64)
        self.gaussian = Gaussian.fit(np.clip(u, -FIT_CLIP, FIT_CLIP), present=self.present(u))

    def present(self, u: np.ndarray) -> np.ndarray:
        """Which features (N, W) of full rows u hold a value: all but the value features of
        numbers whose indicator says missing."""
        mask = np.ones(u.shape, bool)
        for value, indicator, levels in self.missable:
            mask[:, value] = levels.decode(u[:, indicator]) == 0
        return mask

    def candidates(self, given: pa.Table | None, conditions: list[Condition], rows: int, m: int,
                   rng: np.random.Generator, gaussian: Gaussian | None = None) -> Weighted:
        """M candidates for each of `rows` rows. `given` holds each row's values of the columns it
        fixes (missing values included: they are values too), or None; `conditions` are sets of
        categories and ranges every row shares. `gaussian` replaces the proposal fitted to the flow."""
        gaussian = gaussian or self.gaussian
        n = rows * m
        u, known, log_w = np.zeros((n, self.preprocessor.width)), [], np.zeros(n)

        def fix(features: list[int], block: np.ndarray) -> None:
            u[:, features] = block
            known.extend(features)

        def conditional(targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
            values = u[:, known].copy()  # a value feature that is noise (its number missing) tells nothing
            for value, indicator, levels in self.missable:
                if value in known and indicator in known:
                    absent = levels.decode(u[:, indicator]) == 1
                    values[absent, known.index(value)] = gaussian.mean[value]
            return gaussian.given(known, values, targets)

        if given is not None:
            repeated = given.take(np.repeat(np.arange(rows), m))
            for name in given.schema.names:
                j = self.preprocessor.names.index(name)
                column = self.preprocessor.columns[j]
                block, weight = column.encode(repeated.column(name), rng.uniform(size=(n, column.width)), "given", 0)
                fix(self.features[j], block)
                log_w += weight
        ranged = [condition for condition in conditions if isinstance(self.preprocessor.columns[condition.index], NumericColumn)]
        for condition in conditions:
            column = self.preprocessor.columns[condition.index]
            if isinstance(column, CategoricalColumn):
                block, weight = self._levels(column, condition.levels, n, rng)
                fix(self.features[condition.index], block)
                log_w += weight
            elif column.missing_rate is not None:  # a ranged value is present
                g, weight = column.indicator.encode(
                    np.zeros(n, np.int64), rng.uniform(size=n))
                fix([self.features[condition.index][1]], g[:, None])
                log_w += weight
        for condition in ranged:  # each drawn given the features known so far
            column = self.preprocessor.columns[condition.index]
            means, cov = conditional([self.features[condition.index][0]])
            x, log_q = draw_truncated(means[:, 0], math.sqrt(cov[0, 0]), *self._window(condition, column), rng)
            fix([self.features[condition.index][0]], x[:, None])
            log_w -= log_q
        late = [missable for missable in self.missable if missable[0] not in known]
        main = [k for k in range(self.preprocessor.width) if k not in known and k not in [value for value, _, _ in late]]
        if main:
            block, log_q = draw_normal(*conditional(main), rng)
            fix(main, block)
            log_w -= log_q
        for value, indicator, levels in late:  # noise where the indicator says missing, else conditional
            absent = levels.decode(u[:, indicator]) == 1
            drawn, log_q = draw_normal(*conditional([value]), rng)
            noise = rng.standard_normal(n)
            fix([value], np.where(absent, noise, drawn[:, 0])[:, None])
            log_w -= np.where(absent, normal_log_pdf(noise), log_q)
        log_w += np.concatenate(map_rows(lambda start, stop: self.flow.log_prob(u[start:stop]), n))
        for condition in ranged:  # the window was widened by a cell: decoded values must meet the bounds
            column = self.preprocessor.columns[condition.index]
            decoded = column.decode(u[:, self.features[condition.index]], rng)
            x = column.numbers(decoded, "given")
            log_w[~condition.admits(x)] = -np.inf
        log_w[np.isnan(log_w)] = -np.inf
        return Weighted(u.reshape(rows, m, -1), log_w.reshape(rows, m), self)

    def _levels(self, column: CategoricalColumn, levels: list[int], n: int, rng: np.random.Generator):
        """Features (n, 1) of levels drawn from `levels` in proportion to their frequency at fit,
        and log-weights that make them a draw from the whole set (−log q)."""
        p = np.asarray(column.probabilities)[levels]
        chosen = np.asarray(levels)[rng.choice(len(levels), size=n, p=p / p.sum())]
        values = pa.array(column.levels, arrow_type(column.dtype)).take(pa.array(chosen))
        u, weight = column.encode(values, rng.uniform(size=(n, 1)), "given", 0)
        return u, weight - np.log(np.asarray(column.probabilities)[chosen]) + math.log(p.sum())

    @staticmethod
    def _window(condition: Condition, column) -> tuple[float, float]:
        """The bounds of a ranged column in feature units, widened by one grid cell (or the last
        decimal) on each side; `candidates` trims candidates to the exact bounds after decoding."""
        margin = max(column.grid, 10.0 ** -column.decimals if column.decimals is not None else 0.0)
        low, high = max(condition.low, column.low) - margin, min(condition.high, column.high) + margin
        with np.errstate(invalid="ignore"):
            edges = column.scaled(np.array([low, high]))
        return (-np.inf if np.isnan(edges[0]) else edges[0]), (np.inf if np.isnan(edges[1]) else edges[1])
