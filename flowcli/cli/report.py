"""The readable `inspect` and `evaluate` reports, rendered from their JSON to fit 80 columns."""

from __future__ import annotations

from io import StringIO

from rich.console import Console
from rich.table import Table

from flowcli.flow import registry
from flowcli.table.dialect import Dialect

WIDTH = 80
PAIRS_SHOWN = 10  # associated column pairs the evaluate report lists


def render_report(description: dict, bundle: str) -> str:
    """The report as plain text (no colour codes), ready for stdout."""
    versions, training, architecture = description["versions"], description["training"], description["architecture"]
    console = _console()

    console.print(f"flowcli bundle {bundle}")
    console.print(_fields({
        "format version": description["format_version"],
        "written by": f"flowcli {versions['flowcli']}, torch {versions['torch']}",
        "created": description["created"],
        "data": f"{description['data']['rows']:,} rows, fingerprint {description['data']['fingerprint'][:23]}…",
        **({"read as": Dialect.from_json(description["data"]["csv_dialect"]).describe()}
           if "csv_dialect" in description["data"] else {}),
    }))

    console.print(f"\nColumns ({len(description['columns'])})")
    columns = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2), show_edge=False)
    for heading in ("name", "kind", "type", "preprocessing"):
        columns.add_column(heading, overflow="fold")
    for column in description["columns"]:
        columns.add_row(column["name"], column["kind"], column["dtype"], _preprocessing(column))
    console.print(columns)
    for name, reason in description["left_out"].items():
        console.print(f"  left out: {name!r} {reason}")

    console.print("\nArchitecture")
    console.print(_fields({
        "flow": _flow_line(architecture),
        "conditioners": f"MLP {architecture['depth']} × {architecture['hidden']} ReLU, "
                        + registry.coupling(architecture.get("coupling", "affine")).describe(architecture),
        "parameters": f"{architecture['parameters']:,}",
        **({"conditioned on": ", ".join(description["hyperparameters"]["condition"]) + " (fit --condition: exact draws "
            "given them cost what unconditional rows do)"} if description["hyperparameters"].get("condition") else {}),
    }))

    console.print("\nTraining")
    console.print(_fields({
        "rows": f"{training['rows_train']:,} train, {training['rows_val']:,} validation",
        **({"sample": _sample(training["sample"])} if "sample" in training else {}),
        "epochs": f"{training['epochs']} (best {training['best_epoch']}, stopped by {training['stopped']})",
        "best val NLL": f"{training['best_val_nll']:.4f} nats per row",
        **({"couplings tried": _tried(training["couplings"])} if "couplings" in training else {}),
        "wall time": f"{training['wall_seconds']:.1f} s on {training['device']}",
        "settings": f"seed {training['seed']}, batch size {training['batch_size']}, lr {training['lr']:g}",
        **({"recoveries": f"{training['recoveries']} (non-finite loss, retried at a lower lr)"} if training["recoveries"] else {}),
    }))
    return _text(console)


def _console() -> Console:
    """A plain-text console (no colour codes, no markup) that prints into a buffer."""
    return Console(file=StringIO(), width=WIDTH, no_color=True, highlight=False, emoji=False, markup=False)


def _text(console: Console) -> str:
    """What `console` printed, without trailing spaces."""
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()) + "\n"


def _sample(sample: dict) -> str:
    """How `fit --max-rows` chose the training rows."""
    if sample["rows"] >= sample["rows_read"]:
        return f"all {sample['rows_read']:,} rows, within --max-rows {sample['max_rows']:,}"
    return f"uniform reservoir sample, {sample['rows']:,} of {sample['rows_read']:,} rows (--max-rows)"


def _preprocessing(column: dict) -> str:
    """One line on how a column is encoded, from its manifest record."""
    if "levels" in column:
        text = f"{len(column['levels'])} levels"
        if column.get("rare"):
            text += f" + other ({column['rare_count']:,} rare values)"
        if None in column["levels"]:
            text += f", {column['probabilities'][column['levels'].index(None)]:.1%} missing"
        if column.get("parent") is not None:
            text += f", shares given {' and '.join(filter(None, (column['parent'], column.get('second_parent'))))}"
        return text
    transform = {"identity": "", "log": "log, ", "logit": "logit, "}[column.get("transform", "identity")]
    text = f"{transform}mean {column['mean']:.4g}, std {column['std']:.4g}"
    grid = column.get("grid", 1.0 if column.get("discrete") else 0.0)  # format 7, or `discrete` before
    if grid and not column.get("rounded"):
        text = "dequantized, " + text
    if column.get("low") is not None and column.get("high") is not None and "low" in column:
        text += f", range [{column['low']:.6g}, {column['high']:.6g}]"
    if grid and column.get("rounded"):
        text += f", grid {grid:.6g}"
    if column.get("atoms"):
        text += f", {len(column['atoms'])} heaped value{'s' if len(column['atoms']) > 1 else ''} widened"
    if column.get("missing_rate") is not None:
        text += f", {column['missing_rate']:.1%} missing"
    if column.get("parent") is not None:
        text += f", standardized at each level of {column['parent']}"
    return text


