"""One report on a model and its synthetic rows: likelihood, privacy, fidelity; and its gates.

`evaluate` takes tables already in memory (DataFrames, pyarrow Tables); `evaluate_files` reads
them from CSV or Parquet files and can also write the HTML page.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowcli.errors import DataError, FlowcliWarning
from flowcli.evaluate import fidelity, privacy
from flowcli.evaluate.values import ColumnValues
from flowcli.files import model_csv_options
from flowcli.model import TabularFlow
from flowcli.table.atomic import check_destination
from flowcli.table.dialect import CsvOptions
from flowcli.table.inputs import as_table
from flowcli.table.io import iter_batches
from flowcli.table.schema import require_columns

READ_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Evaluation:
    """The report (`report`, JSON-able, NaN and infinities as None) and what its plots need:
    the rows' log-likelihoods (N,) and the model columns of each table."""

    report: dict
    train_log_likelihood: np.ndarray
    holdout_log_likelihood: np.ndarray
    train: ColumnValues
    holdout: ColumnValues
    synthetic: ColumnValues


@dataclass(frozen=True)
class Gates:
    """Limits a CI pipeline sets on the report; None leaves a figure unchecked. All lie in [0, 1]."""

    max_membership_auc: float | None = None
    min_quality: float | None = None
    max_detection_auc: float | None = None
    max_exact_copies: float | None = None

    def __post_init__(self) -> None:
        for gate in fields(self):
            limit = getattr(self, gate.name)
            if limit is not None and not 0 <= limit <= 1:
                raise DataError(f"gate {_flag(gate.name)} is {limit}; give a value between 0 and 1")

    def failures(self, report: dict) -> list[str]:
        """One phrase per gate the report fails, naming the gate, its limit and the figure."""
        figures = {
            "max_membership_auc": ("membership_auc", report["likelihood"]["membership_auc"]),
            "min_quality": ("quality", report["fidelity"]["quality"]),
            "max_detection_auc": ("detection_auc", report["fidelity"]["detection_auc"]),
            "max_exact_copies": ("exact_copy_share", report["privacy"]["exact_copy_share"]),
        }
        failed = []
        for gate, (name, figure) in figures.items():
            limit = getattr(self, gate)
            if limit is None:
                continue
            passes = figure is not None and (figure >= limit if gate.startswith("min") else figure <= limit)
            if not passes:
                shown = "not computable" if figure is None else f"{figure:.4f}"
                failed.append(f"{_flag(gate)} {limit:g} failed: {name} is {shown}")
        return failed


