"""The encoder of a categorical or boolean column (see `columns` for how encoders work)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.encode.dequantize import Levels, integrated_out
from flowcli.errors import DataError
from flowcli.table.schema import MAX_LEVELS
from flowcli.table.values import arrow_type, as_numpy, missing_mask, plain_values, type_name

MAX_RARE_KEPT = 1_000  # rare values kept in the bundle to sample "other" from
MAX_GAPS = 1_000  # whole-number levels with more unseen numbers between them get no share for them


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical or boolean column: levels with frequencies, one feature (see `Levels`).

    Missing values at fit are a level of their own (None). With more than MAX_LEVELS levels,
    the rare ones share an "other" level (the last probability), scored as its frequency over
    the number of rare values and sampled from up to MAX_RARE_KEPT of them; then any value
    outside the kept levels scores as "other". Otherwise an unseen value has probability zero,
    a log-likelihood of −inf; except in a column of whole-number levels that was not declared
    categorical (`inferred`), where a whole number inside their range scores as one of `gaps`
    such numbers sharing `gap_share`, add-one smoothing's share, the other columns as they are.
    """

    name: str
    kind: str  # "categorical" or "boolean"
    dtype: str
    levels: list  # JSON values, sorted; None is the missing level
    probabilities: list[float]  # one per level, plus one for "other" when `rare` is not empty
    rare: list = field(default_factory=list)  # some of the values folded into "other"
    rare_count: int = 0  # how many distinct values "other" stands for
    gaps: int = 0  # whole numbers inside the range of integer levels never seen at fit (format 8)
    gap_share: float = 0.0  # the probability they share, evenly; the levels keep 1 − gap_share
    parent: str | None = None  # the category column its level shares depend on (see `encode.links`; format 11)
    # (parent's levels [× second parent's], these levels): shares given each parent level, or each
    # pair of levels, row j * P2 + j2, when a second parent joins (format 12)
    given_parent: list[list[float]] | None = None
    second_parent: str | None = None
    ordered: bool = False  # its levels are numbers whose order means something: its kind was inferred (format 14)

    @property
    def parents(self) -> tuple[str, ...]:
        """The columns its level shares depend on, first parent first (see `encode.links`)."""
        return tuple(name for name in (self.parent, self.second_parent) if name is not None)

    width = 1

    @property
    def output_type(self) -> pa.DataType:
        return arrow_type(self.dtype)

    @classmethod
    def fit(cls, values: pa.ChunkedArray, name: str, kind: str, source: str) -> CategoricalColumn:
        counts = pc.value_counts(plain_values(values))
        levels, frequencies = counts.field("values").to_pylist(), counts.field("counts").to_numpy()
        by_count = np.argsort(-frequencies, kind="stable")
        kept, folded = by_count[: MAX_LEVELS - 1], by_count[MAX_LEVELS - 1:]
        if len(levels) <= MAX_LEVELS:
            kept, folded = by_count, by_count[:0]
        kept = sorted(kept, key=lambda i: _sort_key(levels[i]))
        shares = frequencies[kept] / len(values)
        if len(folded):
            shares = np.append(shares, frequencies[folded].sum() / len(values))
        return cls(name, kind, type_name(values), [levels[i] for i in kept], shares.tolist(),
                   [levels[i] for i in folded[:MAX_RARE_KEPT]], len(folded))

    def inferred(self, rows: int) -> CategoricalColumn:
        """This column when its kind was inferred, not declared: a category of numbers (a 1-10
        scale) is `ordered`, and one of whole numbers gives those inside the range of its levels
        that were never seen at fit a share of 1 / (rows + gaps) each (a 7 that no row had)."""
        if self.kind != "categorical" or not _holds_numbers(self.dtype):
            return self
        column = replace(self, ordered=True)
        numbers = [level for level in self.levels if level is not None]
        if self.rare or not all(isinstance(level, int) for level in numbers) or len(numbers) < 2:
            return column
        gaps = max(numbers) - min(numbers) + 1 - len(numbers)
        if not 0 < gaps <= MAX_GAPS:
            return column
        return replace(column, gaps=gaps, gap_share=gaps / (rows + gaps))

    @property
    def missing_rate(self) -> float | None:
        """P(missing) at fit, None where no value was missing (as `NumericColumn.missing_rate`)."""
        return self.probabilities[self.levels.index(None)] if None in self.levels else None

    def numbers(self, values: pa.ChunkedArray | pa.Array, source: str) -> np.ndarray:
        """The values of a column of numbers as float64 (N,), NaN where missing (as `NumericColumn.numbers`)."""
        return as_numpy(pc.cast(plain_values(values), pa.float64(), safe=False), missing=np.nan)

    def gap_rows(self, values: pa.ChunkedArray | pa.Array, source: str) -> np.ndarray:
        """Which rows (N,) hold a whole number in one of the column's gaps."""
        if not self.gaps:
            return np.zeros(len(values), bool)
        numbers = [level for level in self.levels if level is not None]
        x = self.numbers(values, source)
        with np.errstate(invalid="ignore"):
            inside = (x == np.round(x)) & (x >= min(numbers)) & (x <= max(numbers))
        return inside & (self.level_index(values, source) == -1)

    @property
    def _other(self) -> int | None:
        """The index of the "other" level, or None when nothing was folded."""
        return len(self.levels) if self.rare else None

    def level_index(self, values: pa.ChunkedArray | pa.Array, source: str) -> np.ndarray:
        """Level index per row: −1 for an unseen value, −2 for a missing value with no level."""
        values = plain_values(values)
        level_type = arrow_type(self.dtype)
        if values.type != level_type:
            try:
                values = pc.cast(values, level_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(
                    f"{source}: column {self.name!r} holds {values.type} values, which are not its {self.kind} "
                    f"values of type {level_type}"
                ) from None
        present = np.array([i for i, level in enumerate(self.levels) if level is not None])
        value_set = pa.array([self.levels[i] for i in present], type=level_type)
        position = as_numpy(pc.index_in(values, value_set=value_set), missing=-1)
        index = np.where(position >= 0, present[np.maximum(position, 0)], -1 if self._other is None else self._other)
        index[missing_mask(values)] = self.levels.index(None) if None in self.levels else -2
        return index

    def encode(self, values: pa.ChunkedArray | pa.Array, noise: np.ndarray, source: str, first_row: int):
        index = self.level_index(values, source)
        missing = index == -2
        g, log_weight = Levels(np.asarray(self.probabilities)).encode(np.where(missing, 0, index), noise[:, 0])
        if self._other is not None:
            log_weight = np.where(index == self._other, log_weight - math.log(self.rare_count), log_weight)
        g[missing], log_weight[missing] = integrated_out(noise[missing, 0])
        return g[:, None], log_weight

    def unseen(self, values: pa.ChunkedArray | pa.Array, source: str) -> int:
        """How many values were never seen at fit, and so have probability zero (a whole number in
        the column's gaps has its share, and is not counted)."""
        return int(np.count_nonzero((self.level_index(values, source) == -1) & ~self.gap_rows(values, source)))

    def decode(self, u: np.ndarray, rng: np.random.Generator) -> pa.Array:
        """Features (N, 1) → values (N,): each row's level, and for "other" one of the rare values
        kept, drawn at random (taken from one array of levels then rare values: a list of N Python
        values cost a third of sampling a table of categories)."""
        index = Levels(np.asarray(self.probabilities)).decode(u[:, 0])
        if self._other is not None:
            other = np.flatnonzero(index == self._other)
            index[other] = len(self.levels) + rng.integers(0, len(self.rare), len(other))
        return pa.array(self.levels + self.rare, type=self.output_type).take(pa.array(index))

    def to_json(self) -> dict:
        data = {"name": self.name, "kind": self.kind, "dtype": self.dtype, "levels": self.levels,
                "probabilities": self.probabilities}
        if self.rare:
            data.update(rare=self.rare, rare_count=self.rare_count)
        if self.gaps:
            data.update(gaps=self.gaps, gap_share=self.gap_share)
        if self.parent is not None:
            data.update(parent=self.parent, given_parent=self.given_parent)
        if self.second_parent is not None:
            data.update(second_parent=self.second_parent)
        if self.ordered:
            data.update(ordered=True)
        return data

    @classmethod
    def from_json(cls, data: dict) -> CategoricalColumn:
        column = cls(str(data["name"]), str(data["kind"]), str(data["dtype"]), list(data["levels"]),
                     [float(p) for p in data["probabilities"]], list(data.get("rare", [])), int(data.get("rare_count", 0)),
                     int(data.get("gaps", 0)), float(data.get("gap_share", 0.0)), data.get("parent"),
                     [[float(p) for p in row] for row in data["given_parent"]] if "given_parent" in data else None,
                     data.get("second_parent"), data.get("ordered", False))
        if (column.parent is None) != (column.given_parent is None) or not isinstance(column.parent, str | None):
            raise ValueError(f"column {column.name!r} has a parent without shares given it, or shares without a parent")
        if not isinstance(column.second_parent, str | None) or (column.second_parent is not None and column.parent is None):
            raise ValueError(f"column {column.name!r} has a second parent without a first")
        for row in column.given_parent or []:
            if len(row) != len(column.probabilities) or min(row) <= 0 or abs(sum(row) - 1) > 1e-6:
                raise ValueError(f"column {column.name!r} has invalid level shares given its parent")
        if type(column.ordered) is not bool or (column.ordered and (column.kind != "categorical" or not _holds_numbers(column.dtype))):
            raise ValueError(f"column {column.name!r} is marked ordered, but its levels are not numbers")
        if column.gaps < 0 or not 0 <= column.gap_share < 1 or bool(column.gaps) != bool(column.gap_share):
            raise ValueError(f"column {column.name!r} has an invalid share for its gaps")
        p = np.asarray(column.probabilities)
        if len(p) != len(column.levels) + bool(column.rare) or not len(p) or np.any(p <= 0) or abs(p.sum() - 1) > 1e-6:
            raise ValueError(f"column {column.name!r} has invalid level probabilities")
        if column.rare and column.rare_count < len(column.rare):
            raise ValueError(f"column {column.name!r} has an invalid rare-level count")
        return column


def _holds_numbers(dtype: str) -> bool:
    """Whether a column of arrow type `dtype` (str(type)) holds numbers."""
    level_type = arrow_type(dtype)
    return pa.types.is_integer(level_type) or pa.types.is_floating(level_type)


def _sort_key(value) -> tuple:
    return (value is None, str(type(value)), value if value is not None else 0)