def _fields(values: dict) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style=None, no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in values.items():
        grid.add_row(f"  {name}", str(value))
    return grid


def fit_summary(description: dict, bundle: object) -> str:
    """The one line `fit` prints on stderr when it is done."""
    training = description["training"]
    return (
        f"wrote {bundle}: {len(description['columns'])} columns, {description['data']['rows']:,} rows, "
        f"{training['epochs']} epochs (stopped by {training['stopped']}), "
        f"best validation NLL {training['best_val_nll']:.4f} nats/row, "
        f"{training['wall_seconds']:.1f} s on {training['device']}"
        + (f", {training['recoveries']} recoveries from a non-finite loss" if training["recoveries"] else "")
    )


def _tried(couplings: dict[str, float]) -> str:
    """Each flow `--coupling auto` trained (`train.flow_name`), with its best validation NLL; the lowest was kept."""
    return ", ".join(f"{name} {nll:.4f}" for name, nll in couplings.items()) + " (the lowest was kept)"


def _flow_line(architecture: dict) -> str:
    """The flow's steps and base; bundles before format 3 have no mixing and no `coupling`, and
    before format 4 a normal base; the multivariate t came with format 5, the mixture with 6."""
    step = f"{architecture.get('coupling', 'affine')} coupling"
    if architecture.get("mixing", False):
        step = f"(linear mixing + {step})"
    return f"RealNVP: {architecture['layers']} × {step}, " + registry.base(architecture.get("base", "normal")).describe(architecture)


def render_evaluation(report: dict, bundle: str) -> str:
    """The readable `evaluate` report (`flowcli.evaluate.report`), as plain text for stdout."""
    likelihood, privacy, fidelity = report["likelihood"], report["privacy"], report["fidelity"]
    rows = report["rows"]
    console = _console()
    console.print(f"flowcli evaluate {bundle}")
    console.print(_fields({
        "rows": f"{rows['train']:,} train, {rows['holdout']:,} holdout, {rows['synthetic']:,} synthetic",
        "synthetic": report["synthetic"],
        "time": f"{report['seconds']} s",
    }))
    console.print("\nLikelihood (nats per row)")
    console.print(_fields({
        "train NLL": _figure(likelihood["train_nll"]),
        "holdout NLL": _figure(likelihood["holdout_nll"]),
        "membership AUC": f"{_figure(likelihood['membership_auc'], 3)} (0.5: training rows score like unseen rows)",
    }))
    console.print("\nPrivacy of the synthetic rows")
    near = next(key for key in privacy if key.startswith("dcr_holdout_p"))
    console.print(_fields({
        "exact copies": f"{_share(privacy['exact_copy_share'])} of synthetic rows equal a training row "
                        f"(holdout rows: {_share(privacy['holdout_copy_share'])})",
        "closest record": f"median distance {_figure(privacy['dcr_synthetic_median'], 3)} for synthetic rows, "
                          f"{_figure(privacy['dcr_holdout_median'], 3)} for holdout rows",
        "near records": f"{_share(privacy['closer_than_holdout_share'])} of synthetic rows lie closer than "
                        f"{near[len('dcr_holdout_p'):]}% of holdout rows do ({_figure(privacy[near], 3)})",
    }))
    console.print("\nFidelity")
    console.print(_fields({
        "quality": f"{_figure(fidelity['quality'], 3)} (column shapes {_figure(fidelity['column_shapes'], 3)}, "
                   f"pair trends {_figure(fidelity['column_pair_trends'], 3)})",
        "detection AUC": f"{_figure(fidelity['detection_auc'], 3)} (0.5: holdout and synthetic rows "
                         f"indistinguishable; {fidelity['detection_classifier']})",
    }))
    console.print("\nColumns, worst first")
    columns = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2), show_edge=False)
    for heading in ("column", "metric", "score"):
        columns.add_column(heading, overflow="fold")
    for entry in sorted(fidelity["columns"], key=lambda entry: _sort_score(entry["score"])):
        columns.add_row(entry["column"], entry["metric"], _figure(entry["score"], 3))
    console.print(columns)
    counted = sorted((pair for pair in fidelity["pairs"] if pair["counts"]), key=lambda pair: _sort_score(pair["score"]))
    if counted:
        console.print(f"\nAssociated pairs, worst first ({len(counted)} of {len(fidelity['pairs'])} pairs count)")
        pairs = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2), show_edge=False)
        for heading in ("columns", "metric", "score", "real", "synthetic"):
            pairs.add_column(heading, overflow="fold")
        for pair in counted[:PAIRS_SHOWN]:
            pairs.add_row(" × ".join(pair["columns"]), pair["metric"], _figure(pair["score"], 3),
                          _figure(pair["real"], 3), _figure(pair["synthetic"], 3))
        console.print(pairs)
    return _text(console)


def _figure(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _sort_score(score: float | None) -> float:
    return -1.0 if score is None else score
