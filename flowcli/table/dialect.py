"""How a CSV file is written, sniffed from its first block or told by the user: the encoding,
the delimiter, the quote character, the header, the decimal mark and the line endings.

Sniffing reads one block (`SNIFF_BYTES`) that the reader then replays, so stdin works and no
file is read twice, in the spirit of DuckDB's `read_csv(auto_detect=true)` and Python's
`csv.Sniffer`. What sniffing cannot know has an option: `--delimiter`, `--no-header`,
`--decimal` and `--encoding`. Every reader (`fit`, `score`, `inspect --data`) goes through here.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass

from flowcli.errors import DataError, FlowcliWarning

DELIMITERS = (",", ";", "\t", "|")
SNIFF_BYTES = 64 << 10
SNIFF_ROWS = 100
METADATA_KEY = b"flowcli.csv_dialect"  # where a table read from CSV carries its dialect
_BOMS = (  # longest first: UTF-32 LE's BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_NUMBER = re.compile(r"\s*[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?\s*$")
_COMMA_DECIMAL = re.compile(r"\s*[+-]?\d*,\d+\s*$")
_POINT_DECIMAL = re.compile(r"\s*[+-]?\d*\.\d+([eE][+-]?\d+)?\s*$")


@dataclass(frozen=True)
class CsvOptions:
    """What the user says about a CSV file; None leaves it to sniffing."""

    delimiter: str | None = None
    header: bool = True
    decimal: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in "\r\n\"'"):
            raise DataError(f"--delimiter {self.delimiter!r}: give one character, such as ',' ';' '|' or a tab ($'\\t')")
        if self.decimal not in (None, ".", ","):
            raise DataError(f"--decimal {self.decimal!r}: give '.' or ','")
        if self.decimal is not None and self.decimal == self.delimiter:
            raise DataError(f"--decimal {self.decimal!r} is also the delimiter; give different characters")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise DataError(f"--encoding {self.encoding!r} is not an encoding Python knows; "
                                "give a name such as utf-8, utf-16, cp1252 or latin-1") from None


@dataclass(frozen=True)
class Dialect:
    """How a CSV file was read."""

    encoding: str = "utf-8"  # a Python codec: utf-8-sig, utf-16 and utf-32 consume their BOM
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    decimal: str = "."
    line_ending: str = "\n"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Dialect:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def describe(self) -> str:
        """One line for `inspect`: 'CSV, delimiter ';', decimal ',', header, UTF-8 with BOM, CRLF'."""
        encoding = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 with BOM", "utf-16": "UTF-16", "utf-32": "UTF-32"}.get(self.encoding, self.encoding)
        endings = {"\n": "LF", "\r\n": "CRLF", "\r": "CR"}[self.line_ending]
        return (f"CSV, delimiter {self.delimiter!r}, quote {self.quote!r}, decimal {self.decimal!r}, "
                f"{'header' if self.header else 'no header'}, {encoding}, {endings}")

    def metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(self.to_json()).encode()}


def dialect_of(metadata: dict[bytes, bytes] | None) -> Dialect | None:
    """The dialect a table read from CSV carries in its schema's metadata; None for other tables."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    return Dialect.from_json(json.loads(metadata[METADATA_KEY]))


def sniff(block: bytes, options: CsvOptions, source: str, *, whole: bool) -> Dialect:
    """The dialect of a CSV file from its first `block` of bytes (`whole` when that is the file)."""
    encoding = options.encoding or _encoding_by_bom(block)
    binary = DataError(f"{source}: looks like a binary file, not CSV text; give a CSV or Parquet table "
                       "(for UTF-16 or UTF-32 text without a byte-order mark, pass --encoding)")
    if encoding == "utf-8" and b"\0" in block:
        raise binary
    text = _decode(block, encoding, source, whole=whole, told=options.encoding is not None)
    if "\0" in text:
        raise binary
    lines = text.splitlines(keepends=True)
    if not whole and len(lines) > 1:
        lines = lines[:-1]  # the block may end inside the last line
    lines = [line for line in lines[: SNIFF_ROWS + 1] if line.strip()]
    line_ending = "\r\n" if "\r\n" in text else "\r" if "\r" in text and "\n" not in text else "\n"
    quote = _quote(lines)
    delimiter = options.delimiter or _delimiter(lines, quote)
    if whole:
        _check_quotes_close(text, delimiter, quote, source)
    rows = [row for row in csv.reader(lines, delimiter=delimiter, quotechar=quote) if row] if lines else []
    _check_one_column(rows, delimiter, source)
    body = rows[1:] if options.header else rows
    decimal = options.decimal or ("," if delimiter != "," and _comma_decimals(body) else ".")
    if options.header and rows:
        _warn_if_header_looks_like_data(rows[0], body, source)
    return Dialect(encoding=encoding, delimiter=delimiter, quote=quote, header=options.header,
                   decimal=decimal, line_ending=line_ending)


def _encoding_by_bom(block: bytes) -> str:
    return next((encoding for bom, encoding in _BOMS if block.startswith(bom)), "utf-8")


