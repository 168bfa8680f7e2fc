"""What a user fixes: a value, a range, or a set of categories per column; parsed and checked.

`--given` expressions: `col=value`, `col=a|b|c` (categories), `col>=v`, `col>v`, `col<=v`,
`col<v` (numbers, dates, and categories whose levels are numbers); several on one column
intersect. From Python, `given` is a dict: a value, a list of values, or a dict of bounds such
as {">=": 30, "<": 65}. Every condition is checked against the model: the column, the category,
the range seen at fit, an empty range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from flowcli.encode.columns import CategoricalColumn, NumericColumn
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import DataError
from flowcli.table.values import numeric_values

EXPRESSION = re.compile(r"^\s*(?P<column>[^<>=]+?)\s*(?P<operator>>=|<=|=|<|>)\s*(?P<value>.*?)\s*$")
BOUNDS = {">=", ">", "<=", "<"}


@dataclass
class Condition:
    """One column's condition: `levels` (allowed level indices of a category column), or a
    numeric `value`, or bounds in the column's units (days from its origin for datetimes)."""

    index: int  # the column's position among the model's columns
    levels: list[int] | None = None
    value: Any = None  # an equality on a number or date column, as the user wrote it
    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True
    text: list[str] = field(default_factory=list)  # the conditions as given, for messages

    def admits(self, x: np.ndarray) -> np.ndarray:
        """Which decoded values x (N,) of a ranged number column meet the bounds."""
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above & below


def parse_expressions(expressions: list[str]) -> dict[str, Any]:
    """`--given` expressions → the `given` dict of the Python API."""
    given: dict[str, Any] = {}
    for expression in expressions:
        match = EXPRESSION.match(expression)
        if match is None or not match["value"]:
            raise DataError(f"--given {expression!r} is not a condition; write col=value, col=a|b, col>=v or col<v")
        column, operator, value = match["column"], match["operator"], match["value"]
        if operator == "=":
            if column in given:
                raise DataError(f"--given {expression!r}: column {column!r} is already fixed; give each value once")
            given[column] = value.split("|") if "|" in value else value
        else:
            bounds = given.setdefault(column, {})
            if not isinstance(bounds, dict):
                raise DataError(f"--given {expression!r}: column {column!r} is already fixed to a value")
            bounds[operator] = value
    return given


def resolve(given: dict[str, Any], preprocessor: Preprocessor, left_out: dict[str, str]) -> list[Condition]:
    """The conditions of `given` on the model's columns, checked: a DataError names the column
    and says what it takes."""
    if not isinstance(given, dict) or not given:
        raise DataError("given must name at least one column, as {'column': value}")
    names = preprocessor.names
    conditions = []
    for name, wanted in given.items():
        _require_column(name, preprocessor, left_out)
        column = preprocessor.columns[names.index(name)]
        condition = Condition(names.index(name))
        if isinstance(column, CategoricalColumn):
            _levels(condition, column, wanted)
        else:
            _numbers(condition, column, wanted)
        conditions.append(condition)
    return conditions


def _levels(condition: Condition, column: CategoricalColumn, wanted: Any) -> None:
    """A category column: a value, a list of values, or bounds on levels that are numbers."""
    if isinstance(wanted, dict):
        numbers = [level for level in column.levels if isinstance(level, (int, float)) and not isinstance(level, bool)]
        if len(numbers) < len([level for level in column.levels if level is not None]):
            raise DataError(f"--given: column {column.name!r} holds categories, not numbers; give col=a|b instead of a range")
        bounds = Condition(condition.index)
        _bounds(bounds, column.name, wanted, lambda text: _number(column.name, text))
        condition.levels = [k for k, level in enumerate(column.levels) if level in numbers and bounds.admits(np.array([level]))[0]]
        if not condition.levels:
            raise DataError(f"--given: no level of column {column.name!r} lies in {_range_text(bounds)}; "
                            f"its levels are {_listed(column.levels)}")
        return
    values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
    condition.levels = sorted({_level(column, value) for value in values})


def _level(column: CategoricalColumn, value: Any) -> int:
    """The index of the level `value` names (a value of the level's type, or its text)."""
    for k, level in enumerate(column.levels):
        if _matches(level, value):
            return k
    raise DataError(f"--given: column {column.name!r} had no category {value!r} at fit; "
                    f"its categories are {_listed(column.levels)}")


def _numbers(condition: Condition, column: NumericColumn, wanted: Any) -> None:
    """A number or date column: one value, or bounds; within the range seen at fit."""
    def units(value: Any) -> float:
        if column.kind == "datetime":
            array = pa.array([value]) if not isinstance(value, str) else pa.array([value.strip()], pa.string())
            return float(column.numbers(array, "--given")[0])
        return _number(column.name, value)

    if isinstance(wanted, (list, tuple, set)):
        raise DataError(f"--given: column {column.name!r} holds {column.kind} values; give one value or a range, not a set")
    if isinstance(wanted, dict):
        _bounds(condition, column.name, wanted, units)
        if condition.low > column.high or condition.high < column.low:
            raise DataError(f"--given: {_range_text(condition)} on column {column.name!r} lies outside the range "
                            f"seen at fit, [{column.low:g}, {column.high:g}]")
        return
    x = units(wanted)
    if column.kind == "integer" and x != math.floor(x):
        raise DataError(f"--given: column {column.name!r} holds whole numbers, not {wanted!r}")
    if not column.low <= x <= column.high:
        raise DataError(f"--given: {column.name}={wanted} lies outside the range seen at fit, "
                        f"[{column.low:g}, {column.high:g}]{' (days from the first date)' * (column.kind == 'datetime')}")
    condition.value = wanted if column.kind == "datetime" else x


