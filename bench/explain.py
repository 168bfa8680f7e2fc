"""Does `score --explain` name the column that was moved? Injected anomalies on public tables,
flowcli's explanation beside per-feature attributions of other methods.

Run: .venv-bench/bin/python bench/explain.py [--max-time 20] [--seeds 3] [--rows 400]
Tables: the normal rows (is_anomaly = 0) of four ADBench tables in ../shared/data/adbench, and
sample_data/households.csv (mixed kinds). For each seed, flowcli fits its defaults with --max-time
on 80 % of the rows; in each of --rows held-out rows one column, chosen at random, is moved:
- swap: its value replaced by another held-out row's that differs by at least one standard
  deviation (a value ordinary for the column, out of keeping with the rest of the row);
- shift: moved by four standard deviations, up or down.
Reported: the share of rows where each method names the moved column, the median over seeds; for
swaps also among the rows that flowcli's anomaly score flags at 5 % (`predict`'s default), the rows
a user would ask to explain: a value swapped in from a similar row may leave its row ordinary.
Peers (numeric columns only): PyOD's COPOD per-dimension outlier scores (`O`, what its
`explain_outlier` plots), the column's z-score, and the z-score of its residual given the other
columns under a linear regression (a Gaussian conditional).
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table
from pyod.models.copod import COPOD
from sklearn.linear_model import LinearRegression

from flowcli import TabularFlow

ROOT = Path(__file__).resolve().parent.parent
ADBENCH = ROOT.parent / "shared" / "data" / "adbench"
TABLES = ("cardio", "wilt", "pendigits", "satimage_2")
METHODS = ("flowcli", "COPOD", "z-score", "linear residual")
KINDS = {  # injection: the title of its table
    "swap": "a value swapped in from another row (ordinary for its column)",
    "swap, flagged": "the same swapped rows, only those flowcli's anomaly score flags at 5 %",
    "shift": "a value moved by four standard deviations",
}


def load(name: str) -> pd.DataFrame:
    if name == "households":
        return pd.read_csv(ROOT / "sample_data" / "households.csv").drop(columns="meter_id")
    table = pd.read_parquet(ADBENCH / f"{name}.parquet")
    return table[table["is_anomaly"] == 0].drop(columns="is_anomaly").reset_index(drop=True)


def inject(rows: pd.DataFrame, kind: str, rng: np.random.Generator, spread: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """`rows` with one column per row moved; and the index of the moved column per row."""
    moved, columns = rows.copy(), rng.integers(0, rows.shape[1], len(rows))
    for i, j in enumerate(columns):
        name = rows.columns[j]
        if kind == "shift":  # whole numbers stay whole, so the column keeps its type
            shifted = rows.iat[i, j] + rng.choice([-4, 4]) * spread[name]
            moved.iat[i, j] = round(shifted) if pd.api.types.is_integer_dtype(rows[name]) else shifted
            continue
        far = np.flatnonzero(np.abs(rows[name].to_numpy() - rows.iat[i, j]) >= spread[name])
        if len(far):
            moved.iat[i, j] = rows.iat[rng.choice(far), j]
        else:  # a column of one value: nothing can be swapped in
            moved.iat[i, j] = rows.iat[i, j] + (round(spread[name]) or 1 if pd.api.types.is_integer_dtype(rows[name]) else spread[name])
    return moved, columns


def peers(train: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each peer's named column per row (index into rows.columns)."""
    x_train, x = train.to_numpy(float), rows.to_numpy(float)
    copod = COPOD().fit(x_train)
    copod.decision_function(x)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-12
    residual = np.zeros_like(x)
    for j in range(x.shape[1]):
        rest = np.delete(np.arange(x.shape[1]), j)
        fit = LinearRegression().fit(x_train[:, rest], x_train[:, j])
        scale = np.std(x_train[:, j] - fit.predict(x_train[:, rest])) + 1e-12
        residual[:, j] = np.abs(x[:, j] - fit.predict(x[:, rest])) / scale
    return {"COPOD": copod.O[-len(x):].argmax(axis=1), "z-score": (np.abs(x - mean) / std).argmax(axis=1),
            "linear residual": residual.argmax(axis=1)}


def run(name: str, seed: int, max_time: float, rows: int) -> dict[str, dict[str, float]]:
    table = load(name)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    cut = int(0.8 * len(table))
    train, held = table.iloc[order[:cut]], table.iloc[order[cut:cut + rows]].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabularFlow(max_time=max_time, seed=seed).fit(train)
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    spread = table[numeric].std()
    shares = {}
    for kind in ("swap", "shift"):
        moved, truth = inject(held[numeric], kind, rng, spread)
        rows_moved = held.copy()
        rows_moved[numeric] = moved
        truth_names = np.asarray(numeric)[truth]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            named = model.explain(rows_moved)
            flagged = model.predict(rows_moved, contamination=0.05) == 1
        hits = {"flowcli": named == truth_names}
        for peer, picks in peers(train[numeric], moved).items():
            hits[peer] = np.asarray(numeric)[picks] == truth_names
        shares[kind] = {method: float(np.mean(hit)) for method, hit in hits.items()}
        if kind == "swap":
            shares["swap, flagged"] = {method: float(np.mean(hit[flagged])) for method, hit in hits.items()}
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--tables", default=",".join((*TABLES, "households")))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    results = {}
    for name in args.tables.split(","):
        runs = [run(name, seed, args.max_time, args.rows) for seed in range(args.seeds)]
        results[name] = {kind: {m: statistics.median(r[kind][m] for r in runs) for m in METHODS} for kind in KINDS}
        print(name, results[name], flush=True)
    lines = []
    for kind, title in KINDS.items():
        lines += [f"**{title}**: share of rows where the moved column is named", "",
                  "| table | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
        for name, result in results.items():
            lines.append(f"| {name} | " + " | ".join(f"{result[kind][m]:.3f}" for m in METHODS) + " |")
        means = {m: statistics.mean(r[kind][m] for r in results.values()) for m in METHODS}
        lines += ["| **mean** | " + " | ".join(f"**{means[m]:.3f}**" for m in METHODS) + " |", ""]
    lines.append(f"Medians of {args.seeds} seeds; {args.rows} moved rows per table, seed and injection; "
                 f"flowcli fitted with `max_time={args.max_time:g}` and nothing else.")
    table = "\n".join(lines)
    print(table)
    if not args.no_docs:
        write_table("explain", "bench/explain.py", table)


if __name__ == "__main__":
    main()
