"""CSV in: one reader for whole tables and for streams, in the file's own dialect.

`open_csv` sniffs the dialect from the first block (`dialect.sniff`) and hands back the file as
UTF-8 from its start, so that stdin is read once. `read_csv_table` reads it whole with pyarrow;
`iter_csv` cuts it at row ends into pieces parsed one by one, so memory stays flat however long
the file and a word in a numeric column is named by its row. Tables carry their dialect in
their schema's metadata (`dialect.dialect_of`), so the model can record what it was fitted from.
"""

from __future__ import annotations

import csv as python_csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from flowcli.errors import DataError
from flowcli.table.dialect import SNIFF_BYTES, CsvOptions, Dialect, Utf8Stream, dialect_of, sniff
from flowcli.table.values import parse_numbers

CSV_BLOCK_BYTES = 16 << 20  # the longest row `read_csv_table` takes
# What a streamed CSV reads and parses at a time; the first piece's rows suggest the types of
# columns not given (as pyarrow's own reader does with its 1 MiB blocks). Larger pieces were no
# faster to score and left the allocator holding more: after 2,000,000 rows, +55 MiB with
# 4 MiB pieces, +7 MiB with 1 MiB ones.
CSV_PIECE_BYTES = 1 << 20


def open_csv(source: str, options: CsvOptions | None = None) -> tuple[Dialect, Utf8Stream]:
    """The dialect of the CSV at `source` (a path or '-') and its bytes as UTF-8 from the start."""
    if source == "-":
        raw = sys.stdin.buffer
    else:
        check_readable(source)
        raw = pa.input_stream(source)  # decompresses .csv.gz and the like
    block = raw.read(SNIFF_BYTES)
    if not block:
        raise DataError(f"{source}: the file is empty; give a table with a header row and data rows")
    dialect = sniff(block, options or CsvOptions(), source, whole=len(block) < SNIFF_BYTES)
    return dialect, Utf8Stream(block, raw, dialect.encoding)


def read_csv_table(source: str, options: CsvOptions | None = None) -> pa.Table:
    """The whole CSV at `source`, with the types pyarrow infers, carrying its dialect."""
    dialect, stream = open_csv(source, options)
    read = _read_options(dialect, CSV_BLOCK_BYTES)
    if source == "-":
        data = pa.PythonFile(stream, mode="r")
    else:  # pyarrow reads the file itself, in native threads, transcoding (and skipping a UTF-8 BOM) itself
        stream.close()
        data = source
        read.encoding = "utf8" if dialect.encoding in ("utf-8", "utf-8-sig") else dialect.encoding
    table = pa_csv.read_csv(data, read_options=read, parse_options=_parse_options(dialect),
                            convert_options=_convert_options(dialect))
    return table.replace_schema_metadata(dialect.metadata())


def infer_csv_types(table: pa.Table) -> pa.Table:
    """A table of text columns (as `iter_csv(..., text=True)` reads CSV) with the types
    `read_csv_table` would have inferred from the same cells, in the table's dialect."""
    dialect = dialect_of(table.schema.metadata) or Dialect()
    text = io.BytesIO()
    pa_csv.write_csv(table, text)
    written = Dialect(decimal=dialect.decimal)  # pyarrow writes ',' and '"', quoting cells that hold them
    return pa_csv.read_csv(pa.BufferReader(text.getvalue()), read_options=_read_options(written, CSV_BLOCK_BYTES),
                           parse_options=_parse_options(written),
                           convert_options=_convert_options(written)).replace_schema_metadata(table.schema.metadata)


def iter_csv(
    source: str, column_types: dict[str, pa.DataType], text: bool, share: tuple[int, int], options: CsvOptions | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch], Dialect]:
    """The CSV's schema, its rows in batches, and its dialect. The first piece fixes the types
    that `column_types` leaves open (all text with `text`). With `share` = (r, R), only pieces
    r, r + R, ... are parsed (the first piece counting as 0)."""
    dialect, stream = open_csv(source, options)
    pieces = _whole_rows(stream, dialect.quote.encode())
    first = next(pieces, b"")
    try:
        header = next((row for row in python_csv.reader(io.StringIO(first.decode("utf-8")), delimiter=dialect.delimiter,
                                                        quotechar=dialect.quote) if row), None)
    except python_csv.Error as error:
        raise pa.ArrowInvalid(str(error)) from None
    if header is None:
        raise pa.ArrowInvalid("Empty CSV file")
    names = None if dialect.header else [f"f{j}" for j in range(len(header))]  # pyarrow's own names
    if not dialect.header:
        header = names
    types = {name: column_types.get(name, pa.string()) for name in header} if text else column_types
    head = _parse_piece(first, names, types, source, dialect, first_row=0)  # the header and the first rows
    types = dict(zip(head.schema.names, head.schema.types))

    def batches() -> Iterator[pa.RecordBatch]:
        rank, ranks = share
        rows = head.num_rows if rank == 0 else 0
        if rank == 0:
            yield from head.to_batches()
        for index, piece in enumerate(pieces, 1):
            if index % ranks == rank:  # the other pieces are cut at their row ends, never parsed
                table = _parse_piece(piece, header, types, source, dialect, first_row=rows)
                rows += table.num_rows
                yield from table.to_batches()

    return head.schema, batches(), dialect


