"""File to file: the work behind each CLI command, reusable from Python.

Inputs are paths or '-' (stdin); outputs are paths, written atomically, or '-' (stdout).
Scoring and sampling stream in batches, so memory stays flat however long the input is.
"""

from __future__ import annotations

import collections
import itertools
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.condition.conditions import given_columns
from flowcli.errors import DataError, FlowcliWarning, OutputError
from flowcli.likelihood import percentiles, quantiles, unseen_message
from flowcli.model import TabularFlow
from flowcli.parallel import torchrun
from flowcli.table.atomic import check_destination
from flowcli.table.dialect import CsvOptions
from flowcli.table.io import iter_batches, read_table, table_format, write_batches
from flowcli.table.reservoir import read_sample
from flowcli.table.schema import require_columns
from flowcli.table.shards import read_shard
from flowcli.table.values import from_numpy, parse_numbers

if TYPE_CHECKING:
    from flowcli.flow.train import EpochReport

BATCH_ROWS = 65_536
SCORE_COLUMN = "log_likelihood"
ANOMALY_COLUMN = "anomaly_score"  # higher = more anomalous (`flowcli.explain`)
PERCENTILE_COLUMN = "percentile"
EXPLAIN_COLUMN = "explanation"
EXPLAIN_NATS_COLUMN = "explanation_nats"  # how much more surprising than usual the named value is


def _check_room(destination: Path, estimated_bytes: int) -> None:
    """Refuse, before writing, an output that cannot fit in the free space of its folder."""
    if not destination.parent.is_dir():
        return  # the writer names the missing folder
    free = shutil.disk_usage(destination.parent).free
    if estimated_bytes > free:
        raise OutputError(
            f"{destination}: the output needs about {estimated_bytes / 2**30:,.1f} GiB but only "
            f"{free / 2**30:,.1f} GiB is free there; lower -n or write elsewhere"
        )


def model_csv_options(model: TabularFlow, csv: CsvOptions | None) -> CsvOptions | None:
    """How to read a CSV for `model`: `csv`, without a header when the model was fitted on a CSV
    without one."""
    if "csv_dialect" in model.data_ and not model.data_["csv_dialect"].get("header", True):
        return replace(csv or CsvOptions(), header=False)
    return csv


def default_bundle_path(data: str) -> Path:
    """DATA with the suffix .flow (data.csv.gz → data.flow)."""
    path = Path(data)
    while path.suffix:
        path = path.with_suffix("")
    return path.with_name(path.name + ".flow")


def fit_file(
    data: str,
    output: Path,
    *,
    format: str | None = None,
    columns: list[str] | None = None,
    force: bool = False,
    kinds: dict[str, str] | None = None,
    ignore: Sequence[str] = (),
    hyperparameters: dict | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    max_rows: int | None = None,
    csv: CsvOptions | None = None,
    started: float | None = None,
) -> TabularFlow:
    """Fit a model to the table at `data` and write it to `output` as a .flow bundle.

    The model's `max_time` counts from `started` (a `time.perf_counter()`; default: this call),
    so that reading the table is within it.

    With `max_rows`, the model trains on a uniform sample of at most that many rows, drawn in
    one streaming pass under the model's seed, so the table need not fit in memory; the bundle's
    training summary records the sample (`training["sample"]`). Under torchrun each rank reads
    its own share of the rows and fits on it, and rank 0 alone writes the bundle (see
    `flowcli.table.shards` and `flowcli.parallel.torchrun`). A CSV is read in its sniffed dialect,
    which `csv` overrides, and the bundle records it.
    """
    started = time.perf_counter() if started is None else started
    if max_rows is not None and max_rows < 1:
        raise DataError(f"max_rows must be 1 or more, not {max_rows}")
    check_destination(output, force=force, inputs=[data])  # fail before training, not after
    model = TabularFlow(**(hyperparameters or {}))
    if torchrun.world_size() > 1:
        table, rows_read = read_shard(data, format, max_rows=max_rows, seed=model.seed, csv=csv)
    elif max_rows is None:
        table = read_table(data, format, csv)
    else:
        table, rows_read = read_sample(data, format, max_rows=max_rows, seed=model.seed, csv=csv)
    model.fit(table, columns=columns, kinds=kinds, ignore=ignore, on_epoch=on_epoch,
              stop_requested=stop_requested, source=data, started=started)
    if max_rows is not None:
        model.training_["sample"] = {
            "method": "reservoir", "max_rows": max_rows, "rows": model.data_["rows"], "rows_read": rows_read,
        }
    if torchrun.rank() == 0:
        model.save(output, force=force, inputs=(data,))
    return model


