"""Which columns of a table a model uses, and how they become a float64 matrix.

Every check names the column and, where it can, the first offending row (1-based, header
excluded), so the user knows what to fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.errors import DataError

# A decimal or scientific number, as pyarrow's CSV reader would accept it.
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$"


@dataclass(frozen=True)
class Selection:
    """The columns a model will use, in order, and the columns left out with the reason why."""

    columns: list[str]
    left_out: dict[str, str] = field(default_factory=dict)


def first_non_number(values: pa.Array | pa.ChunkedArray) -> tuple[int, str] | None:
    """The 0-based row and text of the first string in `values` that is not a number.

    Nulls and blank strings are missing values, not words, so they are skipped here.
    """
    is_number = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
    is_blank = pc.match_substring_regex(values, r"^\s*$")
    bad = pc.and_(pc.invert(pc.or_kleene(is_number, is_blank)), pc.is_valid(values))
    if not pc.any(bad).as_py():
        return None
    row = pc.index(bad, True).as_py()
    return row, values[row].as_py()


def not_a_number(source: str, column: str, text: str, row: int | None) -> DataError:
    """The error for a word in a numeric column; `row` is 1-based, or None when unknown."""
    where = f" in row {row}" if row else ""
    return DataError(f"{source}: column {column!r} holds {text!r}{where}, which is not a number; fix or remove that value")


def select_columns(table: pa.Table, requested: Sequence[str] | None, *, source: str) -> Selection:
    """The numeric, non-constant columns of `table`, or exactly `requested` after checking them.

    Without `requested`, columns that are not numeric or are constant are left out (the caller
    warns); a column of numbers with a stray word in it is an error, since it was meant to count.
    """
    _reject_duplicate_names(table.column_names, source)
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has a header but no data rows; give rows to learn from")
    if requested is not None:
        _reject_duplicate_names(list(requested), "--columns")
        missing = [name for name in requested if name not in table.column_names]
        if missing:
            raise DataError(
                f"{source}: no column {_names(missing)}; the table has {_names(table.column_names)}"
            )
        for name in requested:
            reason = _unusable(table.column(name), name, source)
            if reason:
                raise DataError(f"{source}: column {name!r} {reason}; leave it out of --columns")
        return Selection(list(requested))

    columns, left_out = [], {}
    for name in table.column_names:
        reason = _unusable(table.column(name), name, source)
        if reason:
            left_out[name] = reason
        else:
            columns.append(name)
    if not columns:
        raise DataError(
            f"{source}: no usable numeric column (left out: {_reasons(left_out)}); "
            "give a table with numeric columns"
        )
    return Selection(columns, left_out)


def require_columns(available: Sequence[str], needed: Sequence[str], *, source: str) -> None:
    """Fail, naming them, when columns the model needs are not among `available`."""
    missing = [name for name in needed if name not in available]
    if missing:
        raise DataError(
            f"{source}: missing column {_names(missing)}, which the model needs; it was fit on {_names(needed)}"
        )


def to_matrix(
    data: pa.Table | pa.RecordBatch, columns: Sequence[str], *, source: str, first_row: int = 0
) -> np.ndarray:
    """The `columns` of `data` as a finite float64 matrix, shape (N, D).

    `first_row` is the 0-based position of `data`'s first row in the whole input, for messages.
    """
    require_columns(data.schema.names, columns, source=source)
    x = np.empty((data.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        x[:, j] = _as_float64(data.column(name), name, source, first_row)
    _reject_non_finite(x, columns, source, first_row)
    return x


def _unusable(values: pa.ChunkedArray, name: str, source: str) -> str | None:
    """Why a column cannot be modeled as continuous, or None when it can."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        if not _mostly_numbers(values):
            return "is not numeric"
        values = _parse_numbers(values, name, source, first_row=0)
    elif not _is_number_type(values.type):
        return f"has type {values.type}, which is not numeric"
    if values.null_count == len(values):
        return "is entirely missing"
    low, high = pc.min_max(values).values()
    if low.as_py() == high.as_py():
        return f"is constant ({low.as_py()!r} in every row), so it carries no information"
    return None


def _as_float64(values: pa.Array | pa.ChunkedArray, name: str, source: str, first_row: int) -> np.ndarray:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = _parse_numbers(values, name, source, first_row)
    elif not _is_number_type(values.type):
        raise DataError(f"{source}: column {name!r} has type {values.type}; the model needs numbers there")
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


def _parse_numbers(values: pa.Array | pa.ChunkedArray, name: str, source: str, first_row: int) -> pa.Array:
    """Text to float64; blanks become missing, and a word fails with its row (1-based)."""
    try:
        return pc.cast(values, pa.float64())  # the fast path: clean numbers
    except pa.ArrowInvalid:
        pass
    bad = first_non_number(values)
    if bad is not None:
        raise not_a_number(source, name, bad[1], first_row + bad[0] + 1)
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.cast(pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed), pa.float64())


def _reject_non_finite(x: np.ndarray, columns: Sequence[str], source: str, first_row: int) -> None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    bad_rows = bad.any(axis=1)
    per_column = bad.sum(axis=0)
    where = ", ".join(f"{columns[j]!r} ({per_column[j]})" for j in np.flatnonzero(per_column))
    first = first_row + int(np.argmax(bad_rows)) + 1
    raise DataError(
        f"{source}: {int(bad_rows.sum())} rows have missing, NaN or infinite values, first in row {first} "
        f"(per column: {where}); drop or fill those rows"
    )


def _mostly_numbers(values: pa.ChunkedArray) -> bool:
    """True when at least half the non-blank strings are numbers: a numeric column with typos."""
    numbers = pc.sum(pc.match_substring_regex(values, _NUMBER, ignore_case=True)).as_py() or 0
    present = pc.sum(pc.invert(pc.match_substring_regex(values, r"^\s*$"))).as_py() or 0
    return present > 0 and numbers >= 0.5 * present


def _is_number_type(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def _reject_duplicate_names(names: Sequence[str], source: str) -> None:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise DataError(f"{source}: column name {_names(repeated)} appears more than once; rename the duplicates")


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _reasons(left_out: dict[str, str]) -> str:
    return "; ".join(f"{name!r} {reason}" for name, reason in left_out.items()) or "the table has no columns"
