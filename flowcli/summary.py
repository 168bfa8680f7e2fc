"""A small summary of the training data, kept in the bundle so that plots can show the real side.

numpy and pyarrow only: `model` computes it at fit, `plots` draws it. The training data's
fingerprint, which `inspect` shows, is here too.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from flowcli.encode.columns import CategoricalColumn, NumericColumn
from flowcli.encode.preprocess import Preprocessor
from flowcli.parallel import torchrun
from flowcli.table.io import to_ipc

MAX_COLUMNS = 12  # columns summarized and plotted
BINS = 30


def reference_summary(preprocessor: Preprocessor, table: pa.Table, u: np.ndarray) -> dict:
    """What the training data looked like, for plots: histograms of the first MAX_COLUMNS numeric
    columns, and the correlation of their first features u (N, W). Small enough for the manifest."""
    histograms = {}
    for column in preprocessor.columns[:MAX_COLUMNS]:
        if isinstance(column, NumericColumn):
            counts, edges = np.histogram(column_numbers(column, table), bins=BINS)
            histograms[column.name] = {"edges": edges.tolist(), "counts": counts.tolist()}
    return {"histograms": histograms, "correlation": correlation(preprocessor, u).tolist()}


def column_numbers(column: NumericColumn | CategoricalColumn, table: pa.Table) -> np.ndarray:
    """A numeric or `ordered` category column's finite values (N,), datetimes in days from the
    column's origin."""
    x = column.numbers(table.column(column.name), "data")
    return x[np.isfinite(x)]


def correlation(preprocessor: Preprocessor, u: np.ndarray) -> np.ndarray:
    """Correlation of each plotted column's first feature."""
    starts = np.cumsum([0] + [column.width for column in preprocessor.columns])[: min(len(preprocessor.columns), MAX_COLUMNS)]
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(u[:, starts].T) if len(starts) > 1 else np.ones((1, 1))
    return np.nan_to_num(np.atleast_2d(matrix))


def training_fingerprint(table: pa.Table) -> str:
    """SHA-256 of the modeled columns, names and values, in Arrow's IPC stream format; under
    torchrun, of the ranks' own fingerprints in rank order."""
    digests = torchrun.gather_bytes(hashlib.sha256(to_ipc(table.combine_chunks())).digest())
    return "sha256:" + (digests[0] if len(digests) == 1 else hashlib.sha256(b"".join(digests)).digest()).hex()
