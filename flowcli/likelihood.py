"""Log-likelihoods of table rows: the flow's log-density of the encoded features plus the
encoders' log-weights. Discrete and missing values need noise to encode, so their rows are
scored at the preprocessor's fixed noise points and averaged by log-mean-exp (an importance-
weighted estimate); tables of continuous columns with nothing missing are scored exactly, once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowcli.encode.preprocess import Preprocessor
from flowcli.flow.mixture import logsumexp
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.parallel.threads import map_rows


def log_likelihood(
    preprocessor: Preprocessor, flow: NumpyRealNVP, table: pa.Table | pa.RecordBatch, *, source: str, first_row: int = 0
) -> np.ndarray:
    """log p per row (N,), in nats, computed in chunks of rows on every core; `first_row`
    offsets the row numbers in error messages."""
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
