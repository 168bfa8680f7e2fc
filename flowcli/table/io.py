"""Read and write tables as CSV or Parquet, from paths or '-' (stdin and stdout). No torch.

Tables travel as pyarrow record batches, so that score and sample stream in constant memory.
Errors from pyarrow become one `DataError` that names the file.
"""

from __future__ import annotations

import csv as python_csv
import io
import itertools
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc
import pyarrow.parquet as pq

from flowcli.errors import DataError, FlowcliError
from flowcli.parallel.threads import read_ahead
from flowcli.table.atomic import atomic_path
from flowcli.table.csv_reader import CSV_BLOCK_BYTES, check_readable, first_ragged_row, iter_csv, read_csv_table
from flowcli.table.dialect import CsvOptions, Dialect, not_utf8_message, sniff

FORMATS = ("csv", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Delimited text by any of its usual names is read as CSV, its dialect sniffed; written, it is .csv.
_INPUT_SUFFIX_FORMATS = {**_SUFFIX_FORMATS, **dict.fromkeys((".tsv", ".tab", ".psv", ".txt", ".dat"), "csv")}
_COMPRESSIONS = {".gz", ".bz2", ".zst", ".lz4"}
_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+)")


def table_format(location: str, format: str | None = None, *, output: bool = False) -> str:
    """'csv' or 'parquet': `format` when given, else the file suffix; stdin and stdout default to CSV."""
    if format is not None:
        if format not in FORMATS:
            raise DataError(f"--format {format!r} is not supported; use one of: {', '.join(FORMATS)}")
        return format
    if location == "-":
        return "csv"
    suffixes = [suffix.lower() for suffix in Path(location).suffixes]
    known = _SUFFIX_FORMATS if output else _INPUT_SUFFIX_FORMATS
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS and known.get(suffixes[-2]) == "csv":
        return "csv"
    if suffixes and suffixes[-1] in known:
        return known[suffixes[-1]]
    if output:
        raise DataError(f"{location}: unknown output format; name the file .csv or .parquet")
    raise DataError(f"{location}: unknown table format; name the file .csv, .tsv or .parquet, or pass --format")


def read_table(source: str, format: str | None = None, csv: CsvOptions | None = None) -> pa.Table:
    """Read a whole CSV (in its sniffed dialect, `csv` overriding it) or Parquet table from a path or '-'."""
    fmt = table_format(source, format)
    with _arrow_errors(source, csv):
        table = pq.read_table(_parquet_input(source)) if fmt == "parquet" else read_csv_table(source, csv)
        table.column_names  # decodes the header: a file that is not UTF-8 fails here, with its name
        return table