def evaluate(
    model: TabularFlow,
    train: Any,
    holdout: Any,
    synthetic: Any = None,
    *,
    n: int | None = None,
    seed: int = 0,
    sources: tuple[str, str, str] = ("train", "holdout", "synthetic"),
) -> Evaluation:
    """Compare `model` and its synthetic rows with the rows it was fitted on (`train`) and real
    rows it never saw (`holdout`). Without `synthetic`, `n` rows (default: as many as `train`
    has) are sampled from the model with `seed`. Tables are DataFrames or pyarrow Tables with
    the model's columns; `sources` name them in errors and warnings."""
    started = time.perf_counter()
    tables = {}
    for name, data, source in zip(("train", "holdout"), (train, holdout), sources):
        tables[name] = _checked(model, as_table(data), source)
    if synthetic is None:
        rows = tables["train"].num_rows if n is None else n
        if rows < 1:
            raise DataError(f"cannot sample {rows} synthetic rows; give -n 1 or more")
        tables["synthetic"] = pa.Table.from_batches(list(model.sample_batches(rows, seed)), schema=model.sample_schema)
        origin = f"{rows:,} rows sampled from the model, seed {seed}"
    else:
        tables["synthetic"] = _checked(model, as_table(synthetic), sources[2])
        origin = sources[2]
    values = {name: ColumnValues.of(model.preprocessor_, table, source)
              for (name, table), source in zip(tables.items(), sources)}

    overlap = privacy.copy_share(values["train"], values["holdout"])
    if overlap > 0:
        warnings.warn(f"{sources[1]}: {overlap:.1%} of its rows also appear in {sources[0]}; the membership AUC "
                      "then means less (give rows the model was not fitted on)", FlowcliWarning, 2)
    train_ll = model.score_samples(tables["train"], source=sources[0])
    holdout_ll = model.score_samples(tables["holdout"], source=sources[1])
    synthetic_dcr, holdout_dcr = privacy.closest_distances(values["train"], values["synthetic"], values["holdout"])
    shapes = fidelity.column_shapes(values["train"], values["synthetic"])
    pairs = fidelity.pair_trends(values["train"], values["synthetic"])

    report = {
        "rows": {name: table.num_rows for name, table in tables.items()},
        "synthetic": origin,
        "likelihood": {
            "train_nll": float(-np.mean(train_ll)),
            "holdout_nll": float(-np.mean(holdout_ll)),
            "membership_auc": privacy.membership_auc(train_ll, holdout_ll),
        },
        "privacy": {
            "exact_copy_share": privacy.copy_share(values["train"], values["synthetic"]),
            "holdout_copy_share": overlap,
            **privacy.distance_summary(synthetic_dcr, holdout_dcr),
        },
        "fidelity": {
            **fidelity.quality(shapes, pairs),
            "detection_auc": fidelity.detection_auc(values["holdout"], values["synthetic"], seed),
            "detection_classifier": fidelity.CLASSIFIER,
            "columns": shapes,
            "pairs": pairs,
        },
    }
    report["seconds"] = round(time.perf_counter() - started, 2)
    return Evaluation(_json_safe(report), train_ll, holdout_ll, values["train"], values["holdout"], values["synthetic"])


def evaluate_files(
    bundle: Path,
    train: str,
    holdout: str,
    synthetic: str | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    html: Path | None = None,
    force: bool = False,
    csv: CsvOptions | None = None,
) -> Evaluation:
    """`evaluate` on CSV or Parquet files; with `html`, also write the report as one HTML page,
    atomically (checked before any work, so a bad destination costs nothing)."""
    inputs = [str(bundle), train, holdout, *([synthetic] if synthetic else [])]
    if html is not None:
        from flowcli.evaluate.html import require_matplotlib

        require_matplotlib()
        check_destination(Path(html), force=force, inputs=inputs)
    model = TabularFlow.load(bundle)
    tables = [_read(path, model, csv) if path is not None else None for path in (train, holdout, synthetic)]
    evaluation = evaluate(model, *tables, n=n, seed=seed, sources=(train, holdout, synthetic or "synthetic"))
    if html is not None:
        from flowcli.evaluate.html import write_html

        write_html(evaluation, Path(html), title=f"flowcli evaluate {bundle}", force=force, inputs=inputs)
    return evaluation


def _read(path: str, model: TabularFlow, csv: CsvOptions | None) -> pa.Table:
    """A whole table, its model columns read as `score` reads them (an all-blank CSV column too)."""
    schema, batches = iter_batches(path, None, batch_rows=READ_BATCH_ROWS, column_types=model.preprocessor_.read_types,
                                   csv=model_csv_options(model, csv))
    return pa.Table.from_batches(list(batches), schema=schema)


def _checked(model: TabularFlow, table: pa.Table, source: str) -> pa.Table:
    """The model's columns of `table`, which must have them all and at least one row."""
    require_columns(table.schema.names, model.columns_, source=source)
    if table.num_rows == 0:
        raise DataError(f"{source}: has no rows; give a table with rows to compare")
    return table.select(model.columns_)


def _flag(gate: str) -> str:
    return "--" + gate.replace("_", "-")


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a figure with nothing to compute it from, a row of probability zero)
    as None, so that the report is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
