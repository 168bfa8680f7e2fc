"""Anomaly triage: how unusual a row is, to rank it, and why it is unlikely, to explain it.

## The anomaly score

A flow fitted to every row of a table, its anomalies included, learns a tight cluster of them
as a mode of its own; the columns where they look typical then outweigh the one where they
are rare, and −log-likelihood ranks them as ordinary (bench/anomaly.py: Shuttle, digits). So
the ranking score adds to the joint view a marginal one, the column tails:

    tails(x) = Σ_j max(−log side_j(x_j), (−log left_j(x_j) − log right_j(x_j)) / 2)

where, for a number, left_j and right_j are the shares of the fitted rows at or below and at
or above x_j, and side_j is the one of the two on the side the column is skewed to (right for
a skewness of 0): a value far out on the long side counts in full, one far out on the short
side half. A category of numbers (a 1-10 scale) counts as a number: its 10 is far out even
when as common as a 7. For another category (and for a missing value) both shares are the
probability of a value no more common than x_j. This is COPOD's score (Li et al., 2020) as
PyOD computes it, the largest surprise per column, summed. Then

    anomaly_score(x) = z(−log p(x)) + z(tails(x)),   z(v) = (v − median) / IQR,

each median and interquartile range taken over the validation rows at fit: the sum of two
robust z-scores, without units, higher = more anomalous.

Its p is not the fitted density but a smoother one: the kept flow's (averaged) weights after
its first epoch, stored in the bundle beside the fitted ones (from format 15). The flow starts
near the preprocessing's own density (couplings at the identity); its first epoch learns the
table's broad shape, and the epochs after it the fine structure, clusters of anomalies among
it: later weights rank worse on most tables of bench/anomaly.py (docs/benchmarks/anomaly.md).
`log_likelihood` stays the fitted density's. A row of log-likelihood −inf (a
category never seen) scores +inf. Bundles of formats 9 to 11 hold no skewed sides and keep
the tails they were calibrated with: the largest of the three sums over the columns of
−log left_j, of −log right_j and of the two-sided −log min(1, 2 min(left_j, right_j)).

## Explanations

Why a row is unlikely: the column whose value the rest of the row makes most surprising,
measured in nats that do not depend on any column's units or kind.

The surprise of column j in a row is −log p(x_j | the rest) = log p(the rest) − log p(row): what
the row's log-likelihood gains when x_j is left blank (integrated out). It is in column j's own
units (a density per millimetre, a probability for a category), so the surprises of two columns
cannot be compared as they are: the same column in millimetres would be named about 6.9 nats more
readily than in metres. Subtracting the column's typical surprise, its median over validation
rows at fit, removes the units (rescaling a column shifts both by the same log) and the kind.
What is left, the excess surprise, says how many nats more surprising the value is, given the
rest of the row, than the column's values usually are; the explanation names the largest.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from flowcli import likelihood
from flowcli.encode.columns import CategoricalColumn
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import DataError, FlowcliWarning
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.likelihood import percentiles, quantiles
from flowcli.summary import column_numbers
from flowcli.table.inputs import as_table

TYPICAL_ROWS = 2_000  # validation rows the typical surprises are the medians of
RANKING = "ranking."  # the prefix of the ranking weights' names in a bundle (format 15)


def surprises(score: Callable[[pa.Table], np.ndarray], table: pa.Table, columns: list[str], base: np.ndarray) -> np.ndarray:
    """−log p(x_j | the rest) per column and row (C, N), given the rows' log-likelihoods `base`
    (N,) and `score`, which scores a table; one scoring pass per column. A value the model never
    saw is +inf; a missing value, or one whose blanking cannot help (another column's value was
    never seen), is −inf: there is nothing to explain there."""
    out = np.empty((len(columns), table.num_rows))
    for j, name in enumerate(columns):
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        blank = table.set_column(index, field, pa.nulls(table.num_rows, field.type))
        with warnings.catch_warnings():  # unseen values were reported by the pass that scored `base`
            warnings.simplefilter("ignore", FlowcliWarning)
            with np.errstate(invalid="ignore"):  # −inf − −inf where even blanking does not help
                gain = score(blank) - base
        out[j] = np.where(np.isnan(gain) | np.asarray(table.column(index).is_null()), -np.inf, gain)
    return out


def typical_surprises(score: Callable[[pa.Table], np.ndarray], table: pa.Table, columns: list[str]) -> dict[str, float]:
    """Each column's median surprise over (up to TYPICAL_ROWS of) the validation rows in `table`."""
    table = table.slice(0, TYPICAL_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowcliWarning)
        each = surprises(score, table, columns, score(table))
    typical = {}
    for name, row in zip(columns, each):
        finite = row[np.isfinite(row)]
        typical[name] = float(np.median(finite)) if len(finite) else 0.0
    return typical