def _bounds(condition: Condition, name: str, bounds: dict, units) -> None:
    for operator, value in bounds.items():
        if operator not in BOUNDS:
            raise DataError(f"--given: {operator!r} on column {name!r} is not a bound; use >=, >, <= or <")
        x = units(value)
        if operator.startswith(">") and (x > condition.low or (x == condition.low and operator == ">")):
            condition.low, condition.low_closed = x, operator == ">="  # the bounds intersect: the stricter holds
        elif operator.startswith("<") and (x < condition.high or (x == condition.high and operator == "<")):
            condition.high, condition.high_closed = x, operator == "<="
    if condition.low > condition.high or (condition.low == condition.high and not (condition.low_closed and condition.high_closed)):
        raise DataError(f"--given: the range {_range_text(condition)} on column {name!r} is empty")


def _number(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"--given: column {name!r} holds numbers, not {value!r}") from None
    if not math.isfinite(x):
        raise DataError(f"--given: column {name!r} needs a finite number, not {value!r}")
    return x


def _matches(level: Any, value: Any) -> bool:
    """Whether `value`, or its text as typed after --given, names `level`: true/false in any
    case for booleans, 3 or 3.0 for a number."""
    if level is None or not isinstance(value, str):
        return level is not None and isinstance(level, bool) == isinstance(value, bool) and level == value
    text = value.strip()
    if isinstance(level, bool):
        return text.lower() == str(level).lower()
    if isinstance(level, (int, float)):
        try:
            return float(text) == level
        except ValueError:
            return False
    return str(level) == text


def _range_text(condition: Condition) -> str:
    low = "(-inf" if condition.low == -math.inf else f"{'[' if condition.low_closed else '('}{condition.low:g}"
    high = "inf)" if condition.high == math.inf else f"{condition.high:g}{']' if condition.high_closed else ')'}"
    return f"{low}, {high}"


def _listed(values: list) -> str:
    shown = ", ".join(repr(value) for value in values[:12])
    return shown + (f", … ({len(values)} in all)" if len(values) > 12 else "")


def fixed_values(conditions: list[Condition], preprocessor: Preprocessor) -> tuple[pa.Table | None, list[Condition]]:
    """The equalities on number and date columns as a one-row table (the values every row keeps),
    and the rest: sets of categories and ranges."""
    fixed = [condition for condition in conditions if condition.value is not None]
    rest = [condition for condition in conditions if condition.value is None]
    if not fixed:
        return None, rest
    arrays = {preprocessor.columns[c.index].name: pa.array([c.value]) for c in fixed}
    return pa.table(arrays), rest


def given_rows(table: pa.Table | pa.RecordBatch, preprocessor: Preprocessor, source: str) -> pa.Table:
    """A table of conditions, one row per output row (a blank cell leaves its column free), checked:
    its columns must be the model's, its categories seen and its numbers within the range seen at fit."""
    table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
    names = preprocessor.names
    strangers = [name for name in table.schema.names if name not in names]
    if strangers or not table.num_columns:
        raise DataError(f"{source}: {'column ' + _listed(strangers) + ' is' if strangers else 'no column is'} not "
                        f"one of the model's, {_listed(names)}; a given table holds only columns to condition on")
    for name in table.schema.names:
        column = preprocessor.columns[names.index(name)]
        values = table.column(name)
        if isinstance(column, NumericColumn) and column.kind == "integer":
            x = numeric_values(values, "integer", name=name, source=source)
            if np.any(x[~np.isnan(x)] % 1):
                raise DataError(f"{source}: column {name!r} holds whole numbers; its conditions must be whole numbers too")
        gaps = isinstance(column, CategoricalColumn) and column.gap_rows(values, source).any()
        if gaps or column.unseen(values, source):
            seen = (f"categories {_listed(column.levels)}" if isinstance(column, CategoricalColumn)
                    else f"range [{column.low:g}, {column.high:g}]")
            raise DataError(f"{source}: column {name!r} holds values the model never saw at fit; it knows the {seen}")
    return table


def given_columns(names: list[str], preprocessor: Preprocessor, left_out: dict[str, str]) -> list[str]:
    """The columns `score --given` conditions on, checked: the model's, and not all of them."""
    for name in names:
        _require_column(name, preprocessor, left_out)
    if set(names) >= set(preprocessor.names):
        raise DataError("--given names every column of the model; leave at least one to score")
    return list(dict.fromkeys(names))


def _require_column(name: str, preprocessor: Preprocessor, left_out: dict[str, str]) -> None:
    if name not in preprocessor.names:
        why = f"it was left out at fit ({left_out[name]})" if name in left_out else f"the model's columns are {_listed(preprocessor.names)}"
        raise DataError(f"--given: no column {name!r} in the model; {why}")


def admitted(decoded: Mapping[int, pa.Array], conditions: list[Condition], preprocessor: Preprocessor, rows: int) -> np.ndarray:
    """Which of `rows` rows (N,) meet every condition (sets of categories and ranges), from the
    decoded values of the columns the conditions name, by position."""
    keep = np.ones(rows, bool)
    for condition in conditions:
        column, values = preprocessor.columns[condition.index], decoded[condition.index]
        if isinstance(column, CategoricalColumn):
            keep &= np.isin(column.level_index(values, "sample"), condition.levels)
        else:
            x = column.numbers(values, "sample")
            with np.errstate(invalid="ignore"):
                keep &= condition.admits(x)
    return keep