def score_file(
    bundle: Path,
    data: str,
    output: str = "-",
    *,
    format: str | None = None,
    output_format: str | None = None,
    with_input: bool = False,
    percentile: bool = False,
    threshold: float | None = None,
    top: int | None = None,
    explain: bool = False,
    strict: bool = False,
    given: Sequence[str] = (),
    force: bool = False,
    batch_rows: int = BATCH_ROWS,
    on_rows: Callable[[int], None] | None = None,
    csv: CsvOptions | None = None,
) -> int:
    """Write `log_likelihood` for the rows of `data`; returns how many rows were written.

    By default every row, in input order. The ranking options add `anomaly_score` (higher = more
    anomalous, `flowcli.explain`) and rank by it: `percentile` adds the share (%) of validation rows at
    fit that were more anomalous; `threshold` keeps the rows below that percentile; `top` keeps the
    `top` most anomalous rows, most anomalous first, in memory for `top` rows only. `explain` adds
    the column whose value the rest of the row makes most surprising beyond its usual, and that
    excess in nats (`TabularFlow.explanations`; one more scoring pass per model column). With
    `given` columns the score is log p(other columns | given ones), with no anomaly score: rows
    rank by it, `percentile` among the conditional scores of rows the model samples, and
    `explain` names no given column.
    `on_rows` hears each batch's row count, for progress. A CSV is read in
    its sniffed dialect, which `csv` overrides; a model fitted on a CSV without a header reads
    `data` without one too.
    """
    model = TabularFlow.load(bundle)
    schema, batches = iter_batches(data, format, batch_rows=batch_rows, column_types=model.preprocessor_.read_types,
                                   csv=model_csv_options(model, csv))
    scorer = RowScorer(model, schema, data, with_input=with_input, percentile=percentile, threshold=threshold,
                       explain=explain, strict=strict, given=given, ranked=top is not None)

    def scored() -> Iterator[pa.RecordBatch]:
        for out in scorer.score_batches(batches):
            if on_rows is not None:
                on_rows(out.num_rows)
            yield out if threshold is None else out.filter(scorer.kept(out))

    results = scored() if top is None else most_anomalous(scored(), top, scorer.ranking)
    return write_batches(output, scorer.schema, results, output_format, force=force, inputs=(data, str(bundle)))


