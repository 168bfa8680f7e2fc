"""One table across torchrun ranks: each rank keeps its own share of the rows, and all ranks fit
the same preprocessing on rows gathered from every share. No torch here (`parallel.torchrun` has it).

A Parquet file with at least as many row groups as ranks gives rank r the groups r, r + R, ...,
and a CSV file of at least `PIECES_PER_RANK` pieces (1 MiB each) per rank the pieces r, r + R,
...: each rank reads the bytes to find where rows end, but parses only its own pieces. Other
tables (stdin, small files) go row by row: row i to rank i mod R.
The preprocessing (kinds, scales, supports and levels) is fit on a uniform sample of up to
`SAMPLE_ROWS` rows, drawn from each share in proportion to its size, plus each share's support
rows: for every column, the rows with its least and greatest value and the first row of each
of its values (up to `MAX_LEVELS` of them), so that every value a rank trains on lies within
what the preprocessing has seen. They add at most R × (2 + MAX_LEVELS) rows per column.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.parallel import torchrun
from flowcli.table.csv_reader import CSV_PIECE_BYTES, infer_csv_types
from flowcli.table.dialect import CsvOptions
from flowcli.table.io import from_ipc, iter_batches, parquet_row_groups, table_format, to_ipc
from flowcli.table.reservoir import reservoir_sample
from flowcli.table.schema import MAX_LEVELS

SAMPLE_ROWS = 100_000
PIECES_PER_RANK = 4  # below this, shares of whole pieces would be too uneven: rows are dealt instead
_BATCH_ROWS = 65_536


def read_shard(
    source: str, format: str | None = None, *, max_rows: int | None = None, seed: int = 0, csv: CsvOptions | None = None
) -> tuple[pa.Table, int]:
    """This rank's rows of the table at `source` (a uniform sample of `max_rows` / R of them,
    with `max_rows`), and the number of rows the whole table has. CSV columns get the types
    `read_table` would give the whole file: each rank infers them from its own rows, and the
    ranks agree on the widest (integers and floats make floats; a conflict makes text)."""
    rank, ranks = torchrun.rank(), torchrun.world_size()
    is_csv = table_format(source, format) == "csv"
    groups = None if is_csv else parquet_row_groups(source)
    by_groups = groups is not None and groups >= ranks
    by_pieces = is_csv and source != "-" and os.path.getsize(source) >= ranks * PIECES_PER_RANK * CSV_PIECE_BYTES
    schema, batches = iter_batches(source, format, batch_rows=_BATCH_ROWS, text=True,
                                   row_groups=list(range(rank, groups, ranks)) if by_groups else None,
                                   csv_share=(rank, ranks) if by_pieces else None, csv=csv)
    if not (by_groups or by_pieces):
        batches = _every_nth_row(batches, rank, ranks)
    if max_rows is None:
        table, rows = pa.Table.from_batches(list(batches), schema=schema), None
    else:
        table, rows = reservoir_sample(batches, schema, math.ceil(max_rows / ranks), seed=seed + rank)
    total = sum(torchrun.gather_counts(table.num_rows if rows is None else rows))
    if is_csv:
        table = infer_csv_types(table)
        schema = _widest([pa.ipc.read_schema(pa.py_buffer(part)) for part in torchrun.gather_bytes(table.schema.serialize().to_pybytes())])
        table = pa.table([_cast(table.column(name), field.type) for name, field in zip(table.column_names, schema)], schema=schema)
    return table, total


def shared_rows(table: pa.Table, seed: int = 0) -> pa.Table:
    """The rows every rank fits the preprocessing on, gathered from each rank's `table` (its
    share): the same table on every rank. With one rank, `table` itself."""
    if torchrun.world_size() == 1:
        return table
    sizes = torchrun.gather_counts(table.num_rows)
    wanted = math.ceil(SAMPLE_ROWS * table.num_rows / max(sum(sizes), 1))
    sample, _ = reservoir_sample(table.to_batches(), table.schema, max(wanted, 1), seed=seed + torchrun.rank())
    own = pa.concat_tables([sample, table.take(pa.array(_support_rows(table), pa.int64()))])
    return pa.concat_tables(from_ipc(part) for part in torchrun.gather_bytes(to_ipc(own)))


def _support_rows(table: pa.Table) -> np.ndarray:
    """Row numbers: per column, its least and greatest value, and the first row of each value
    when it has at most MAX_LEVELS of them."""
    rows = []
    for column in table.columns:
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_temporal(column.type):
            extremes = pc.min_max(column)
            rows += [pc.index(column, extremes[end]).as_py() for end in ("min", "max") if extremes[end].is_valid]
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        encoded = pc.dictionary_encode(column)
        if len(encoded.dictionary) <= MAX_LEVELS:
            codes = np.asarray(pc.fill_null(encoded.indices, -1))
            rows += np.unique(codes, return_index=True)[1].tolist()
    return np.unique(np.asarray(rows, np.int64))


def _every_nth_row(batches: Iterator[pa.RecordBatch], rank: int, ranks: int) -> Iterator[pa.RecordBatch]:
    """Rows rank, rank + ranks, ... of the stream of `batches`."""
    start = 0
    for batch in batches:
        yield batch.take(pa.array(np.arange((rank - start) % ranks, batch.num_rows, ranks)))
        start += batch.num_rows


def _widest(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for the ranks' own inferences: numbers widen to floats and nulls to any type;
    columns the ranks read as different kinds of value are text."""
    fields = []
    for name, types in zip(schemas[0].names, zip(*(schema.types for schema in schemas))):
        try:
            fields.append(pa.unify_schemas([pa.schema([(name, kind)]) for kind in types], promote_options="permissive").field(0))
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _cast(values: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    return values if values.type == target else pc.cast(values, target)
