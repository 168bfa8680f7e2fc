"""Column values: text to numbers and dates with row-precise errors, and arrow types by name.

Shared by column inference (`schema`) and the encoders; pyarrow and numpy only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.errors import DataError

# A decimal or scientific number, as pyarrow's CSV reader would accept it.
NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$"
_DAY_UNITS = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def first_non_number(values: pa.Array | pa.ChunkedArray) -> tuple[int, str] | None:
    """The 0-based row and text of the first string in `values` that is not a number.

    Nulls and blank strings are missing values, not words, so they are skipped here.
    """
    is_number = pc.match_substring_regex(values, NUMBER, ignore_case=True)
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


def parse_numbers(values: pa.Array | pa.ChunkedArray, name: str, source: str, first_row: int) -> pa.Array:
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


def plain_values(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Values as flowcli keeps levels: dictionaries decoded (pandas categories), decimals and
    half floats as float64, and NaN as missing."""
    if pa.types.is_dictionary(values.type):
        values = pc.cast(values, values.type.value_type)
    if pa.types.is_decimal(values.type) or pa.types.is_float16(values.type):
        values = pc.cast(values, pa.float64())
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    return values


def mostly_numbers(values: pa.ChunkedArray) -> bool:
    """True when at least half the non-blank strings are numbers: a numeric column with typos."""
    numbers = pc.sum(pc.match_substring_regex(values, NUMBER, ignore_case=True)).as_py() or 0
    present = pc.sum(pc.invert(pc.match_substring_regex(values, r"^\s*$"))).as_py() or 0
    return present > 0 and numbers >= 0.5 * present


def is_number_type(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def numeric_values(
    values: pa.ChunkedArray | pa.Array, kind: str, *, name: str, source: str, first_row: int = 0,
    origin: int = 0, output_type: pa.DataType | None = None,
) -> np.ndarray:
    """A numeric or datetime column as float64 (N,); NaN where missing.

    Datetimes count days from `origin`, a tick of `output_type`'s unit (the type at fit).
    """
    if pa.types.is_dictionary(values.type):
        values = plain_values(values)
    if kind == "datetime":
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            values = parse_datetimes(values, name, source, first_row)  # so that the unit below is the times'
        ticks, missing = datetime_ticks(values, output_type, name=name, source=source, first_row=first_row)
        return np.where(missing, np.nan, (ticks - origin) / ticks_per_day(output_type or _datetime_type(values)))
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = parse_numbers(values, name, source, first_row)
    elif pa.types.is_boolean(values.type) or not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_decimal(values.type)):
        raise DataError(f"{source}: column {name!r} has type {values.type}; the model needs numbers there")
    x = as_numpy(pc.cast(values, pa.float64(), safe=False), missing=np.nan)  # ints past 2**53 round
    infinite = np.isinf(x)
    if infinite.any():
        row = first_row + int(np.argmax(infinite)) + 1
        raise DataError(
            f"{source}: column {name!r} holds {int(infinite.sum())} infinite value(s), the first in row {row}; "
            "replace them or leave the cells empty"
        )
    return x