def _decode(block: bytes, encoding: str, source: str, *, whole: bool, told: bool) -> str:
    try:
        return codecs.getincrementaldecoder(encoding)().decode(block, final=whole)
    except UnicodeDecodeError as error:
        if told:
            raise DataError(f"{source}: not {encoding} text (byte {block[error.start]:#04x} at offset {error.start}); "
                            "check --encoding") from None
        raise DataError(not_utf8_message(source)) from None


def not_utf8_message(source: str) -> str:
    return (f"{source}: the file is not UTF-8 text; pass its encoding with --encoding "
            "(for example --encoding cp1252 or --encoding latin-1), or save it as UTF-8")


def _quote(lines: list[str]) -> str:
    """'"' unless the rows quote with "'" alone (fields that open and close with it)."""
    text = "".join(lines)
    if '"' in text:
        return '"'
    quoted = re.findall(r"(?:^|[,;\t|])'[^'\r\n]*'(?=[,;\t|]|\r?$)", text, flags=re.MULTILINE)
    return "'" if len(quoted) >= 2 else '"'


def _delimiter(lines: list[str], quote: str) -> str:
    """The candidate that splits the rows into the same number of fields (two or more) most
    consistently; the first in `DELIMITERS` on a tie, and ',' when none splits them."""
    best, best_share = ",", 0.0
    for candidate in DELIMITERS:
        try:
            counts = [len(row) for row in csv.reader(lines, delimiter=candidate, quotechar=quote) if row]
        except csv.Error:
            continue
        if not counts:
            continue
        width, hits = Counter(counts).most_common(1)[0]
        share = hits / len(counts)
        if width >= 2 and share > best_share:
            best, best_share = candidate, share
    return best


def _check_one_column(rows: list[list[str]], delimiter: str, source: str) -> None:
    """A file read as one column whose name holds another delimiter was read with the wrong one."""
    if rows and len(rows[0]) == 1:
        others = [d for d in DELIMITERS if d != delimiter and d in rows[0][0]]
        if others:
            shown = "$'\\t'" if others[0] == "\t" else repr(others[0])
            raise DataError(f"{source}: read as one column named {rows[0][0][:60]!r}, delimited by {delimiter!r}; "
                            f"pass --delimiter {shown}")


def _check_quotes_close(text: str, delimiter: str, quote: str, source: str) -> None:
    """A whole file whose last quoted field never closes would read as one giant value."""
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote, strict=True):
            pass
    except csv.Error as error:
        if "end of data" in str(error) or "EOF" in str(error):
            raise DataError(f"{source}: a quoted field never ends (an unmatched {quote}); check the file's quoting") from None


def _comma_decimals(rows: list[list[str]]) -> bool:
    """Decimal commas are unambiguous when numbers such as '7,4' appear and none such as '7.4'."""
    cells = [cell for row in rows for cell in row]
    return any(_COMMA_DECIMAL.match(cell) for cell in cells) and not any(_POINT_DECIMAL.match(cell) for cell in cells)


def _warn_if_header_looks_like_data(header: list[str], body: list[list[str]], source: str) -> None:
    """Warn when every name is a number, or when the names follow the rows' pattern: a number
    wherever the rows below hold numbers (an export without its header row)."""
    if not body:
        return
    numeric = [all(_NUMBER.match(row[j]) for row in body if j < len(row) and row[j].strip()) and
               any(j < len(row) and row[j].strip() for row in body) for j in range(len(header))]
    names_numeric = [bool(_NUMBER.match(name)) for name in header]
    if all(names_numeric) or (any(numeric) and all(n for n, c in zip(names_numeric, numeric) if c)):
        warnings.warn(f"{source}: the header row {', '.join(header[:4])[:60]!r}… looks like data; "
                      "if the file has no header row, pass --no-header", FlowcliWarning, stacklevel=2)


class Utf8Stream(io.RawIOBase):
    """A CSV file's bytes as UTF-8, from the start: the sniffed `block` first, then the rest of
    `raw`, decoded from `encoding` when that is not UTF-8 (a UTF-8 BOM is dropped)."""

    def __init__(self, block: bytes, raw, encoding: str):
        self._raw = raw
        self._decoder = None if encoding in ("utf-8", "utf-8-sig") else codecs.getincrementaldecoder(encoding)()
        if encoding == "utf-8-sig" and block.startswith(codecs.BOM_UTF8):
            block = block[len(codecs.BOM_UTF8):]
        self._pending = self._convert(block, final=False)
        self._done = False

    def _convert(self, data: bytes, final: bool) -> bytes:
        return data if self._decoder is None else self._decoder.decode(data, final=final).encode("utf-8")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def read(self, size: int = -1) -> bytes:
        if not self._pending and self._decoder is None and size > 0:
            return self._raw.read(size)  # plain UTF-8 past the block: no copy
        while not self._done and (size < 0 or len(self._pending) < size):
            data = self._raw.read(size if size > 0 else 1 << 20)
            self._done = not data
            self._pending += self._convert(data, final=self._done)
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
