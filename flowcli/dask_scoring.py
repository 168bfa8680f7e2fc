"""Scoring on a Dask cluster: every partition on the workers, the bundle loaded once per worker.

Needs `pip install 'flowcli[dask]'`; Dask is imported only when these functions run, so the
rest of flowcli never pays for it. `score_dask` maps a Dask DataFrame to its scores, lazily;
`score_to_folder` is `flowcli score --dask`: Parquet files in, one Parquet file per partition
out, in a folder that appears whole or not at all.

The bundle travels as bytes inside the task graph (one key, sent to each worker once), so the
workers need not see the bundle's path; each worker process loads it once and keeps it for the
partitions that follow. The data and the output folder must be at the same paths on every
worker (one machine, or a shared filesystem).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flowcli.errors import DataError, FlowcliError, OutputError
from flowcli.files import BATCH_ROWS, PERCENTILE_COLUMN, RowScorer
from flowcli.model import TabularFlow
from flowcli.table.io import table_format

INSTALL_HINT = "pip install 'flowcli[dask]'"
_CACHED_MODELS = 4  # bundles a worker keeps loaded at once
_models: dict[str, TabularFlow] = {}
_models_lock = threading.Lock()
loads = 0  # bundles this process has loaded from bytes (the tests count them per worker)


@dataclass(frozen=True)
class BundleBytes:
    """A .flow bundle's bytes and their SHA-256, which names the bundle in each worker's cache."""

    checksum: str
    data: bytes

    @classmethod
    def read(cls, path: str | Path) -> BundleBytes:
        data = Path(path).read_bytes()
        return cls(hashlib.sha256(data).hexdigest(), data)


def score_dask(
    bundle: str | Path,
    frame: Any,
    *,
    with_input: bool = False,
    percentile: bool = False,
    threshold: float | None = None,
    explain: bool = False,
    strict: bool = False,
) -> Any:
    """The scores of every row of the Dask DataFrame `frame`, as a lazy Dask DataFrame with the
    same partitions and index: the column `log_likelihood`, and the columns the options add (the
    input's first with `with_input`; see `files.score_file`). With `threshold`, a partition
    keeps only its rows below that percentile. The scores equal `TabularFlow.score_samples` on
    the same rows."""
    dask = _require_dask()
    model = TabularFlow.load(bundle)  # checks the bundle here, before any worker sees it
    options = {"with_input": with_input, "percentile": percentile, "threshold": threshold, "explain": explain,
               "strict": strict}
    schema = pa.Schema.from_pandas(frame._meta, preserve_index=False)
    meta = RowScorer(model, schema, "the Dask DataFrame", **options).schema.empty_table().to_pandas()
    payload = dask.delayed(BundleBytes.read(bundle), pure=True)  # one key in the graph, not one copy per task
    return frame.map_partitions(_score_partition, payload, options, meta=meta, align_dataframes=False)


def _score_partition(frame: Any, bundle: BundleBytes, options: dict, partition_info: dict | None = None) -> Any:
    """One partition's scores, as a pandas DataFrame with the partition's index. Runs on a worker."""
    source = f"partition {partition_info['number']}" if partition_info else "a partition"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    scorer = RowScorer(_model(bundle), table.schema, source, **options)
    scored = scorer.score_batches(table.to_batches(max_chunksize=BATCH_ROWS))  # the batches `flowcli score` takes
    result = pa.Table.from_batches(list(scored), schema=scorer.schema).to_pandas()
    result.index = frame.index
    return result if options["threshold"] is None else result[result[PERCENTILE_COLUMN] < options["threshold"]]


def _model(bundle: BundleBytes) -> TabularFlow:
    """The model in `bundle`, loaded once per process (a worker's threads share it)."""
    global loads
    with _models_lock:
        if bundle.checksum not in _models:
            while len(_models) >= _CACHED_MODELS:
                _models.pop(next(iter(_models)))
            # TabularFlow.load reads a path and checks the file; the worker's own temporary one.
            descriptor, name = tempfile.mkstemp(suffix=".flow")
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(bundle.data)
                _models[bundle.checksum] = TabularFlow.load(name)
                loads += 1
            finally:
                os.unlink(name)
        return _models[bundle.checksum]


def score_to_folder(
    bundle: str | Path,
    data: str,
    output: str | Path,
    *,
    scheduler: str,
    format: str | None = None,
    force: bool = False,
    **options: Any,
) -> tuple[int, int]:
    """Score the Parquet files `data` (a path, a glob such as 'data/*.parquet', or a folder) on
    the Dask cluster at `scheduler` ('local' starts one on this machine) and write one Parquet
    file per partition, part-00000.parquet and on, in input order, to the folder `output` (see
    `write_folder`). `options` are `score_dask`'s. Returns the number of files and of rows written.
    """
    _require_dask("distributed")
    import dask.dataframe as dd

    inputs = _parquet_inputs(data, format)
    _check_folder(Path(output).absolute(), force=force, inputs=inputs)  # before a cluster starts
    TabularFlow.load(bundle)  # likewise
    with _client(scheduler):
        frame = dd.read_parquet([str(path) for path in inputs])
        return write_folder(score_dask(bundle, frame, **options), output, force=force, inputs=inputs)


def write_folder(
    frame: Any, output: str | Path, *, force: bool = False, inputs: Sequence[Path] = ()
) -> tuple[int, int]:
    """Compute the Dask DataFrame `frame` into the folder `output`, one Parquet file per
    partition (part-00000.parquet and on, without the index), all or nothing: the files go to a
    temporary folder beside `output`, renamed into place once every partition is written. An
    existing non-empty folder is replaced only with `force`. A partition that Dask computes again
    (its worker died) rewrites its own file, so none is duplicated or missing. Returns the number
    of files and of rows written."""
    destination = Path(output).absolute()
    _check_folder(destination, force=force, inputs=inputs)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        frame.to_parquet(str(temporary), write_index=False, name_function=_part_name, write_metadata_file=False)
        files = sorted(temporary.glob("part-*.parquet"))
        rows = sum(pq.ParquetFile(file).metadata.num_rows for file in files)
        _replace_folder(temporary, destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return len(files), rows


def _part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def _parquet_inputs(data: str, format: str | None) -> list[Path]:
    """The files `data` names, sorted, as absolute paths (workers may run elsewhere)."""
    if data == "-":
        raise DataError("--dask reads files that the workers can open, not stdin; give a path or a glob")
    matches = sorted(Path(match) for match in glob.glob(data))
    if len(matches) == 1 and matches[0].is_dir():
        matches = sorted(path for path in matches[0].iterdir() if path.suffix.lower() in (".parquet", ".pq"))
    if not matches:
        raise DataError(f"{data}: no file matches; give Parquet files by path, glob ('data/*.parquet') or folder")
    for path in matches:
        if not path.is_file() or table_format(str(path), format) != "parquet":
            raise DataError(f"{path}: --dask reads Parquet files only; convert it, or score it without --dask")
    return [path.absolute() for path in matches]


def _check_folder(destination: Path, *, force: bool, inputs: Sequence[Path]) -> None:
    if not destination.parent.is_dir():
        raise OutputError(f"{destination}: folder {destination.parent} does not exist; "
                          "create it or choose another -o path")
    if destination.exists() and not destination.is_dir():
        raise OutputError(f"{destination}: is a file; --dask writes a folder of Parquet files, so give -o a folder")
    if any(path.resolve().is_relative_to(destination.resolve()) for path in inputs):
        raise OutputError(f"{destination}: holds the input; choose another -o folder")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise OutputError(f"{destination}: already exists and is not empty; pass --force to replace it")


def _replace_folder(temporary: Path, destination: Path) -> None:
    """Rename `temporary` to `destination`, moving an existing `destination` aside first."""
    if not destination.exists():
        os.replace(temporary, destination)
        return
    old = destination.with_name(f".{destination.name}.{os.getpid()}.old")
    os.replace(destination, old)
    os.replace(temporary, destination)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _client(scheduler: str) -> Iterator[Any]:
    """A Dask client, the default scheduler while the block runs: connected to `scheduler`, or
    to a cluster of local processes started for the block when it is 'local'."""
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(processes=True, dashboard_address=None, silence_logs=logging.ERROR)
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout="15s")
    except (OSError, TimeoutError, ValueError) as error:
        raise FlowcliError(f"--dask {scheduler}: cannot reach the scheduler ({error}); give its address, "
                           "as tcp://host:8786, or 'local'") from None
    with client:
        yield client


def _require_dask(*modules: str) -> Any:
    """The `dask` module, after importing dask.dataframe and `modules`; or a FlowcliError that
    says how to install them."""
    import importlib

    try:
        dask = importlib.import_module("dask")
        for name in ("dask.dataframe", *modules):  # dask.dataframe also needs pandas and pyarrow it accepts
            importlib.import_module(name)
    except ImportError as error:
        raise FlowcliError(f"scoring with Dask needs Dask, which is not installed ({error}); "
                           f"install it with: {INSTALL_HINT}") from None
    return dask