def check_readable(source: str) -> None:
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file")
    if path.is_dir():
        raise DataError(f"{source}: is a folder, not a table")
    if path.stat().st_size == 0:
        raise DataError(f"{source}: the file is empty; give a table with a header row and data rows")


def first_ragged_row(source: str, dialect: Dialect | None) -> int | None:
    """The 1-based data row (header excluded, blank lines skipped) whose field count differs
    from the first row's, found by reading the file again; None for stdin or when none is found."""
    if source == "-":
        return None
    dialect = dialect or Dialect()
    try:
        with open(source, newline="", encoding=dialect.encoding) as handle:
            rows = (fields for fields in python_csv.reader(handle, delimiter=dialect.delimiter, quotechar=dialect.quote) if fields)
            width = len(next(rows, []))
            return next((number for number, fields in enumerate(rows, 1 if dialect.header else 2) if len(fields) != width), None)
    except (OSError, UnicodeDecodeError, python_csv.Error):
        return None


def _read_options(dialect: Dialect, block_size: int) -> pa_csv.ReadOptions:
    return pa_csv.ReadOptions(block_size=block_size, autogenerate_column_names=not dialect.header)


def _parse_options(dialect: Dialect) -> pa_csv.ParseOptions:
    # Quoted values may hold line breaks (spreadsheets write them); without this, one that straddles
    # a block boundary breaks a valid file. It cost nothing measurable on 1,000,000 × 8 rows.
    return pa_csv.ParseOptions(delimiter=dialect.delimiter, quote_char=dialect.quote, newlines_in_values=True)


def _convert_options(dialect: Dialect, types: dict[str, pa.DataType] | None = None) -> pa_csv.ConvertOptions:
    return pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True, decimal_point=dialect.decimal)


def _parse_piece(
    piece: bytes, names: list[str] | None, types: dict[str, pa.DataType], source: str, dialect: Dialect, first_row: int
) -> pa.Table:
    """Whole CSV rows (with the header when `names` is None) as a table of `types`. Where a
    number will not parse, the piece is read again as text to name the row (`first_row` rows
    came before it) or to accept what pyarrow will not, such as a cell of blanks."""
    try:
        return _parse_text(piece, names, types, dialect)
    except pa.ArrowInvalid as error:
        if "conversion error" not in str(error):
            raise
    numeric = {name: kind for name, kind in types.items() if pa.types.is_integer(kind) or pa.types.is_floating(kind)}
    table = _parse_text(piece, names, {**types, **dict.fromkeys(numeric, pa.string())}, dialect)
    for name, kind in numeric.items():
        index = table.schema.get_field_index(name)
        column = table.column(index)
        if dialect.decimal == ",":
            column = pc.replace_substring(column, ",", ".")
        numbers = parse_numbers(column, name, source, first_row)
        table = table.set_column(index, name, pc.cast(numbers, kind))
    return table


def _parse_text(piece: bytes, names: list[str] | None, types: dict[str, pa.DataType], dialect: Dialect) -> pa.Table:
    read = pa_csv.ReadOptions(block_size=len(piece) + 1, column_names=names, use_threads=False)
    table = pa_csv.read_csv(pa.BufferReader(piece), read_options=read, parse_options=_parse_options(dialect),
                            convert_options=_convert_options(dialect, types))
    return table.replace_schema_metadata(dialect.metadata())


def _whole_rows(stream, quote: bytes) -> Iterator[bytes]:
    """The bytes of `stream` in pieces of about `CSV_PIECE_BYTES`, each ending where a row ends."""
    pending = b""
    while data := stream.read(CSV_PIECE_BYTES):
        pending += data
        end = _last_row_end(pending, quote)
        if end:
            yield pending[:end]
            pending = pending[end:]
    if pending:
        yield pending


def _last_row_end(text: bytes, quote: bytes = b'"') -> int:
    """The index after the last line break that is not inside a quoted value; 0 if there is none.
    Inside quotes means after an odd number of quote characters, escaped quotes ("") included."""
    end = text.rfind(b"\n")
    inside = text.count(quote, 0, max(end, 0)) % 2
    while end >= 0 and inside:
        previous = text.rfind(b"\n", 0, end)
        inside ^= text.count(quote, previous + 1, end) % 2
        end = previous
    return end + 1
