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
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.ipc
import pyarrow.parquet as pq

from flowcli.errors import DataError, FlowcliError
from flowcli.parallel.threads import read_ahead
from flowcli.table.atomic import atomic_path
from flowcli.table.values import parse_numbers

FORMATS = ("csv", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = {".gz", ".bz2", ".zst", ".lz4"}
_CSV_BLOCK_BYTES = 16 << 20  # the longest row `read_table` takes
# Quoted values may hold line breaks (spreadsheets write them); without this, one that straddles
# a block boundary breaks a valid file. It cost nothing measurable on 1,000,000 × 8 rows.
_CSV_PARSE = pa_csv.ParseOptions(newlines_in_values=True)
# What a streamed CSV reads and parses at a time; the first piece's rows suggest the types of
# columns not given (as pyarrow's own reader does with its 1 MiB blocks). Larger pieces were no
# faster to score and left the allocator holding more: after 2,000,000 rows, +55 MiB with
# 4 MiB pieces, +7 MiB with 1 MiB ones.
CSV_PIECE_BYTES = 1 << 20
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
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS and suffixes[-2] == ".csv":
        return "csv"
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    if output:
        raise DataError(f"{location}: unknown output format; name the file .csv or .parquet")
    raise DataError(f"{location}: unknown table format; name the file .csv or .parquet, or pass --format")


def read_table(source: str, format: str | None = None) -> pa.Table:
    """Read a whole CSV or Parquet table from a path or '-'."""
    fmt = table_format(source, format)
    with _arrow_errors(source):
        table = pq.read_table(_parquet_input(source)) if fmt == "parquet" else _read_csv(_csv_input(source))
        table.column_names  # decodes the header: a file that is not UTF-8 fails here, with its name
        return table


def infer_csv_types(table: pa.Table) -> pa.Table:
    """A table of text columns (as `iter_batches(..., text=True)` reads CSV) with the types
    `read_table` would have inferred from the same cells."""
    text = io.BytesIO()
    pa_csv.write_csv(table, text)
    return _read_csv(pa.BufferReader(text.getvalue()))


def _read_csv(stream) -> pa.Table:
    return pa_csv.read_csv(
        stream,
        read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        parse_options=_CSV_PARSE,
        convert_options=pa_csv.ConvertOptions(strings_can_be_null=True),
    )


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
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Open a table for streaming: its schema, and its rows in batches of at most `batch_rows`,
    read and parsed a few batches ahead in a background thread.

    CSV columns named in `column_types` are read as those types (empty cells as nulls); the
    others as text with `text`, else as the first rows suggest; `csv_share` = (r, R) parses
    only the pieces r, r + R, ... of the file (see `_iter_csv`), whose rows' numbers in error
    messages then count from the share's start. Parquet keeps its own types, reads only
    `row_groups` when given, and from stdin it is read whole, since the format needs to seek.
    """
    with _arrow_errors(source):
        if table_format(source, format) == "parquet":
            parquet = pq.ParquetFile(_parquet_input(source))
            parquet.schema_arrow.names  # decodes the names inside the guard
            schema, batches = parquet.schema_arrow, parquet.iter_batches(batch_size=batch_rows, row_groups=row_groups)
        else:
            schema, batches = _iter_csv(source, column_types or {}, text, csv_share or (0, 1))
    return schema, _guarded(source, read_ahead(_rebatched(batches, batch_rows)))


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


def _iter_csv(
    source: str, column_types: dict[str, pa.DataType], text: bool, share: tuple[int, int]
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A CSV from a path or '-', cut at row ends into pieces of about `CSV_PIECE_BYTES` that are
    parsed one by one: memory stays at a few pieces however long the file (pyarrow's own
    streaming reader reads 32 blocks ahead), and a word in a numeric column is found by its row,
    even on stdin. The first piece fixes the types that `column_types` leaves open. With
    `share` = (r, R), only pieces r, r + R, ... are parsed (the first piece counting as 0)."""
    if source == "-":
        stream = sys.stdin.buffer
    else:
        _check_readable(source)
        stream = pa.input_stream(source)  # decompresses .csv.gz and the like
    pieces = _whole_rows(stream)
    first = next(pieces, b"")
    try:
        header = next((row for row in python_csv.reader(io.StringIO(first.decode("utf-8-sig"))) if row), None)
    except python_csv.Error as error:
        raise pa.ArrowInvalid(str(error)) from None
    if header is None:
        raise pa.ArrowInvalid("Empty CSV file")
    types = {name: column_types.get(name, pa.string()) for name in header} if text else column_types
    head = _parse_piece(first, None, types, source, first_row=0)  # the header and the first rows
    types = dict(zip(head.schema.names, head.schema.types))

    def batches() -> Iterator[pa.RecordBatch]:
        rank, ranks = share
        rows = head.num_rows if rank == 0 else 0
        if rank == 0:
            yield from head.to_batches()
        for index, piece in enumerate(pieces, 1):
            if index % ranks == rank:  # the other pieces are cut at their row ends, never parsed
                table = _parse_piece(piece, header, types, source, first_row=rows)
                rows += table.num_rows
                yield from table.to_batches()

    return head.schema, batches()


def _parse_piece(
    piece: bytes, names: list[str] | None, types: dict[str, pa.DataType], source: str, first_row: int
) -> pa.Table:
    """Whole CSV rows (with the header when `names` is None) as a table of `types`. Where a
    number will not parse, the piece is read again as text to name the row (`first_row` rows
    came before it) or to accept what pyarrow will not, such as a cell of blanks."""
    try:
        return _parse_text(piece, names, types)
    except pa.ArrowInvalid as error:
        if "conversion error" not in str(error):
            raise
    numeric = {name: kind for name, kind in types.items() if pa.types.is_integer(kind) or pa.types.is_floating(kind)}
    table = _parse_text(piece, names, {**types, **dict.fromkeys(numeric, pa.string())})
    for name, kind in numeric.items():
        index = table.schema.get_field_index(name)
        numbers = parse_numbers(table.column(index), name, source, first_row)
        table = table.set_column(index, name, pc.cast(numbers, kind))
    return table


def _parse_text(piece: bytes, names: list[str] | None, types: dict[str, pa.DataType]) -> pa.Table:
    read = pa_csv.ReadOptions(block_size=len(piece) + 1, column_names=names, use_threads=False)
    convert = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True)
    return pa_csv.read_csv(pa.BufferReader(piece), read_options=read, parse_options=_CSV_PARSE, convert_options=convert)


