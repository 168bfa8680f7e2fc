"""`inspect --plot`: training curves, marginals and correlations, real against synthetic, as one PNG.

The real side comes from the summary a bundle keeps of its training data (`summary`),
or from a table the user passes. matplotlib is an optional extra, loaded by `evaluate.html.require_matplotlib`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from flowcli.encode.columns import CategoricalColumn
from flowcli.errors import FlowcliError
from flowcli.evaluate.html import require_matplotlib
from flowcli.model import TabularFlow
from flowcli.summary import BINS, MAX_COLUMNS, column_numbers, correlation
from flowcli.table.atomic import atomic_path

SAMPLES = 5_000


def plot_diagnostics(model: TabularFlow, destination: Path, *, real: pa.Table | None = None, force: bool = False) -> Path:
    """Draw the diagnostics of `model` into a PNG at `destination`, atomically."""
    plt = require_matplotlib("--plot")
    if real is None and not model.reference_:
        raise FlowcliError("this bundle keeps no summary of its training data; pass the data with --data")

    columns = model.preprocessor_.columns[:MAX_COLUMNS]
    synthetic = pa.Table.from_batches(list(model.sample_batches(SAMPLES, seed=0)))
    width = 4
    rows = 1 + -(-len(columns) // width)
    figure = plt.figure(figsize=(4 * width, 3.2 * rows), constrained_layout=True)
    grid = figure.add_gridspec(rows, width)

    curves = figure.add_subplot(grid[0, : width // 2])
    history = np.asarray(model.training_["history"]).reshape(-1, 2)
    epochs = np.arange(1, len(history) + 1)
    curves.plot(epochs, history[:, 0], label="train")
    curves.plot(epochs, history[:, 1], label="validation")
    curves.set(title="NLL per row (nats)", xlabel="epoch")
    curves.legend()

    for k, column in enumerate(columns):
        axes = figure.add_subplot(grid[1 + k // width, k % width])
        _marginal(axes, column, model, synthetic, real)

    real_u = model.preprocessor_.encode(real, _half(model, real.num_rows))[0] if real is not None else None
    real_correlation = correlation(model.preprocessor_, real_u) if real_u is not None else np.asarray(model.reference_["correlation"])
    synthetic_correlation = correlation(model.preprocessor_, model.preprocessor_.encode(synthetic, _half(model, SAMPLES))[0])
    for slot, (title, matrix) in enumerate((("real correlation", real_correlation), ("synthetic correlation", synthetic_correlation))):
        axes = figure.add_subplot(grid[0, width // 2 + slot])
        image = axes.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
        axes.set_title(title)
        names = [column.name for column in columns]
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        axes.set_yticks(range(len(names)), names, fontsize=7)
    figure.colorbar(image, ax=axes, shrink=0.8)

    with atomic_path(Path(destination), force=force) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)
    return Path(destination)


def _marginal(axes, column, model: TabularFlow, synthetic: pa.Table, real: pa.Table | None) -> None:
    """One column: real against synthetic, as histograms (numbers) or bars (categories)."""
    axes.set_title(f"{column.name} ({column.kind})", fontsize=9)
    if isinstance(column, CategoricalColumn):
        labels = [str(level) for level in column.levels][:20]
        fake = _frequencies(synthetic.column(column.name), column.levels[:20])
        true = _frequencies(real.column(column.name), column.levels[:20]) if real is not None else column.probabilities[:20]
        positions = np.arange(len(labels))
        axes.bar(positions - 0.2, true, width=0.4, label="real")
        axes.bar(positions + 0.2, fake, width=0.4, label="synthetic")
        axes.set_xticks(positions, labels, rotation=90, fontsize=7)
    else:
        if real is not None:
            counts, edges = np.histogram(column_numbers(column, real), bins=BINS)
        else:
            summary = model.reference_["histograms"][column.name]
            counts, edges = np.asarray(summary["counts"]), np.asarray(summary["edges"])
        axes.stairs(counts / max(counts.sum(), 1) / np.diff(edges), edges, fill=True, alpha=0.5, label="real")
        fake = column_numbers(column, synthetic)
        axes.hist(fake[np.isfinite(fake)], bins=edges, density=True, histtype="step", linewidth=1.5, label="synthetic")
    axes.legend(fontsize=7)


def _frequencies(values: pa.ChunkedArray, levels: list) -> list[float]:
    observed = values.to_pylist()
    return [sum(value == level for value in observed) / max(len(observed), 1) for level in levels]


def _half(model: TabularFlow, rows: int) -> np.ndarray:
    return np.full((rows, model.preprocessor_.width), 0.5)
