"""A table's model columns as numbers the figures compare, the same way for every table.

Numbers stay in the column's units (datetimes in days from the model's origin); categories
and booleans become level codes of the model, so that real and synthetic rows share one
coding. Missing values are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flowcli.encode.columns import CategoricalColumn, NumericColumn
from flowcli.encode.preprocess import Preprocessor
from flowcli.table.values import missing_mask


@dataclass(frozen=True)
class ColumnValues:
    """The model's columns of one table: `values[j]` (N,) per column, float64, NaN where missing;
    a category's value is its level's index, or `unseen_code(j)` for a value never seen at fit."""

    preprocessor: Preprocessor
    values: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, preprocessor: Preprocessor, table: pa.Table, source: str) -> ColumnValues:
        values = []
        for column in preprocessor.columns:
            data = table.column(column.name)
            if isinstance(column, CategoricalColumn):
                codes = column.level_index(data, source).astype(np.float64)
                codes[codes == -1] = len(column.levels) + 1  # never seen at fit: a code of its own
                codes[missing_mask(data)] = np.nan
                values.append(codes)
            else:
                values.append(column.numbers(data, source))
        return cls(preprocessor, tuple(values))

    @property
    def rows(self) -> int:
        return len(self.values[0]) if self.values else 0

    @property
    def names(self) -> list[str]:
        return self.preprocessor.names

    def is_categorical(self, j: int) -> bool:
        return isinstance(self.preprocessor.columns[j], CategoricalColumn)

    def codes(self, j: int) -> int:
        """How many codes category column j can take: its levels, "other", and unseen."""
        return len(self.preprocessor.columns[j].levels) + 2

    def take(self, rows: np.ndarray) -> ColumnValues:
        return ColumnValues(self.preprocessor, tuple(x[rows] for x in self.values))

    def row_keys(self) -> np.ndarray:
        """One 64-bit hash per row (N,) of all its values: equal rows, equal keys."""
        import pandas as pd

        frame = pd.DataFrame({j: x for j, x in enumerate(self.values)})
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()

    def distance_features(self) -> np.ndarray:
        """Rows (N, F) whose Euclidean distance is the distance between records: numbers on the
        model's standardized scale (after its log or logit), a missing number at the mean plus a
        mismatch of 1; categories one-hot over √2, so that two different levels are 1 apart."""
        blocks = []
        for j, (column, x) in enumerate(zip(self.preprocessor.columns, self.values)):
            missing = np.isnan(x)
            if isinstance(column, NumericColumn):
                blocks.append(np.nan_to_num(column.scaled(x))[:, None])
                if column.missing_rate is not None:
                    blocks.append(missing[:, None].astype(np.float64))
            else:
                codes = np.where(missing, self.codes(j), x).astype(np.int64)  # missing: one more code
                one_hot = np.zeros((len(x), self.codes(j) + 1))
                one_hot[np.arange(len(x)), codes] = 1 / math.sqrt(2)
                blocks.append(one_hot)
        return np.hstack(blocks) if blocks else np.zeros((self.rows, 0))