def _whole_rows(stream) -> Iterator[bytes]:
    """The bytes of `stream` in pieces of about `CSV_PIECE_BYTES`, each ending where a row ends."""
    pending = b""
    while data := stream.read(CSV_PIECE_BYTES):
        pending += data
        end = _last_row_end(pending)
        if end:
            yield pending[:end]
            pending = pending[end:]
    if pending:
        yield pending


def _last_row_end(text: bytes) -> int:
    """The index after the last line break that is not inside a quoted value; 0 if there is none.
    Inside quotes means after an odd number of quote characters, escaped quotes ("") included."""
    end = text.rfind(b"\n")
    inside = text.count(b'"', 0, max(end, 0)) % 2
    while end >= 0 and inside:
        previous = text.rfind(b"\n", 0, end)
        inside ^= text.count(b'"', previous + 1, end) % 2
        end = previous
    return end + 1


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
    except OSError as error:  # pyarrow reports a damaged Parquet file as an I/O error
        if isinstance(error, BrokenPipeError):
            raise
        raise DataError(_describe_arrow_error(source, str(error))) from None


def _first_ragged_row(source: str) -> int | None:
    """The 1-based data row (header excluded, blank lines skipped) whose field count differs
    from the header's, found by reading the file again; None for stdin or when none is found."""
    if source == "-":
        return None
    try:
        with open(source, newline="", encoding="utf-8-sig") as handle:
            rows = (fields for fields in python_csv.reader(handle) if fields)
            width = len(next(rows, []))
            return next((number for number, fields in enumerate(rows, 1) if len(fields) != width), None)
    except (OSError, UnicodeDecodeError, python_csv.Error):
        return None


def _describe_arrow_error(source: str, message: str) -> str:
    lines = message.strip().splitlines()
    message = lines[0] if lines else "unreadable table"
    if message == "Empty CSV file":
        return f"{source}: the file is empty; give a table with a header row and data rows"
    if "straddling object" in message:
        return f"{source}: a row is longer than {_CSV_BLOCK_BYTES >> 20} MiB, or a quoted field never ends; check the file's quoting"
    ragged = _RAGGED.search(message)
    if ragged and (row := _first_ragged_row(source)) is not None:
        expected, got = ragged.groups()
        return f"{source}: row {row} has {got} fields where the header has {expected}; fix that row or its quoting"
    # pyarrow quotes the offending bytes; keep the line printable and short.
    printable = "".join(char if char.isprintable() else "?" for char in message)
    if len(printable) > 160:
        printable = printable[:160] + "…"
    return f"{source}: cannot read the table: {printable}"
