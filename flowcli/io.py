"""Read and write tables as CSV or Parquet, from paths or '-' (stdin and stdout). No torch.

Tables travel as pyarrow record batches, so that score and sample stream in constant memory.
Errors from pyarrow become one `DataError` that names the file.
"""

from __future__ import annotations

import csv as python_csv
import io
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from flowcli.atomic import atomic_path
from flowcli.errors import DataError
from flowcli.schema import first_non_number, not_a_number

FORMATS = ("csv", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = {".gz", ".bz2", ".zst", ".lz4"}
_CSV_BLOCK_BYTES = 4 << 20
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*CSV conversion error to \w+: invalid value '(.*)'", re.S)


def table_format(location: str, format: str | None = None) -> str:
    """'csv' or 'parquet': `format` when given, else the file suffix; stdin and stdout default to CSV."""
    if format is not None:
        if format not in FORMATS:
            raise DataError(f"--format {format!r} is not supported; use one of: {', '.join(FORMATS)}")
        return format
    if location == "-":
        return "csv"
    suffixes = [suffix.lower() for suffix in Path(location).suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS and suffixes[-2] == ".csv":
        return "csv"
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    raise DataError(f"{location}: unknown table format; name the file .csv or .parquet, or pass --format")


def read_table(source: str, format: str | None = None) -> pa.Table:
    """Read a whole CSV or Parquet table from a path or '-'."""
    fmt = table_format(source, format)
    with _arrow_errors(source):
        if fmt == "parquet":
            return pq.read_table(_parquet_input(source))
        return pa_csv.read_csv(_csv_input(source), read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES))


def iter_batches(
    source: str,
    format: str | None = None,
    *,
    batch_rows: int,
    numeric_columns: Sequence[str] = (),
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Open a table for streaming: its schema, and its rows in batches of about `batch_rows`.

    `numeric_columns` are read as float64 from CSV, so a stray word fails with a message that
    names the column. Parquet from stdin is read whole, since the format needs to seek.
    """
    fmt = table_format(source, format)
    with _arrow_errors(source):
        if fmt == "parquet":
            parquet = pq.ParquetFile(_parquet_input(source))
            return parquet.schema_arrow, _guarded(source, parquet.iter_batches(batch_size=batch_rows))
        convert = pa_csv.ConvertOptions(column_types={name: pa.float64() for name in numeric_columns})
        # About 40 bytes per row is a typical CSV width; the block size bounds memory either way.
        block_bytes = max(1 << 16, min(64 << 20, batch_rows * 40))
        reader = pa_csv.open_csv(
            _csv_input(source), read_options=pa_csv.ReadOptions(block_size=block_bytes), convert_options=convert
        )
        return reader.schema, _guarded(source, reader)


@contextmanager
def table_writer(
    destination: str,
    schema: pa.Schema,
    format: str | None = None,
    *,
    force: bool = False,
    inputs: Iterable[str] = (),
) -> Iterator[pa_csv.CSVWriter | pq.ParquetWriter]:
    """A writer of record batches to a path (atomically: all or nothing) or to stdout ('-')."""
    fmt = table_format(destination, format)
    with ExitStack() as stack:
        if destination == "-":
            stream = sys.stdout.buffer
        else:
            temporary = stack.enter_context(atomic_path(Path(destination), force=force, inputs=inputs))
            stream = stack.enter_context(open(temporary, "wb"))
        with pq.ParquetWriter(stream, schema) if fmt == "parquet" else _csv_writer(stream, schema) as writer:
            yield writer
        stream.flush()


def _csv_writer(stream: BinaryIO, schema: pa.Schema) -> pa_csv.CSVWriter:
    """A CSV writer whose header quotes a name only when it must (pyarrow quotes every name)."""
    header = io.StringIO()
    python_csv.writer(header, lineterminator="\n").writerow(schema.names)
    stream.write(header.getvalue().encode())
    return pa_csv.CSVWriter(stream, schema, write_options=pa_csv.WriteOptions(include_header=False))


def _csv_input(source: str):
    if source == "-":
        return pa.PythonFile(sys.stdin.buffer, mode="r")
    _check_readable(source)
    return source


def _parquet_input(source: str):
    if source == "-":
        return pa.BufferReader(sys.stdin.buffer.read())
    _check_readable(source)
    return source


def _check_readable(source: str) -> None:
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file")
    if path.is_dir():
        raise DataError(f"{source}: is a folder, not a table")
    if path.stat().st_size == 0:
        raise DataError(f"{source}: the file is empty; give a table with a header row and data rows")


def _guarded(source: str, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    with _arrow_errors(source):
        yield from batches


@contextmanager
def _arrow_errors(source: str) -> Iterator[None]:
    """Turn pyarrow's read errors into one DataError that names the file and, when it can, the row."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise DataError(_describe_arrow_error(source, str(error))) from None
    except UnicodeDecodeError:
        raise DataError(f"{source}: the file is not UTF-8 text; save it as UTF-8 CSV or as Parquet") from None


def _describe_arrow_error(source: str, message: str) -> str:
    message = message.strip().splitlines()[0] if message.strip() else "unreadable table"
    if message == "Empty CSV file":
        return f"{source}: the file is empty; give a table with a header row and data rows"
    conversion = _CONVERSION_ERROR.match(message)
    if conversion is None:
        return f"{source}: cannot read the table: {message}"
    index, value = int(conversion.group(1)), conversion.group(2)
    header = _csv_header(source)
    if header is None or index >= len(header):
        return str(not_a_number(source, f"#{index + 1}", value, None))
    return str(not_a_number(source, header[index], value, _first_non_number_row(source, header[index])))


def _csv_header(source: str) -> list[str] | None:
    if source == "-":
        return None
    try:
        with open(source, newline="", encoding="utf-8-sig") as handle:
            return next(python_csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, python_csv.Error):
        return None


def _first_non_number_row(source: str, column: str) -> int | None:
    """The 1-based data row (header excluded) of the first value in `column` that is not a number."""
    try:
        table = pa_csv.read_csv(
            source,
            convert_options=pa_csv.ConvertOptions(include_columns=[column], column_types={column: pa.string()}),
        )
    except pa.ArrowException:
        return None
    found = first_non_number(table.column(0))
    return None if found is None else found[0] + 1
