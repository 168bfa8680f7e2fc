"""Which columns of a table a model uses, and of what kind each is.

Kinds: continuous, integer, categorical, boolean, datetime. Inference follows the column's
type and values; the user can override it per column. Every check names the column and,
where it can, the first offending row (1-based, header excluded), so the user knows what to fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.errors import DataError
from flowcli.table.values import (
    NUMBER,
    as_numpy,
    datetime_text_type,
    first_non_number,
    is_number_type,
    mostly_numbers,
    plain_values,
)

KINDS = ("continuous", "integer", "categorical", "boolean", "datetime")
FEW_LEVELS = 10  # a numeric column with at most this many distinct values is categorical
MAX_LEVELS = 1_000  # a categorical column keeps this many levels; beyond, rare ones share one "other" level
_ID_MIN_ROWS = 20  # below this, all-distinct text is not evidence of an identifier


@dataclass(frozen=True)
class Selection:
    """The columns a model will use with their kinds, in order, and those left out with why."""

    kinds: dict[str, str]
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return list(self.kinds)


def select_columns(
    table: pa.Table,
    requested: Sequence[str] | None = None,
    *,
    kinds: dict[str, str] | None = None,
    ignore: Sequence[str] = (),
    source: str,
) -> Selection:
    """The columns to model and their kinds: `requested` (default: all), less `ignore`.

    `kinds` overrides inference for the columns it names. Without `requested`, columns that
    cannot be modeled (identifiers, free text, entirely missing, unsupported types) are left
    out, for the caller to warn about; a requested column that cannot be modeled is an error.
    """
    kinds = dict(kinds or {})
    _reject_duplicate_names(table.column_names, source)
    for flag, names in (("--ignore", ignore), *((f"--{kind}", [n for n, k in kinds.items() if k == kind]) for kind in KINDS)):
        unknown = [name for name in names if name not in table.column_names]
        if unknown:
            raise DataError(f"{source}: {flag} names no column {_names(unknown)}; the table has {_names(table.column_names)}")
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has a header but no data rows; give rows to learn from")
    if requested is not None:
        _reject_duplicate_names(list(requested), "--columns")
        missing = [name for name in requested if name not in table.column_names]
        if missing:
            raise DataError(f"{source}: no column {_names(missing)}; the table has {_names(table.column_names)}")

    chosen, left_out = {}, {}
    for name in requested if requested is not None else table.column_names:
        if name in ignore:
            continue
        kind, reason = (kinds[name], None) if name in kinds else infer_kind(table.column(name), name, source,
                                                                            requested=requested is not None)
        if kind is not None:
            chosen[name] = kind
        elif requested is not None:
            raise DataError(f"{source}: column {name!r} {reason}; leave it out of --columns or name its kind, e.g. --categorical {name}")
        else:
            left_out[name] = reason
    if not chosen:
        raise DataError(f"{source}: no column that can be modeled (left out: {_reasons(left_out)}); give a table with numeric, categorical or date columns")
    return Selection(chosen, left_out)


def infer_kind(values: pa.ChunkedArray, name: str, source: str, *, requested: bool = False) -> tuple[str | None, str | None]:
    """(kind, None) for a column flowcli can model, or (None, why it is left out). A column the
    user `requested` by name is kept even when it looks like a row number."""
    values = plain_values(values)
    present = len(values) - values.null_count
    if present == 0:
        return None, "is entirely missing"
    if pa.types.is_boolean(values.type):
        return "boolean", None
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        return "datetime", None
    if is_number_type(values.type):
        if not requested and present == len(values) >= _ID_MIN_ROWS and _counts_rows(values):
            return None, "looks like a row number (a constant step in row order); keep it with --integer"
        # A few values are levels. Fitted as integers (with format 7's maps) digits ranked anomalies
        # at ROC AUC 0.778 against 0.878 as levels (bench/anomaly.py, 15 s, median of 3 seeds).
        if pc.count_distinct(values).as_py() <= FEW_LEVELS:
            return "categorical", None
        return ("integer" if pa.types.is_integer(values.type) else "continuous"), None
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        if mostly_numbers(values):
            bad = first_non_number(values)
            if bad is not None:
                if pc.count_distinct(values).as_py() <= FEW_LEVELS:
                    return "categorical", None  # grades '9' to '12' and 'other': levels, as a few numbers are
                number = pc.index(pc.match_substring_regex(values, NUMBER, ignore_case=True), True).as_py()
                raise DataError(
                    f"{source}: column {name!r} mixes numbers and text (e.g. {values[number].as_py()!r} in row "
                    f"{number + 1} and {bad[1]!r} in row {bad[0] + 1}); fix the text or pass --categorical {name}"
                )
            return "continuous", None
        if datetime_text_type(values) is not None:  # ISO 8601 text, as pandas leaves it
            return "datetime", None
        distinct = pc.count_distinct(values).as_py()
        if distinct == present and present >= _ID_MIN_ROWS:
            return None, "looks like an identifier (every value is distinct)"
        lengths = pc.utf8_length(values)
        if pc.mean(lengths).as_py() > 40 and distinct > present / 2:
            return None, "looks like free text"
        return "categorical", None
    return None, f"has type {values.type}, which flowcli cannot model"


def _counts_rows(values: pa.Array) -> bool:
    """Whether whole numbers rise by one constant step from row to row (1, 2, 3, … as an index)."""
    x = as_numpy(pc.cast(values, pa.float64(), safe=False), missing=np.nan)  # ints past 2**53 round
    steps = np.diff(x)
    return bool(len(steps) and steps[0] > 0 and np.all(steps == steps[0]) and np.all(x == np.round(x)))


def require_columns(available: Sequence[str], needed: Sequence[str], *, source: str) -> None:
    """Fail, naming them, when columns the model needs are missing from `available` or repeated."""
    _reject_duplicate_names([name for name in available if name in needed], source)
    missing = [name for name in needed if name not in available]
    if missing:
        raise DataError(
            f"{source}: missing column {_names(missing)}, which the model needs; it was fit on {_names(needed)}"
        )


def _reject_duplicate_names(names: Sequence[str], source: str) -> None:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise DataError(f"{source}: column name {_names(repeated)} appears more than once; rename the duplicates")


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _reasons(left_out: dict[str, str]) -> str:
    return "; ".join(f"{name!r} {reason}" for name, reason in left_out.items()) or "the table has no columns"
