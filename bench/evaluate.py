"""`flowcli evaluate` beside SDMetrics' QualityReport and its DCR metrics, on the same tables.

Run: .venv-bench/bin/python bench/evaluate.py [--budget 30]; it needs sdmetrics beside flowcli.

Each public table (those of bench/fidelity.py) is split 70/30 into training and holdout rows
(at most ROWS in all). flowcli fits the training rows for --budget seconds and samples as many
rows; both tools then judge the same three tables. Reported: flowcli's quality and SDMetrics'
(and their difference), each tool's distance-to-closest-record medians (flowcli: Euclidean on
the model's scale, categories 0/1; SDMetrics: mean per-column range-scaled distance, so the
two are on different scales and only their ratios to the holdout compare), and the time each
took: flowcli's whole report (likelihoods, membership, copies, DCR, quality, detection) against
SDMetrics' QualityReport + DCRBaselineProtection + DCROverfittingProtection, the DCR metrics on
DCR_ROWS synthetic rows (their subsample option: on whole tables they run for hours). The last row is a
generated table of 50,000 training rows × 20 columns (and 50,000 holdout rows), timed through
the `flowcli evaluate` command itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table
from fidelity import load_tables

ROWS = 20_000
DCR_ROWS = 1_000  # synthetic rows SDMetrics' DCR metrics see (their num_rows_subsample)
SDV_TYPES = {"continuous": "numerical", "integer": "numerical", "datetime": "datetime",
             "categorical": "categorical", "boolean": "boolean"}


def metadata(model) -> dict:
    """SDMetrics metadata with the kinds flowcli modeled, so that both judge each column alike."""
    return {"columns": {column.name: {"sdtype": SDV_TYPES[column.kind]} for column in model.preprocessor_.columns}}


def sdmetrics_report(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, meta: dict) -> tuple[dict, float]:
    from sdmetrics.reports.single_table import QualityReport
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

    started = time.perf_counter()
    report = QualityReport()
    report.generate(train, synthetic, meta, verbose=False)
    # On whole tables SDMetrics' DCR runs for hours (tens of thousands of rows); its own subsample
    # option keeps it to minutes, so its time here is for DCR_ROWS synthetic rows, flowcli's for all.
    baseline = DCRBaselineProtection.compute_breakdown(train, synthetic, meta, None, num_rows_subsample=DCR_ROWS)
    overfitting = DCROverfittingProtection.compute_breakdown(train, synthetic, holdout, meta, None, num_rows_subsample=DCR_ROWS)
    seconds = time.perf_counter() - started
    return {"quality": report.get_score(), "dcr_synthetic": baseline["median_DCR_to_real_data"]["synthetic_data"],
            "closer_to_train": overfitting["synthetic_data_percentages"]["closer_to_training"]}, seconds


def judge(name: str, data: pd.DataFrame, budget: float) -> dict:
    from flowcli import TabularFlow
    from flowcli.evaluate import evaluate

    data = data.sample(min(len(data), ROWS), random_state=0).reset_index(drop=True)
    cut = int(0.7 * len(data))
    train, holdout = data.iloc[:cut].reset_index(drop=True), data.iloc[cut:].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabularFlow(max_time=budget, seed=0).fit(train)
        train, holdout = train[model.columns_], holdout[model.columns_]
        synthetic = model.sample(len(train), seed=0)
        started = time.perf_counter()
        ours = evaluate(model, train, holdout, synthetic).report
        our_seconds = time.perf_counter() - started
        theirs, their_seconds = sdmetrics_report(train, holdout, synthetic.astype(train.dtypes.to_dict(), errors="ignore"),
                                                 metadata(model))
    privacy = ours["privacy"]
    return {
        "table": name, "rows": f"{len(train):,} + {len(holdout):,}", "columns": len(model.columns_),
        "quality (flowcli)": ours["fidelity"]["quality"], "quality (SDMetrics)": theirs["quality"],
        "difference": ours["fidelity"]["quality"] - theirs["quality"],
        "DCR synthetic / holdout (flowcli)": privacy["dcr_synthetic_median"] / privacy["dcr_holdout_median"],
        "DCR synthetic (SDMetrics)": theirs["dcr_synthetic"],
        "time flowcli (s)": our_seconds, "time SDMetrics (s)": their_seconds, "time ratio": their_seconds / our_seconds,
    }


def generated(rows: int, seed: int) -> pd.DataFrame:
    """14 numbers (some skewed, some correlated) and 6 categories, some tied to the numbers."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 14)) @ np.triu(rng.uniform(-0.5, 0.5, (14, 14)) + np.eye(14))
    frame = pd.DataFrame({f"x{j}": np.exp(z[:, j]) if j % 3 == 0 else z[:, j] for j in range(14)})
    for j in range(6):
        frame[f"c{j}"] = np.where(z[:, j] > 0.5, "high", np.where(rng.random(rows) < 0.5, "low", f"mid{j}"))
    return frame


def command_time(budget: float) -> dict:
    """`flowcli fit` then a timed `flowcli evaluate` on 50,000 × 20 training rows."""
    flowcli = str(Path(sys.executable).with_name("flowcli"))
    with tempfile.TemporaryDirectory() as folder:
        train, holdout, bundle = Path(folder, "train.parquet"), Path(folder, "holdout.parquet"), Path(folder, "m.flow")
        generated(50_000, 0).to_parquet(train)
        generated(50_000, 1).to_parquet(holdout)
        subprocess.run([flowcli, "fit", train, "-o", bundle, "--max-time", str(budget), "-q"], check=True)
        started = time.perf_counter()
        subprocess.run([flowcli, "evaluate", bundle, "--train", train, "--holdout", holdout, "--json", "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        return {"table": "generated, `flowcli evaluate` command", "rows": "50,000 + 50,000", "columns": 20,
                "time flowcli (s)": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30, help="seconds of flowcli training per table")
    args = parser.parse_args()
    rows = [judge(name, table, args.budget) for name, table in load_tables().items()]
    rows.append(command_time(args.budget))
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    write_table("evaluate", "bench/evaluate.py", markdown(frame))


def markdown(frame: pd.DataFrame) -> str:
    cells = [[f"{value:.3f}" if isinstance(value, float) else str(value) for value in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row).replace("nan", "—") + " |" for row in cells])


if __name__ == "__main__":
    main()