class RowScorer:
    """Scores record batches whose schema is `schema` (the model's columns among others): each
    call gives one output row per input row, with the columns of `self.schema`: `anomaly_score`
    too when the rows are `ranked` or given a percentile, unless scored `given` some columns,
    where they rank by the conditional log-likelihood (`self.ranking`). `score_file` and
    the Dask partitions (`flowcli.dask_scoring`) share it, so both write the same columns."""

    def __init__(
        self,
        model: TabularFlow,
        schema: pa.Schema,
        source: str,
        *,
        with_input: bool = False,
        percentile: bool = False,
        threshold: float | None = None,
        explain: bool = False,
        strict: bool = False,
        given: Sequence[str] = (),
        ranked: bool = False,
    ):
        require_columns(schema.names, model.columns_, source=source)
        self.model, self.source, self.with_input, self.explain, self.strict = model, source, with_input, explain, strict
        self.given = given_columns(list(given), model.preprocessor_, model.left_out_) if given else []
        self.unseen: collections.Counter = collections.Counter()  # values never seen at fit, per column, so far
        self.threshold = threshold
        self.percentile = percentile or threshold is not None
        ranked = ranked or self.percentile
        # Conditional scores are ranked among those of rows the model samples: the validation
        # rows' quantiles in the bundle are of joint scores.
        self.reference = given_quantiles(model, self.given) if self.given and self.percentile else None
        self.ranking = (SCORE_COLUMN, "ascending") if self.given else (ANOMALY_COLUMN, "descending")
        self.anomaly = ranked and not self.given
        added = [pa.field(SCORE_COLUMN, pa.float64())] + ([pa.field(ANOMALY_COLUMN, pa.float64())] if self.anomaly else [])
        added += [pa.field(PERCENTILE_COLUMN, pa.float64())] if self.percentile else []
        added += [pa.field(EXPLAIN_COLUMN, pa.string()), pa.field(EXPLAIN_NATS_COLUMN, pa.float64())] if explain else []
        clashes = [field.name for field in added if field.name in schema.names]
        if with_input and clashes:
            raise DataError(f"{source}: already has a column {clashes[0]!r}; rename it to use --with-input")
        # Numbers read as text (so that a stray word is found by row) go back out as numbers.
        self.numbers_as_text = [
            column.name for column in model.preprocessor_.columns
            if column.kind in ("continuous", "integer") and pa.types.is_string(schema.field(column.name).type)
        ]
        input_fields = [pa.field(f.name, pa.float64()) if f.name in self.numbers_as_text else f for f in schema]
        self.schema = pa.schema((input_fields if with_input else []) + added)

    def __call__(self, batch: pa.RecordBatch, first_row: int = 0) -> pa.RecordBatch:
        """Every row of `batch`, scored; `first_row` numbers its rows in error messages."""
        model, source = self.model, self.source
        joint = model.score_samples(batch, strict=self.strict, source=source, first_row=first_row, unseen=self.unseen)
        scores = model.conditional_scores(joint, batch, self.given, first_row=first_row) if self.given else joint
        columns = [from_numpy(scores.astype(np.float64))]
        if self.anomaly:
            anomaly = model.anomaly_scores(batch, joint)
            columns.append(from_numpy(anomaly.astype(np.float64)))
        if self.percentile:
            ranked = percentiles(scores, self.reference) if self.given else model.anomaly_percentile(anomaly)
            columns.append(from_numpy(ranked.astype(np.float64)))
        if self.explain:
            among = [name for name in model.columns_ if name not in self.given]
            names, nats = model.explanations(batch, scores=joint, source=source, first_row=first_row, among=among)
            columns += [pa.array(names, pa.string()), from_numpy(nats.astype(np.float64))]
        if self.with_input:
            columns[:0] = [
                parse_numbers(batch.column(name), name, source, first_row) if name in self.numbers_as_text
                else batch.column(name)
                for name in batch.schema.names
            ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def score_batches(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each batch scored, its rows numbered after the earlier batches' in error messages;
        values never seen at fit are counted over all batches and warned of once, at the end."""
        first_row = 0
        for batch in batches:
            yield self(batch, first_row=first_row)
            first_row += batch.num_rows
        if self.unseen:
            warnings.warn(unseen_message(self.source, self.unseen, self.model.preprocessor_), FlowcliWarning, 2)

    def kept(self, scored: pa.RecordBatch) -> pa.Array:
        """Which rows of a scored batch lie below the threshold percentile."""
        return pc.less(scored.column(PERCENTILE_COLUMN), self.threshold)


def most_anomalous(batches: Iterable[pa.RecordBatch], k: int, ranking: tuple[str, str]) -> Iterator[pa.RecordBatch]:
    """The first `k` rows of `batches` sorted by `ranking`, a (column, "ascending" or
    "descending") pair, ties in input order, holding at most about 2k rows at a time."""
    kept = None
    for batch in batches:
        kept = pa.Table.from_batches([batch]) if kept is None else pa.concat_tables([kept, pa.Table.from_batches([batch])])
        if kept.num_rows > 2 * k:
            kept = _first(kept, k, ranking)
    if kept is not None:
        yield from _first(kept, k, ranking).to_batches()


def given_quantiles(model: TabularFlow, given: Sequence[str], rows: int = 2_000) -> list[float]:
    """Quantiles of the conditional log-likelihoods, given `given`, of `rows` rows the model
    samples (seed 0): what `score --given --percentile` ranks a row's score among."""
    sampled = pa.Table.from_batches(list(model.sample_batches(rows, seed=0)))
    return quantiles(model.score_samples(sampled, given=given))


def _first(table: pa.Table, k: int, ranking: tuple[str, str]) -> pa.Table:
    order = pc.sort_indices(table, sort_keys=[ranking])  # stable
    return table.take(order[:k]).combine_chunks()


def sample_file(
    bundle: Path,
    n: int | None,
    output: str = "-",
    *,
    seed: int | None = None,
    given: dict | None = None,
    given_file: str | None = None,
    format: str | None = None,
    csv: CsvOptions | None = None,
    output_format: str | None = None,
    force: bool = False,
    batch_rows: int = BATCH_ROWS,
    on_rows: Callable[[int], None] | None = None,
) -> TabularFlow:
    """Write `n` synthetic rows with the original column names and units; `on_rows` hears each
    batch. `given` conditions them (`TabularFlow.sample_batches`); a `given_file` (CSV or
    Parquet, streamed) gives one output row per row instead (`TabularFlow.sample_given`). The
    conditions are checked before anything is written. Returns the model, whose `effort_` tells
    what conditioning cost."""
    model = TabularFlow.load(bundle)
    if given_file is not None:
        _, conditions = iter_batches(given_file, format, batch_rows=batch_rows, column_types=model.preprocessor_.read_types,
                                     csv=model_csv_options(model, csv))
        rows = model.sample_given(conditions, seed, source=given_file)
    else:
        if output != "-":
            bytes_per_value = 9 if table_format(output, output_format, output=True) == "parquet" else 20
            _check_room(Path(output), n * len(model.columns_) * bytes_per_value)
        rows = model.sample_batches(n, seed, batch_rows, given=given)
    first = next(rows, None)  # a bad condition fails here, before the output is opened

    def sampled() -> Iterator[pa.RecordBatch]:
        for batch in itertools.chain([first] if first is not None else [], rows):
            if on_rows is not None:
                on_rows(batch.num_rows)
            yield batch

    inputs = (str(bundle), *([given_file] if given_file else []))
    write_batches(output, model.sample_schema, sampled(), output_format, force=force, inputs=inputs)
    return model
