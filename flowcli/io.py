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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from flowcli.atomic import atomic_path
from flowcli.errors import DataError, FlowcliError

FORMATS = ("csv", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = {".gz", ".bz2", ".zst", ".lz4"}
_CSV_BLOCK_BYTES = 16 << 20  # the longest row a CSV may have; also the streaming read size
# Quoted values may hold line breaks (spreadsheets write them); without this, one that straddles
# a block boundary breaks a valid file. It cost nothing measurable on 1,000,000 × 8 rows.
_CSV_PARSE = pa_csv.ParseOptions(newlines_in_values=True)
_TEXT_PIECE_BYTES = 1 << 20  # what `iter_csv_text` reads at a time
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
    """A table of text columns (as `iter_csv_text` reads CSV) with the types
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


def iter_batches(
    source: str,
    format: str | None = None,
    *,
    batch_rows: int,
    column_types: dict[str, pa.DataType] | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Open a table for streaming: its schema, and its rows in batches of about `batch_rows`.

    CSV columns named in `column_types` are read as those types (empty cells as nulls); the
    others are inferred. Parquet keeps its own types, and from stdin it is read whole, since
    the format needs to seek.
    """
    fmt = table_format(source, format)
    with _arrow_errors(source):
        if fmt == "parquet":
            parquet = pq.ParquetFile(_parquet_input(source))
            parquet.schema_arrow.names  # decodes the names inside the guard
            return parquet.schema_arrow, _guarded(source, parquet.iter_batches(batch_size=batch_rows))
        convert = pa_csv.ConvertOptions(
            column_types=column_types or {}, strings_can_be_null=True
        )
        reader = pa_csv.open_csv(
            _csv_input(source), read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            parse_options=_CSV_PARSE, convert_options=convert,
        )
        reader.schema.names  # decodes the header inside the guard
        return reader.schema, _guarded(source, _rebatched(reader, batch_rows))


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
    leaves no header behind. If a later batch fails while writing to stdout, the error says
    that what stdout already holds is partial.
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
            with pq.ParquetWriter(stream, schema) if fmt == "parquet" else _csv_writer(stream, schema) as writer:
                for batch in itertools.chain([first] if first is not None else [], batches):
                    writer.write_batch(batch)
                    rows += batch.num_rows
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


def iter_csv_text(source: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Stream a CSV from a path or '-' with every column as text (empty cells as nulls): its
    schema, and its rows in batches of about 1 MiB of text.

    Text, because types guessed from the first rows could be contradicted by later ones
    (`infer_csv_types` types a selection afterwards). The file is cut at row ends here and each
    piece parsed on its own, without pyarrow's streaming reader, which reads up to 32 blocks
    ahead: memory stays at a few pieces however long the file, and a row may be of any length.
    """
    with _arrow_errors(source):
        if source == "-":
            stream = sys.stdin.buffer
        else:
            _check_readable(source)
            stream = pa.input_stream(source)  # decompresses .csv.gz and the like
        pieces = _whole_rows(stream)
        first = next(pieces, b"")
        header = next((row for row in python_csv.reader(io.StringIO(first.decode("utf-8-sig"))) if row), None)
        if header is None:
            raise pa.ArrowInvalid("Empty CSV file")
        convert = pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True)
        head = _parse_text(first, None, convert)  # the header and the first rows

    def batches() -> Iterator[pa.RecordBatch]:
        yield from head.to_batches()
        for piece in pieces:
            yield from _parse_text(piece, header, convert).to_batches()

    return head.schema, _guarded(source, batches())


def _parse_text(piece: bytes, names: list[str] | None, convert: pa_csv.ConvertOptions) -> pa.Table:
    """Whole CSV rows (with the header when `names` is None), parsed as one block."""
    read = pa_csv.ReadOptions(block_size=len(piece) + 1, column_names=names, use_threads=False)
    return pa_csv.read_csv(pa.BufferReader(piece), read_options=read, parse_options=_CSV_PARSE, convert_options=convert)


def _whole_rows(stream) -> Iterator[bytes]:
    """The bytes of `stream` in pieces of about `_TEXT_PIECE_BYTES`, each ending where a row ends."""
    pending = b""
    while data := stream.read(_TEXT_PIECE_BYTES):
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
    """Cut large CSV blocks into batches of at most `rows`, so memory follows the batch size."""
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


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