def datetime_ticks(
    values: pa.ChunkedArray | pa.Array, output_type: pa.DataType | None, *, name: str, source: str, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Dates or times as int64 ticks of `output_type`'s unit (default: their own), and the missing mask."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = parse_datetimes(values, name, source, first_row)
    if not (pa.types.is_timestamp(values.type) or pa.types.is_date(values.type)):
        raise DataError(f"{source}: column {name!r} has type {values.type}; the model needs dates or times there")
    target = output_type or _datetime_type(values)
    values = pc.cast(values, target)
    integers = pc.cast(values, pa.int32() if pa.types.is_date(target) else pa.int64())
    return as_numpy(integers, missing=0).astype(np.int64), missing_mask(values)


def as_numpy(values: pa.ChunkedArray | pa.Array, *, missing: float) -> np.ndarray:
    """A column of a fixed-width number type as a numpy array (N,), `missing` where null.

    Read from the buffers: pyarrow's `to_numpy` imports pandas on first use, a tenth of a
    second of every `flowcli score`."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    dtype = np.dtype(array.type.to_pandas_dtype())
    if not len(array):
        return np.empty(0, dtype)
    x = np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)
    return np.where(missing_mask(array), missing, x) if array.null_count else x


def missing_mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where `values` is null, as a numpy bool array (N,), read from the validity bits."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not array.null_count:
        return np.zeros(len(array), bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), bitorder="little")
    return bits[array.offset:array.offset + len(array)] == 0


def _datetime_type(values: pa.ChunkedArray | pa.Array) -> pa.DataType:
    return pa.date32() if pa.types.is_date(values.type) else values.type


def type_name(values: pa.ChunkedArray | pa.Array) -> str:
    """The name of the values' arrow type, dictionaries decoded: what a bundle records."""
    return str(plain_values(values[:0]).type)


def datetime_unit(values: pa.ChunkedArray | pa.Array) -> pa.DataType:
    """The type in whose ticks `datetime_ticks(values, None)` counts: text counts as it parses."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return datetime_text_type(values) or pa.timestamp("us")
    return _datetime_type(values)


def ticks_per_day(target: pa.DataType) -> int:
    return 1 if pa.types.is_date(target) else _DAY_UNITS[target.unit]


def datetime_text_type(values: pa.ChunkedArray | pa.Array) -> pa.DataType | None:
    """The timestamp type that every value of ISO 8601 text parses to: naive, or UTC when the
    text names its zone ('Z', '+01:00'); None when some value is not such text."""
    parsed = _iso_timestamps(values)
    return None if parsed is None else parsed.type


def _iso_timestamps(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array | None:
    """ISO 8601 text (blanks as nulls) as naive timestamps, or as UTC ones when the text names its
    zone; None when some value is not such text."""
    values = _blanks_as_nulls(values)
    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return pc.cast(values, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return None


def parse_datetimes(values: pa.ChunkedArray | pa.Array, name: str, source: str, first_row: int) -> pa.Array:
    """ISO 8601 text to timestamps; a value that is not one fails with its row (1-based)."""
    parsed = _iso_timestamps(values)
    if parsed is not None:
        return parsed
    for row, text in enumerate(values.to_pylist()):
        if text is None or not text.strip():
            continue
        if _iso_timestamps(pa.array([text])) is None:
            raise DataError(
                f"{source}: column {name!r} holds {text!r} in row {first_row + row + 1}, which is not a date or time "
                "(write it as ISO 8601, e.g. 2024-05-31 or 2024-05-31T12:00:00)"
            )
    raise DataError(f"{source}: column {name!r} mixes times that name their zone ('Z', '+01:00') with times "
                    "that do not; write them all one way")


def _blanks_as_nulls(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.if_else(pc.equal(pc.utf8_trim_whitespace(values), ""), pa.scalar(None, values.type), values)


def to_arrow(x: np.ndarray, target: pa.DataType, missing: np.ndarray | None) -> pa.Array:
    """Decoded numbers (N,) as an arrow array of `target`, with nulls where missing."""
    return from_numpy(x.astype(np.int64) if pa.types.is_integer(target) else x, missing).cast(target)


def from_numpy(x: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """A numeric numpy array (N,) as an arrow array of the same type, null where `missing`.

    Built on the array's buffer, for `as_numpy`'s reason: `pa.array` imports pandas."""
    x = np.ascontiguousarray(x)
    validity = None if missing is None or not missing.any() else pa.py_buffer(np.packbits(~missing, bitorder="little"))
    null_count = 0 if validity is None else int(missing.sum())
    return pa.Array.from_buffers(pa.from_numpy_dtype(x.dtype), len(x), [validity, pa.py_buffer(x)], null_count=null_count)


def arrow_type(dtype: str) -> pa.DataType:
    """The arrow type named by str(type), for the types flowcli writes back."""
    if dtype.startswith("timestamp["):
        unit, _, tz = dtype[len("timestamp["):-1].partition(", tz=")
        return pa.timestamp(unit, tz or None)
    if dtype.startswith("decimal"):
        return pa.float64()
    aliases = {"date32[day]": pa.date32(), "date64[ms]": pa.date64(), "large_string": pa.large_string()}
    return aliases.get(dtype) or pa.type_for_alias(dtype)