def to_ipc(table: pa.Table) -> bytes:
    """`table` in Arrow's IPC stream format."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    """A table from `to_ipc`'s bytes."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def iter_batches(
    source: str,
    format: str | None = None,
    *,
    batch_rows: int,
    column_types: dict[str, pa.DataType] | None = None,
    text: bool = False,
    row_groups: list[int] | None = None,
    csv_share: tuple[int, int] | None = None,
    csv: CsvOptions | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Open a table for streaming: its schema, and its rows in batches of at most `batch_rows`,
    read and parsed a few batches ahead in a background thread.

    CSV columns named in `column_types` are read as those types (empty cells as nulls); the
    others as text with `text`, else as the first rows suggest; `csv_share` = (r, R) parses
    only the pieces r, r + R, ... of the file (see `csv_reader.iter_csv`), whose rows' numbers in
    error messages then count from the share's start; `csv` overrides the sniffed dialect, which
    the schema carries in its metadata. Parquet keeps its own types, reads only
    `row_groups` when given, and from stdin it is read whole, since the format needs to seek.
    """
    with _arrow_errors(source, csv):
        if table_format(source, format) == "parquet":
            parquet = pq.ParquetFile(_parquet_input(source))
            parquet.schema_arrow.names  # decodes the names inside the guard
            schema, batches = parquet.schema_arrow, parquet.iter_batches(batch_size=batch_rows, row_groups=row_groups)
        else:
            schema, batches, _ = iter_csv(source, column_types or {}, text, csv_share or (0, 1), csv)
    return schema, _guarded(source, csv, read_ahead(_rebatched(batches, batch_rows)))


def parquet_row_groups(source: str) -> int | None:
    """How many row groups the Parquet file at `source` has; None for stdin, which is read once."""
    if source == "-":
        return None
    with _arrow_errors(source):
        return pq.ParquetFile(_parquet_input(source)).num_row_groups


def write_batches(
    destination: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    format: str | None = None,
    *,
    force: bool = False,
    inputs: Iterable[str] = (),
) -> int:
    """Write `batches` to a path (atomically: all or nothing) or to stdout ('-'); returns the rows.

    The first batch is computed before anything is opened, so an input that fails at once
    leaves no header behind. Each batch is written in a background thread while the next one
    is computed. If a later batch fails while writing to stdout, the error says that what
    stdout already holds is partial.
    """
    fmt = table_format(destination, format, output=True)
    batches = iter(batches)
    first = next(batches, None)
    rows = 0
    with ExitStack() as stack:
        if destination == "-":
            stream = sys.stdout.buffer
        else:
            temporary = stack.enter_context(atomic_path(Path(destination), force=force, inputs=inputs))
            stream = stack.enter_context(open(temporary, "wb"))
        try:
            with (pq.ParquetWriter(stream, schema) if fmt == "parquet" else _csv_writer(stream, schema) as writer,
                  ThreadPoolExecutor(1, thread_name_prefix="flowcli-write") as behind):
                written = None  # the write in flight: one at a time, so memory holds two batches
                try:
                    for batch in itertools.chain([first] if first is not None else [], batches):
                        if written is not None:
                            rows += written.result()
                        written = behind.submit(lambda batch=batch: writer.write_batch(batch) or batch.num_rows)
                finally:  # also when the next batch failed: what was handed over is written
                    if written is not None:
                        rows += written.result()
        except FlowcliError as error:
            if destination == "-" and rows:
                raise type(error)(f"{error} (stdout holds only the {rows:,} rows before it: partial output)") from None
            raise
        stream.flush()
    return rows


def _csv_writer(stream: BinaryIO, schema: pa.Schema) -> pa_csv.CSVWriter:
    """A CSV writer whose header quotes a name only when it must (pyarrow quotes every name)."""
    header = io.StringIO()
    python_csv.writer(header, lineterminator="\n").writerow(schema.names)
    stream.write(header.getvalue().encode())
    return pa_csv.CSVWriter(stream, schema, write_options=pa_csv.WriteOptions(include_header=False))


def _parquet_input(source: str):
    if source == "-":
        return pa.BufferReader(sys.stdin.buffer.read())
    check_readable(source)
    return source


def _rebatched(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of `batches` in batches of exactly `rows` (the last one fewer): batches small
    enough for memory to follow the batch size, and large enough to score on every core."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count >= rows:
            table = pa.Table.from_batches(held).combine_chunks()
            whole = count - count % rows
            yield from table.slice(0, whole).to_batches(max_chunksize=rows)
            held, count = table.slice(whole).to_batches(), count - whole
    if count:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]


def _guarded(source: str, csv: CsvOptions | None, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    with _arrow_errors(source, csv):
        yield from batches


@contextmanager
def _arrow_errors(source: str, csv: CsvOptions | None = None) -> Iterator[None]:
    """Turn pyarrow's read errors into one DataError that names the file and, when it can, the row."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise DataError(_describe_arrow_error(source, str(error), csv)) from None
    except UnicodeDecodeError:
        raise DataError(not_utf8_message(source)) from None
    except OSError as error:  # pyarrow reports a damaged Parquet file as an I/O error
        if isinstance(error, BrokenPipeError):
            raise
        raise DataError(_describe_arrow_error(source, str(error), csv)) from None


def _describe_arrow_error(source: str, message: str, csv: CsvOptions | None) -> str:
    lines = message.strip().splitlines()
    message = lines[0] if lines else "unreadable table"
    if message == "Empty CSV file":
        return f"{source}: the file is empty; give a table with a header row and data rows"
    if "straddling object" in message:
        return f"{source}: a row is longer than {CSV_BLOCK_BYTES >> 20} MiB, or a quoted field never ends; check the file's quoting"
    if "invalid UTF8" in message:
        return not_utf8_message(source)
    ragged = _RAGGED.search(message)
    if ragged and (row := first_ragged_row(source, _dialect_for_errors(source, csv))) is not None:
        expected, got = ragged.groups()
        return f"{source}: row {row} has {got} fields where the header has {expected}; fix that row or its quoting"
    # pyarrow quotes the offending bytes; keep the line printable and short.
    printable = "".join(char if char.isprintable() else "?" for char in message)
    if len(printable) > 160:
        printable = printable[:160] + "…"
    return f"{source}: cannot read the table: {printable}"


def _dialect_for_errors(source: str, csv: CsvOptions | None) -> Dialect | None:
    """The file's dialect, sniffed again quietly to find a ragged row; None when it cannot be."""
    try:
        with open(source, "rb") as handle:
            block = handle.read(1 << 16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sniff(block, csv or CsvOptions(), source, whole=len(block) < 1 << 16)
    except (OSError, FlowcliError):
        return None