def explanations(each: np.ndarray, columns: list[str], typical: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The column of largest excess surprise per row (N,), and that excess in nats (N,). Without
    `typical` (bundles before format 7) the surprises are compared as they are, in their units."""
    excess = each - np.array([[typical[name]] for name in columns]) if typical else each
    best = np.argmax(excess, axis=0)
    return np.asarray(columns, dtype=object)[best], excess[best, np.arange(excess.shape[1])]


def with_ranking(weights: dict[str, np.ndarray], ranking: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """One bundle's tensors: the fitted weights, and the ranking ones under names prefixed RANKING."""
    return {**weights, **{RANKING + name: value for name, value in (ranking or {}).items()}}


def without_ranking(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """A bundle's tensors split into the fitted weights and the ranking ones (None before format 15)."""
    ranking = {name.removeprefix(RANKING): value for name, value in tensors.items() if name.startswith(RANKING)}
    return {name: value for name, value in tensors.items() if not name.startswith(RANKING)}, ranking or None


def typical_from_json(data: object, columns: list[str]) -> dict[str, float] | None:
    """A manifest's typical surprises (format 7), checked: a finite number for each of `columns`
    (extra names are ignored); None for bundles before them."""
    if data is None:
        return None
    typical = {str(name): float(value) for name, value in dict(data).items()}
    if not set(columns) <= set(typical) or not all(map(math.isfinite, typical.values())):
        raise ValueError("typical_surprises must hold a finite number for every column")
    return {name: typical[name] for name in columns}


# ----------------------------------------------------------------------------- the anomaly score
KNOTS = 1001  # quantiles kept per numeric column: tails resolved to 1 in 1000 rows


class Anomalies:
    """The triage half of `TabularFlow`, ranking with PyOD's names and explaining: a mixin over its
    `score_samples` and `_checked`, `columns_`, `preprocessor_`, `config_`, `ranking_weights_` (None for bundles
    before format 15), `validation_quantiles_`, `anomaly_` (an `AnomalyReference`, None for bundles
    before format 9, whose anomaly score is −log-likelihood), `typical_surprises_` and
    `contamination`."""

    def explain(
        self, data: Any, *, scores: np.ndarray | None = None, source: str = "data", first_row: int = 0
    ) -> np.ndarray:
        """For every row (N,), the column whose value the rest of the row makes most surprising,
        beyond that column's typical surprise at fit (see `flowcli.explain`): the same whatever
        the columns' units or kinds. Costs one scoring pass per column, plus one for the rows' own
        `scores` unless they are given. `explanations` also gives the excess in nats."""
        return self.explanations(data, scores=scores, source=source, first_row=first_row)[0]

    def explanations(
        self, data: Any, *, scores: np.ndarray | None = None, source: str = "data", first_row: int = 0,
        among: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`explain`'s columns (N,), named among `among` (default: all), and by how many nats each value is
        more surprising, given the rest of its row, than its column's values typically were at fit (N,)."""
        table, columns = as_table(data), self.columns_ if among is None else list(among)
        base = self.score_samples(table, source=source, first_row=first_row) if scores is None else scores
        each = surprises(lambda rows: self.score_samples(rows, source=source, first_row=first_row), table, columns, base)
        return explanations(each, columns, self.typical_surprises_)

    def _set_ranking_flow(self) -> None:
        """The numpy flow of `ranking_weights_` (None without them), in float64: a ranking must not
        depend on how the rows were batched, which moves float32 sums in their last digits."""
        self._ranking_flow = None if self.ranking_weights_ is None else NumpyRealNVP(
            self.config_, self.ranking_weights_, np.float64, front=self.preprocessor_.front)

    def anomaly_scores(self, data: Any, log_likelihood: np.ndarray | None = None, **options: Any) -> np.ndarray:
        """anomaly_score per row of `data` (N,), higher = more anomalous (see `flowcli.explain`),
        given the rows' `score_samples` when already scored, or checking `data` with `options`
        (`score_samples`' `strict`, `source`, `first_row`, `unseen`)."""
        self._require_fitted()
        if self.anomaly_ is None:
            return -(self.score_samples(data, **options) if log_likelihood is None else log_likelihood)
        return self.anomaly_.scores(self.preprocessor_, as_table(data), self.ranking_log_likelihood(data, log_likelihood, **options))

    def ranking_log_likelihood(
        self, data: Any, log_likelihood: np.ndarray | None = None, *, strict: bool = False, source: str = "data",
        first_row: int = 0, unseen: Any = None,
    ) -> np.ndarray:
        """The rows' log-likelihoods (N,) under the density the anomaly score ranks by: the fitted
        flow's weights after its first epoch (see the module's docstring), or for bundles before
        format 15 the fit itself. Given the rows' `score_samples` (N,), `data` was checked when they
        were scored; otherwise it is checked here as `score_samples` checks it, and scored once."""
        self._require_fitted()
        options = {"strict": strict, "source": source, "unseen": unseen}
        if self.ranking_weights_ is None:
            return self.score_samples(data, first_row=first_row, **options) if log_likelihood is None else log_likelihood
        table = as_table(data) if log_likelihood is not None else self._checked(data, **options)
        return likelihood.log_likelihood(self.preprocessor_, self._ranking_flow, table, source=source, first_row=first_row)

    def anomaly_percentile(self, scores: np.ndarray) -> np.ndarray:
        """For anomaly scores (N,), the share of validation rows at fit that were more anomalous, in %:
        a row at percentile 1 is odder than 99 % of rows like those fitted."""
        self._require_fitted()
        if not self.validation_quantiles_:
            raise DataError("this bundle holds no validation scores (it predates them); fit it again for percentiles")
        if self.anomaly_ is None:
            return percentiles(-scores, self.validation_quantiles_)
        return 100 - percentiles(scores, self.anomaly_.quantiles)

    def decision_function(self, data: Any) -> np.ndarray:
        """Outlier scores (N,), higher = more anomalous, as PyOD's detectors give: `anomaly_scores`."""
        return self.anomaly_scores(data)

    def predict(self, data: Any, contamination: float | None = None) -> np.ndarray:
        """1 for an outlier, 0 for an inlier (PyOD's convention): rows more anomalous than all but
        the `contamination` share (default: the model's) of the validation rows at fit."""
        self._require_fitted()
        share = self.contamination if contamination is None else contamination
        if not 0 < share < 0.5:
            raise DataError(f"contamination must lie in (0, 0.5), not {share}")
        return (self.anomaly_percentile(self.decision_function(data)) < 100 * share).astype(int)


@dataclass(frozen=True)
class AnomalyReference:
    """What `anomaly_scores` compares a row with: each ordered column's quantiles at fit (a number,
    or a category of numbers; None for another category, whose probabilities the preprocessor
    holds) and the side it is skewed to, and the medians and IQRs of −log-likelihood and of the
    column tails over the validation rows."""

    knots: tuple[tuple[float, ...] | None, ...]  # one per model column, ascending; None: an unordered category
    centres: tuple[float, float]  # medians of (−log p, tails)
    scales: tuple[float, float]  # their interquartile ranges, > 0
    quantiles: tuple[float, ...] = ()  # of the validation rows' anomaly scores, for percentiles
    sides: tuple[int, ...] | None = None  # per model column, −1 skewed left, +1 right; None: formats 9 to 11

    @classmethod
    def fit(cls, preprocessor: Preprocessor, train: pa.Table, validation: pa.Table, log_likelihood: np.ndarray) -> AnomalyReference:
        """From the training rows' values and the validation rows' log-likelihoods (N_val,)."""
        knots, sides = [], []
        for column in preprocessor.columns:
            if not _ordered(column):
                knots.append(None)
                sides.append(1)  # unused: a category's tail has one side
                continue
            x = column_numbers(column, train)
            # A column with no value at fit gets one knot: its low end (a category's is 0).
            knots.append(tuple(np.quantile(x, np.linspace(0, 1, min(KNOTS, len(x)))).tolist()) if len(x) else (getattr(column, "low", 0.0),))
            sides.append(_skewed_side(x))
        tails = cls(tuple(knots), (0.0, 0.0), (1.0, 1.0), sides=tuple(sides)).column_tails(preprocessor, validation)
        finite = [view[np.isfinite(view)] for view in (-log_likelihood, tails)]
        centres = tuple(float(np.median(v)) if len(v) else 0.0 for v in finite)
        reference = cls(tuple(knots), centres, tuple(_spread(v) for v in finite), sides=tuple(sides))
        return dataclasses.replace(reference, quantiles=tuple(quantiles(reference.scores(preprocessor, validation, log_likelihood))))

    def scores(self, preprocessor: Preprocessor, table: pa.Table | pa.RecordBatch, log_likelihood: np.ndarray) -> np.ndarray:
        """anomaly_score per row (N,), given the rows' log-likelihoods (N,)."""
        tails = self.column_tails(preprocessor, table)
        with np.errstate(invalid="ignore"):
            joint = (-log_likelihood - self.centres[0]) / self.scales[0]
            return joint + (tails - self.centres[1]) / self.scales[1]

    def column_tails(self, preprocessor: Preprocessor, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """tails(x) per row (N,), in nats (see the module's docstring)."""
        each = (self._surprises(column, knots, table.column(column.name)) for column, knots in zip(preprocessor.columns, self.knots))
        if self.sides is None:  # formats 9 to 11: the largest of the two-sided, left and right sums
            sums = np.zeros((3, table.num_rows))
            for left, right, one in each:
                sums += [np.where(one, left, np.maximum(0.0, np.maximum(left, right) - math.log(2))), left, right]
            return sums.max(axis=0)
        total = np.zeros(table.num_rows)
        for (left, right, _), side in zip(each, self.sides):
            total += np.maximum(left if side < 0 else right, (left + right) / 2)
        return total

    @staticmethod
    def _surprises(column: Any, knots: tuple[float, ...] | None, values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """−log of the shares of the fitted rows at or below and at or above each value (N,) each,
        and where those are one share (N,): a category's tail, or a missing value's."""
        if knots is None:
            surprise = -np.log(_category_tails(column, values))
            return surprise, surprise, np.ones(len(surprise), bool)
        x = column.numbers(values, "data")
        missing = np.isnan(x)
        points = np.asarray(knots)
        # A value past the range seen at fit has one share (1 / (K + 1)), not none, so that its
        # surprise stays finite.
        left = (np.searchsorted(points, x, side="right") + 1) / (len(points) + 1)
        right = (len(points) - np.searchsorted(points, x, side="left") + 1) / (len(points) + 1)
        rate = column.missing_rate or 0.0
        absent = -math.log(rate) if 0 < rate <= 0.5 else 0.0  # a missing value: its indicator's tail
        return np.where(missing, absent, -np.log(left)), np.where(missing, absent, -np.log(right)), missing

    def to_json(self) -> dict:
        return {"knots": [None if k is None else list(k) for k in self.knots],
                **({"sides": list(self.sides)} if self.sides is not None else {}),
                "centres": list(self.centres), "scales": list(self.scales), "quantiles": list(self.quantiles)}

    @classmethod
    def from_json(cls, data: dict, columns: list) -> AnomalyReference:
        """A manifest's reference for the model's `columns`, checked: knots, finite and ascending,
        for each ordered column and none for another, a side of −1 or +1 per column (from format
        12), finite centres and positive scales."""
        knots = tuple(None if k is None else tuple(float(v) for v in k) for k in data["knots"])
        centres = tuple(float(v) for v in data["centres"])
        scales = tuple(float(v) for v in data["scales"])
        points = tuple(float(v) for v in data["quantiles"])
        sides = None if "sides" not in data else tuple(data["sides"])
        if len(knots) != len(columns) or len(centres) != 2 or len(scales) != 2:
            raise ValueError(f"anomaly needs knots for {len(columns)} columns and two centres and scales")
        if any((k is None) == _ordered(column) for k, column in zip(knots, columns)):
            raise ValueError("anomaly needs knots for each number and category of numbers, and none for another category")
        if sides is not None and (len(sides) != len(columns) or not all(type(v) is int and v in (-1, 1) for v in sides)):
            raise ValueError(f"anomaly needs a side of -1 or 1 for each of {len(columns)} columns")
        for k in knots:
            if k is not None and (not k or not all(map(math.isfinite, k)) or any(np.diff(k) < 0)):
                raise ValueError("anomaly knots must be finite and ascending")
        if not all(map(math.isfinite, centres + scales + points)) or min(scales) <= 0 or any(np.diff(points) < 0):
            raise ValueError("anomaly centres and quantiles must be finite, quantiles ascending, and scales positive")
        return cls(knots, centres, scales, points, sides)


def _ordered(column: Any) -> bool:
    """Whether a column's tails are counted along its values' order: a number, or a category of
    numbers (a 1-10 scale), whose 10 is far out even when as common as a 7."""
    return not isinstance(column, CategoricalColumn) or column.ordered


def _skewed_side(x: np.ndarray) -> int:
    """The sign of the skewness of `x` (N,), −1 or +1 (for 0 or no values)."""
    if not len(x):
        return 1
    standard = (x - x.mean()) / (x.std() or 1.0)  # standardized first, so that its cube stays finite
    return -1 if np.mean(standard ** 3) < 0 else 1


def _spread(values: np.ndarray) -> float:
    """The interquartile range of `values`, or where that is 0 (most rows alike) their standard
    deviation, or 1."""
    if len(values) == 0:
        return 1.0
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float(q3 - q1) if q3 > q1 else float(np.std(values)) or 1.0


def _category_tails(column: CategoricalColumn, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per row (N,), the probability of a value no more common than the row's: the sum over the
    column's values (each level, each rare value folded into "other", each whole number in its
    gaps) of those whose probability is at most the row's. 0 for a value never seen; 1 for a
    missing value where none was seen at fit (it is integrated out of the likelihood too)."""
    probabilities = np.asarray(column.probabilities) * (1 - column.gap_share)
    each = list(probabilities[: len(column.levels)])  # one value's probability, per level
    masses = list(each)
    if column.rare:
        each.append(probabilities[-1] / column.rare_count)
        masses.append(probabilities[-1])
    if column.gaps:
        each.append(column.gap_share / column.gaps)
        masses.append(column.gap_share)
    each, masses = np.asarray(each), np.asarray(masses)
    tail = np.array([masses[each <= p * (1 + 1e-9)].sum() for p in each])
    index = column.level_index(values, "data")
    out = np.where(index >= 0, tail[np.maximum(index, 0)], 0.0)
    out[index == -2] = 1.0
    if column.gaps:
        out[column.gap_rows(values, "data")] = tail[-1]
    return out
