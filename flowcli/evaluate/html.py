"""The evaluation report as one self-contained HTML page: the figures, per-column and per-pair
tables, and plots embedded as PNG (real against synthetic per column, both association
matrices, the log-likelihoods of training and holdout rows). matplotlib is imported here only.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from flowcli.encode.columns import CategoricalColumn
from flowcli.errors import FlowcliError
from flowcli.evaluate.values import ColumnValues
from flowcli.table.atomic import atomic_path

MAX_PLOTTED = 24  # columns drawn, in the model's order
MAX_BARS = 20  # categories drawn per column, the most frequent real ones
BINS = 30
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"""


def require_matplotlib(option: str = "--html"):
    """matplotlib's pyplot, on the Agg backend; a FlowcliError naming `option` and the extra
    when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FlowcliError(f"{option} needs matplotlib: pip install 'flowcli[plot]'") from None
    return plt


def write_html(evaluation, destination: Path, *, title: str, force: bool = False, inputs: Iterable[str] = ()) -> Path:
    """Write `evaluation` (an `Evaluation`) as one HTML page at `destination`, atomically."""
    plt = require_matplotlib()
    report = evaluation.report
    sections = [f"<h1>{html.escape(title)}</h1>", f"<p>{_rows_line(report)}</p>"]
    for group in ("likelihood", "privacy", "fidelity"):
        figures = {key: value for key, value in report[group].items() if not isinstance(value, list)}
        sections.append(f"<h2>{group.capitalize()}</h2>" + _table(["figure", "value"], figures.items()))
    sections.append("<h2>Columns</h2>" + _table(["column", "metric", "score"],
                    ((c["column"], c["metric"], c["score"]) for c in report["fidelity"]["columns"])))
    sections.append(_image(plt, _marginals(plt, evaluation.train, evaluation.synthetic)))
    sections.append("<h2>Column pairs</h2>" + _image(plt, _associations(plt, report["fidelity"]["pairs"], evaluation.train.names)))
    sections.append(_table(["columns", "metric", "score", "real", "synthetic", "counts"],
                           ((" × ".join(p["columns"]), p["metric"], p["score"], p["real"], p["synthetic"], p["counts"])
                            for p in report["fidelity"]["pairs"])))
    sections.append("<h2>Log-likelihoods</h2>" + _image(plt, _likelihoods(plt, evaluation.train_log_likelihood,
                                                                           evaluation.holdout_log_likelihood)))
    sections.append(f"<details><summary>JSON</summary><pre>{html.escape(json.dumps(report, indent=2))}</pre></details>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
    with atomic_path(destination, force=force, inputs=inputs) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return destination


def _rows_line(report: dict) -> str:
    rows = report["rows"]
    return html.escape(f"{rows['train']:,} training rows, {rows['holdout']:,} holdout rows, "
                       f"{rows['synthetic']:,} synthetic rows ({report['synthetic']}); {report['seconds']} s")


def _table(headings: list[str], rows: Iterable[Iterable]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"<td class='n'>{value:.4f}</td>"
    return f"<td>{html.escape('n/a' if value is None else str(value))}</td>"


def _image(plt, figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _marginals(plt, real: ColumnValues, synthetic: ColumnValues):
    """Real against synthetic per column: densities for numbers, shares for categories."""
    shown = min(len(real.names), MAX_PLOTTED)
    width = min(shown, 4)
    figure, axes = plt.subplots(-(-shown // width), width, figsize=(4 * width, 3 * -(-shown // width)),
                                squeeze=False, constrained_layout=True)
    for j, ax in enumerate(axes.flat):
        if j >= shown:
            ax.set_visible(False)
            continue
        x, y = real.values[j], synthetic.values[j]
        ax.set_title(real.names[j], fontsize=9)
        if real.is_categorical(j):
            column: CategoricalColumn = real.preprocessor.columns[j]
            codes, counts = np.unique(x[~np.isnan(x)], return_counts=True)
            codes = codes[np.argsort(-counts)][:MAX_BARS]
            labels = [_level_name(column, int(code)) for code in codes]
            positions = np.arange(len(codes))
            ax.bar(positions - 0.2, [np.mean(x == code) for code in codes], width=0.4, label="real")
            ax.bar(positions + 0.2, [np.mean(y == code) for code in codes], width=0.4, label="synthetic")
            ax.set_xticks(positions, labels, rotation=90, fontsize=7)
        else:
            present = np.concatenate([x[~np.isnan(x)], y[~np.isnan(y)]])
            edges = np.histogram_bin_edges(present, bins=BINS) if len(present) else BINS
            ax.hist(x[~np.isnan(x)], bins=edges, density=True, alpha=0.5, label="real")
            ax.hist(y[~np.isnan(y)], bins=edges, density=True, histtype="step", linewidth=1.5, label="synthetic")
        ax.legend(fontsize=7)
    return figure


def _level_name(column: CategoricalColumn, code: int) -> str:
    if code < len(column.levels):
        return str(column.levels[code])
    return "other" if code == len(column.levels) else "unseen"


def _associations(plt, pairs: list[dict], names: list[str]):
    """Both association matrices: Pearson's r for two numbers, Cramér's V otherwise."""
    index = {name: k for k, name in enumerate(names)}
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.5), constrained_layout=True)
    for ax, side in zip(axes, ("real", "synthetic")):
        matrix = np.eye(len(names))
        for pair in pairs:
            a, b = (index[name] for name in pair["columns"])
            matrix[a, b] = matrix[b, a] = np.nan if pair[side] is None else pair[side]
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_title(f"{side} association")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def _likelihoods(plt, train: np.ndarray, holdout: np.ndarray):
    """The log-likelihoods of training and holdout rows: apart when the model memorized."""
    figure, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
    finite = [scores[np.isfinite(scores)] for scores in (train, holdout)]
    edges = np.histogram_bin_edges(np.concatenate(finite), bins=50)
    for scores, label in zip(finite, ("training rows", "holdout rows")):
        ax.hist(scores, bins=edges, density=True, histtype="step", linewidth=1.5, label=label)
    ax.set(xlabel="log-likelihood (nats)", ylabel="density")
    ax.legend()
    return figure
