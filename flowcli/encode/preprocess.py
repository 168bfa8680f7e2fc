"""The table ↔ flow-feature map: one encoder per column (see `columns`), side by side.

`encode` turns a table into features u (N, W) and a log-weight per row, given noise for the
dequantization and imputation; `decode` turns features back into a table of the original
names and types. `noise_points` gives the deterministic noise that scoring averages over.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flowcli.encode.columns import CategoricalColumn, NumericColumn, auxiliary_features, encoder_from_json, fit_encoder
from flowcli.encode.links import LevelLinks, linked
from flowcli.encode.scales import LevelScales, scaled
from flowcli.errors import BundleError

NOISE_POINTS = 8  # noise draws averaged per row when a table has discrete or missing values
_GOLDEN = (np.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class FixedSteps:
    """The flow's fixed first steps, each with float64 `forward(u) → (v, log-det)` and `inverse(v)
    → u`, applied in order. Each reads category levels from features that no step before it moves."""

    steps: tuple

    def forward(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features u (N, W) → the features past every step (N, W) and their log-determinant (N,)."""
        log_det = np.zeros(len(u))
        for step in self.steps:
            u, step_log_det = step.forward(u)
            log_det += step_log_det
        return u, log_det

    def inverse(self, v: np.ndarray) -> np.ndarray:
        """Features past every step (N, W) → features u (N, W), the last step undone first."""
        for step in reversed(self.steps):
            v = step.inverse(v)
        return v


@dataclass(frozen=True)
class Preprocessor:
    """Encoders for the model's columns, in order, then `auxiliary` noise features (see
    `columns.auxiliary_features`), which give a one-feature table a flow that can bend."""

    columns: tuple[NumericColumn | CategoricalColumn, ...]

    @classmethod
    def fit(cls, table: pa.Table, kinds: dict[str, str], *, source: str, declared: Collection[str] = (),
            held: Collection[str] = ()) -> Preprocessor:
        """Learn each column's encoder from the rows of `table`; `kinds` maps name → kind, in order.
        A category column of numbers whose kind the user has not `declared` is ordered, and one
        of whole numbers scores the whole numbers between its levels too (`CategoricalColumn.inferred`).
        Category columns are then linked (`links.linked`; `held` ones among themselves), and numeric
        columns standardized at a category's level (`scales.scaled`)."""
        columns = [fit_encoder(table.column(name), name, kind, source) for name, kind in kinds.items()]
        columns = [column.inferred(table.num_rows) if isinstance(column, CategoricalColumn) and column.name not in declared
                   else column for column in columns]
        return cls(scaled(linked(columns, table, source, held), table, source))

    @property
    def auxiliary(self) -> int:
        """Auxiliary features: one when the columns make a single feature, else none."""
        return 1 if sum(column.width for column in self.columns) == 1 else 0

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def read_types(self) -> dict[str, pa.DataType]:
        """How to read the model's columns from CSV: numbers as float64, the other kinds as their type at fit."""
        return {column.name: pa.float64() if column.kind in ("continuous", "integer") else column.output_type
                for column in self.columns}

    @property
    def width(self) -> int:
        """How many flow features the columns become, auxiliary ones included."""
        return sum(column.width for column in self.columns) + self.auxiliary

    @property
    def dequantized(self) -> bool:
        """Whether training draws fresh noise each epoch: some column is discrete (a coarse grid
        included), may be missing, or the table has an auxiliary feature. A fine grid keeps the
        one draw of its first encoding: a step under a tenth of a standard deviation barely moves
        the values, and redrawing it cost every epoch an encoding of the table."""
        return bool(self.auxiliary) or any(
            not isinstance(column, NumericColumn) or column.discrete or column.missing_rate is not None
            for column in self.columns
        )

    def is_exact(self, table: pa.Table | pa.RecordBatch) -> bool:
        """True when scoring `table` needs no noise: all columns continuous (a fine rounded grid is
        scored at its values) and nothing missing."""
        return not self.auxiliary and all(
            isinstance(column, NumericColumn) and not column.discrete and column.missing_rate is None
            and table.column(column.name).null_count == 0
            for column in self.columns
        )

    def encode(
        self, table: pa.Table | pa.RecordBatch, noise: np.ndarray, *, source: str = "data", first_row: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Columns of `table` → features u (N, W) and log-weights (N,), given noise (N, W) in (0, 1)."""
        features, log_weight = [], np.zeros(table.num_rows)
        for column, span in zip(self.columns, self.spans):
            u, weight = column.encode(table.column(column.name), noise[:, span], source, first_row)
            features.append(u)
            log_weight += weight
        if self.auxiliary:
            a, weight = auxiliary_features(noise[:, self.width - self.auxiliary:])
            features.append(a)
            log_weight += weight
        return np.concatenate(features, axis=1), log_weight

    @property
    def spans(self) -> list[slice]:
        """Each column's features, as a slice of the W features."""
        stops = np.cumsum([column.width for column in self.columns])
        return [slice(int(stop) - column.width, int(stop)) for stop, column in zip(stops, self.columns)]

    def decode(self, u: np.ndarray, rng: np.random.Generator, decoded: Mapping[int, pa.Array] | None = None) -> pa.RecordBatch:
        """Features u (N, W) → a record batch with the original column names and types. `decoded`
        holds columns (by position) already decoded from these features, kept as they are (and
        drawing nothing from `rng`)."""
        decoded = decoded or {}
        arrays = [decoded[k] if k in decoded else column.decode(u[:, span], rng)
                  for k, (column, span) in enumerate(zip(self.columns, self.spans))]
        return pa.RecordBatch.from_arrays(arrays, names=self.names)

    def near_range(self, u: np.ndarray) -> np.ndarray:
        """Per row of features u (N, W): whether every numeric column decodes near the range seen
        at fit (`NumericColumn.near_range`)."""
        inside = np.ones(len(u), dtype=bool)
        for column, span in zip(self.columns, self.spans):
            if isinstance(column, NumericColumn):
                inside &= column.near_range(u[:, span])
        return inside

    def unseen(self, table: pa.Table | pa.RecordBatch, *, source: str = "data") -> dict[str, int]:
        """Per column, how many values of `table` were never seen at fit: categories, and numbers
        or dates outside the range seen at fit."""
        counts = {column.name: column.unseen(table.column(column.name), source) for column in self.columns}
        return {name: count for name, count in counts.items() if count}

    @property
    def front(self) -> FixedSteps | None:
        """The flow's fixed first steps (`encode.scales`, then `encode.links`), or None."""
        steps = tuple(step for step in (LevelScales.of(self.columns), LevelLinks.of(self.columns)) if step is not None)
        return FixedSteps(steps) if steps else None

    def past_front(self, u: np.ndarray, log_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features u (N, W) and log-weights (N,) → the features past the flow's fixed first steps
        (`front`) and the log-weights with their log-determinant, which the flow trains on."""
        front = self.front
        if front is None:
            return u, log_weight
        v, log_det = front.forward(u)
        return v, log_weight + log_det

    @property
    def categorical_names(self) -> set[str]:
        return {column.name for column in self.columns if isinstance(column, CategoricalColumn)}

    def noise_points(self, rows: int, points: int = NOISE_POINTS) -> list[np.ndarray]:
        """`points` deterministic noise arrays (rows, W): a rank-1 lattice, even in every feature."""
        shift = (np.arange(self.width) * _GOLDEN) % 1.0
        return [np.broadcast_to(((i + 0.5) / points + shift) % 1.0, (rows, self.width)) for i in range(points)]

    def _check_parents(self) -> None:
        """Raise a ValueError unless every parent is another category column, with a row (of shares,
        or of a numeric column's mean and std) for each of its levels (each pair of levels, with a
        second parent), and following parents never comes back to a column."""
        by_name = {column.name: column for column in self.columns}
        for column in self.columns:
            parents = [by_name.get(name) for name in column.parents]
            if not parents:
                continue
            if not all(isinstance(parent, CategoricalColumn) and parent is not column for parent in parents) or \
                    len(column.given_parent) != math.prod(len(parent.probabilities) for parent in parents):
                raise ValueError(f"column {column.name!r} is linked to {' and '.join(column.parents)!r}, "
                                 "which are not category columns of as many levels as it has rows given them")
        done: set[str] = set()

        def acyclic(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ValueError(f"column {name!r} is linked in a cycle")
            if name not in done:
                for parent in by_name[name].parents:
                    acyclic(parent, path + (name,))
                done.add(name)

        for column in self.columns:
            acyclic(column.name, ())

    def to_json(self) -> list[dict]:
        return [column.to_json() for column in self.columns]

    @classmethod
    def from_json(cls, data: Sequence[dict]) -> Preprocessor:
        if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
            raise BundleError("the manifest is malformed: its columns are not a list of column records")
        try:
            preprocessor = cls(tuple(encoder_from_json(entry) for entry in data))
            preprocessor._check_parents()
            return preprocessor
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise BundleError(f"the manifest is malformed: its columns are invalid ({type(error).__name__}: {error})") from None
