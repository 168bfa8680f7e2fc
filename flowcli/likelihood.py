"""Log-likelihoods of table rows: the flow's log-density of the encoded features plus the
encoders' log-weights. Discrete and missing values need noise to encode, so their rows are
scored at the preprocessor's fixed noise points and averaged by log-mean-exp (an importance-
weighted estimate); tables of continuous columns with nothing missing are scored exactly, once.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pyarrow as pa

from flowcli.encode.preprocess import Preprocessor
from flowcli.flow.config import FlowConfig
from flowcli.flow.mixture import logsumexp
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.parallel.threads import map_rows
from flowcli.table.values import arrow_type


def log_likelihood(
    preprocessor: Preprocessor, flow: NumpyRealNVP, table: pa.Table | pa.RecordBatch, *, source: str, first_row: int = 0,
    without_gaps: tuple[str, ...] = (),
) -> np.ndarray:
    """log p per row (N,), in nats, computed in chunks of rows on every core; `first_row`
    offsets the row numbers in error messages. A whole number in the gaps of a column of integer
    levels (`CategoricalColumn.inferred`) scores its share of them times the other columns'
    likelihood, the column summed out over its levels; other rows keep the levels' 1 − share.
    `without_gaps` names columns scored as the flow has them, without that mixture."""
    scores = _flow_log_likelihood(preprocessor, flow, table, source=source, first_row=first_row)
    for column in preprocessor.columns:
        if not getattr(column, "gaps", 0) or column.name in without_gaps:
            continue
        gap = column.gap_rows(table.column(column.name), source)
        scores = scores + math.log1p(-column.gap_share)
        if gap.any():
            rows = table.filter(pa.array(gap))
            index = rows.schema.get_field_index(column.name)
            levels = pa.array([level for level in column.levels if level is not None], arrow_type(column.dtype))
            each = [log_likelihood(preprocessor, flow, rows.set_column(index, column.name, pa.repeat(level, rows.num_rows)),
                                   source=source, first_row=first_row, without_gaps=(*without_gaps, column.name))
                    for level in levels]
            scores[gap] = math.log(column.gap_share / column.gaps) + logsumexp(np.stack(each), axis=0)
    return scores


def _flow_log_likelihood(
    preprocessor: Preprocessor, flow: NumpyRealNVP, table: pa.Table | pa.RecordBatch, *, source: str, first_row: int
) -> np.ndarray:
    """log p per row (N,) under the flow and the encoders' log-weights alone."""
    exact = preprocessor.is_exact(table)

    def chunk(start: int, stop: int) -> np.ndarray:
        rows = table.slice(start, stop - start)
        points = [np.full((rows.num_rows, preprocessor.width), 0.5)] if exact else preprocessor.noise_points(rows.num_rows)
        estimates = []
        for noise in points:
            u, log_weight = preprocessor.encode(rows, noise, source=source, first_row=first_row + start)
            estimates.append(flow.log_prob(u) + log_weight)
        with np.errstate(divide="ignore"):
            return logsumexp(np.stack(estimates), axis=0) - np.log(len(estimates))

    return np.concatenate([np.empty(0), *map_rows(chunk, table.num_rows)])


def seconds_per_row(preprocessor: Preprocessor, config: FlowConfig, rows: pa.Table) -> float:
    """Seconds that `log_likelihood` takes per row of a table like `rows`, with a flow of
    `config` (timed on `rows`, with zero weights: a flow's cost is its architecture's)."""
    flow = NumpyRealNVP(config, {name: np.zeros(shape, np.float32) for name, shape in config.weight_shapes().items()})
    start = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        log_likelihood(preprocessor, flow, rows, source="rows")
    return (time.perf_counter() - start) / max(rows.num_rows, 1)


def quantiles(scores: np.ndarray, points: int = 1001) -> list[float]:
    """Up to `points` evenly spaced quantiles of the finite scores, for percentiles later."""
    scores = scores[np.isfinite(scores)]
    return np.quantile(scores, np.linspace(0, 1, min(points, len(scores)))).tolist() if len(scores) else []


def percentiles(scores: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """For log-likelihoods (N,), the share (%) of the scores behind `quantiles` that were lower."""
    points = np.asarray(quantiles)
    return np.interp(scores, points, np.linspace(0, 100, len(points)), left=0.0, right=100.0)


def unseen_message(source: str, counts: dict[str, int], preprocessor: Preprocessor, *, strict: bool = False) -> str:
    """The warning (or with `strict`, the error) for values never seen at fit, with their count per
    column: categories that score −inf, and numbers and dates outside the range seen at fit,
    which score by the maps' linear tails."""
    categories = {name: count for name, count in counts.items() if name in preprocessor.categorical_names}
    numbers = {name: count for name, count in counts.items() if name not in categories}
    parts = []
    if categories:
        parts.append(f"values never seen at fit {'have probability zero' if strict else 'score -inf'}, "
                     f"in column {counted(categories)}")
    if numbers:
        parts.append(f"values outside the range seen at fit{'' if strict else ' score past its edges'}, "
                     f"in column {counted(numbers)}")
    return f"{source}: " + "; ".join(parts) + ("; --strict refuses them" if strict else "")


def counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{name!r} ({count:,})" for name, count in counts.items())
