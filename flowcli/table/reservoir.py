"""A uniform sample of a table's rows, drawn in one streaming pass (reservoir sampling). No torch.

Every row gets a uniform random key, and the sample is the `n` rows with the smallest keys:
each subset of `n` rows is equally likely. Batches are filtered against the largest key kept
so far and compacted whenever twice `n` rows are held, so memory is O(n + one batch) however
long the table is. Keys come from one random stream in row order, so the sample depends on the
seed and the rows alone, not on how they were cut into batches (CSV and Parquet agree).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from flowcli.table.csv_reader import infer_csv_types
from flowcli.table.dialect import CsvOptions
from flowcli.table.io import iter_batches, table_format

_STREAM = 0x5EED_5A3D  # keeps the keys' random stream apart from fit's, which uses the same seed
_BATCH_ROWS = 65_536


def read_sample(
    source: str, format: str | None = None, *, max_rows: int, seed: int = 0, csv: CsvOptions | None = None
) -> tuple[pa.Table, int]:
    """A uniform sample of at most `max_rows` rows of the table at `source` (a path or '-'), in
    input order, and the number of rows read. CSV is read as text, since the first rows' types
    could be contradicted by later ones; its columns get the types `read_table` would give
    them, inferred from the sampled cells."""
    schema, batches = iter_batches(source, format, batch_rows=_BATCH_ROWS, text=True, csv=csv)
    sample, rows = reservoir_sample(batches, schema, max_rows, seed=seed)
    return (infer_csv_types(sample) if table_format(source, format) == "csv" else sample), rows


def reservoir_sample(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, n: int, *, seed: int = 0
) -> tuple[pa.Table, int]:
    """The `n` rows (all of them, if fewer) of `batches` with the smallest uniform keys, in input
    order, and the number of rows seen."""
    if n < 1:
        raise ValueError(f"a sample needs at least one row, not {n}")
    rng = np.random.default_rng([seed, _STREAM])
    held = _Held(schema)
    threshold = np.inf  # the n-th smallest key so far, once n rows have been seen
    seen = 0
    for batch in batches:
        keys = rng.random(batch.num_rows)
        chosen = np.flatnonzero(keys < threshold)
        if chosen.size:
            held.add(batch.take(pa.array(chosen)), keys[chosen], seen + chosen)
        seen += batch.num_rows
        if held.rows >= 2 * n:
            threshold = held.keep_smallest(n)
    held.keep_smallest(n)
    return held.in_input_order(), seen


class _Held:
    """The candidate rows, their keys and their positions in the input."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.batches: list[pa.RecordBatch] = []
        self.keys: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch, keys: np.ndarray, positions: np.ndarray) -> None:
        self.batches.append(batch)
        self.keys.append(keys)
        self.positions.append(positions)
        self.rows += batch.num_rows

    def keep_smallest(self, n: int) -> float:
        """Drop all but the `n` rows with the smallest keys; returns the largest key kept."""
        keys = self._keys()
        if len(keys) > n:
            self._take(np.argpartition(keys, n - 1)[:n])
            keys = self._keys()
        return float(keys.max()) if len(keys) else np.inf

    def in_input_order(self) -> pa.Table:
        self._take(np.argsort(self._positions(), kind="stable"))
        return pa.Table.from_batches(self.batches, schema=self.schema)

    def _take(self, rows: np.ndarray) -> None:
        """Keep only `rows` (indices into the rows held, in the order given), as one batch."""
        table = pa.Table.from_batches(self.batches, schema=self.schema)
        self.batches = table.take(pa.array(rows, pa.int64())).combine_chunks().to_batches()
        self.keys, self.positions = [self._keys()[rows]], [self._positions()[rows]]
        self.rows = len(rows)

    def _keys(self) -> np.ndarray:
        return np.concatenate([np.empty(0), *self.keys])

    def _positions(self) -> np.ndarray:
        return np.concatenate([np.empty(0, np.int64), *self.positions])
