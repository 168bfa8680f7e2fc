"""How alike real and synthetic rows are: SDMetrics' quality score, and a detection test.

The quality score follows SDMetrics' QualityReport (sdmetrics 0.32) figure for figure:
- column shapes: per number or date column 1 − the Kolmogorov–Smirnov statistic, per category
  column 1 − the total variation distance, both over the values present;
- column pair trends: for two numbers 1 − |r_real − r_synthetic| / 2 with Pearson's r, else
  1 − the total variation distance of the two columns' joint frequencies, numbers cut into 10
  equal bins. A pair counts in the average only when the real columns are associated: |r| above
  0.5, or Cramér's V above 0.3;
- quality: the mean of the two averages.
As in SDMetrics' report, each table's numbers are cut at that table's own bin edges (its metric,
used alone, cuts both at the real ones). So a real column with far outliers the synthetic one
lacks scores its pairs low even where the two agree in shape: the pair's figure shows it.
"""

from __future__ import annotations

import itertools

import numpy as np

from flowcli.evaluate.values import ColumnValues

BINS = 10
MIN_CORRELATION, MIN_ASSOCIATION = 0.5, 0.3  # SDMetrics' thresholds for a pair to count
DETECTION_ROWS = 25_000  # rows of each side the detection classifier sees at most
FOLDS = 3
CLASSIFIER = "scikit-learn HistGradientBoostingClassifier, 3-fold cross-validated"


def column_shapes(real: ColumnValues, synthetic: ColumnValues) -> list[dict]:
    """Per column: {"column", "metric", "score"}; score NaN when a side has no values."""
    from scipy.stats import ks_2samp

    shapes = []
    for j, name in enumerate(real.names):
        x, y = _present(real.values[j]), _present(synthetic.values[j])
        if real.is_categorical(j):
            metric = "TVComplement"
            score = 1 - _total_variation(x, y) if len(x) and len(y) else np.nan
        else:
            metric = "KSComplement"
            score = 1 - ks_2samp(x, y).statistic if len(x) and len(y) else np.nan
        shapes.append({"column": name, "metric": metric, "score": float(score)})
    return shapes


def pair_trends(real: ColumnValues, synthetic: ColumnValues) -> list[dict]:
    """Per pair of columns: {"columns", "metric", "score", "real", "synthetic", "counts"}, where
    real and synthetic are the association (Pearson's r, or Cramér's V) and counts says whether
    the pair enters the average."""
    real_binned = [_binned(real, j) for j in range(len(real.names))]
    synthetic_binned = [_binned(synthetic, j) for j in range(len(real.names))]
    pairs = []
    for a, b in itertools.combinations(range(len(real.names)), 2):
        columns = [real.names[a], real.names[b]]
        if not real.is_categorical(a) and not real.is_categorical(b):
            r_real = _pearson(real.values[a], real.values[b])
            r_synthetic = _pearson(synthetic.values[a], synthetic.values[b])
            score = 1 - abs(r_real - r_synthetic) / 2
            pairs.append({"columns": columns, "metric": "CorrelationSimilarity", "score": float(score),
                          "real": float(r_real), "synthetic": float(r_synthetic), "counts": bool(abs(r_real) > MIN_CORRELATION)})
        else:
            v_real = _cramers_v(real_binned[a], real_binned[b])
            score = 1 - _total_variation(np.column_stack([real_binned[a], real_binned[b]]),
                                         np.column_stack([synthetic_binned[a], synthetic_binned[b]]))
            pairs.append({"columns": columns, "metric": "ContingencySimilarity", "score": float(score),
                          "real": float(v_real), "synthetic": float(_cramers_v(synthetic_binned[a], synthetic_binned[b])),
                          "counts": bool(v_real > MIN_ASSOCIATION)})
    return pairs


def quality(shapes: list[dict], pairs: list[dict]) -> dict:
    """{"quality", "column_shapes", "column_pair_trends"}: SDMetrics' averages (NaN-free where it can)."""
    shape = _mean([entry["score"] for entry in shapes])
    trend = _mean([entry["score"] for entry in pairs if entry["counts"]])
    return {"quality": _mean([shape, trend]), "column_shapes": shape, "column_pair_trends": trend}


def detection_auc(real: ColumnValues, synthetic: ColumnValues, seed: int) -> float:
    """The cross-validated ROC AUC with which a gradient-boosted classifier tells real rows from
    synthetic ones, on at most DETECTION_ROWS of each, as many of each: 0.5 when it cannot; NaN
    with fewer than FOLDS rows a side."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    rows = min(real.rows, synthetic.rows, DETECTION_ROWS)
    if rows < FOLDS:  # too few rows to cross-validate: no figure
        return float("nan")
    both = [side.take(np.sort(rng.choice(side.rows, rows, replace=False))) for side in (real, synthetic)]
    features = np.vstack([np.column_stack(side.values) for side in both])
    labels = np.repeat([0, 1], rows)
    # Level codes are categories to the classifier while they fit its 255 bins; else ordered codes.
    categorical = [real.is_categorical(j) and real.codes(j) < 255 for j in range(len(real.names))]
    classifier = HistGradientBoostingClassifier(categorical_features=np.array(categorical, bool), random_state=seed)
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(classifier, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, probabilities))


def _present(x: np.ndarray) -> np.ndarray:
    return x[~np.isnan(x)]


def _total_variation(x: np.ndarray, y: np.ndarray) -> float:
    """Half the L1 distance between the frequencies of the values (N,) or rows (N, k) of x and of y."""
    values, inverse = np.unique(np.concatenate([x, y]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    p = np.bincount(inverse[: len(x)], minlength=len(values)) / max(len(x), 1)
    q = np.bincount(inverse[len(x):], minlength=len(values)) / max(len(y), 1)
    return float(np.abs(p - q).sum() / 2)


def _binned(side: ColumnValues, j: int) -> np.ndarray:
    """Column j as codes (N,): a category's level, or a number's bin among BINS equal ones over
    this table's values (np.digitize, as SDMetrics cuts them: the largest value and missing
    values land past the last edge); a missing category gets a code of its own."""
    x = side.values[j]
    if side.is_categorical(j):
        return np.where(np.isnan(x), -1, x).astype(np.int64)
    present = _present(x)
    edges = np.histogram_bin_edges(present, bins=BINS) if len(present) else np.arange(BINS + 1.0)
    return np.digitize(x, edges).astype(np.int64)


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two code columns (scipy's, without continuity correction); NaN when either
    column takes one value only."""
    from scipy.stats.contingency import association, crosstab

    if len(a) == 0:
        return np.nan
    table = crosstab(a, b).count
    if min(table.shape) < 2:
        return np.nan
    return float(association(table, method="cramer"))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r over the rows where both are present; NaN for a constant column."""
    both = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[both], y[both]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(np.corrcoef(x, y)[0, 1])


def _mean(scores: list[float]) -> float:
    finite = [score for score in scores if np.isfinite(score)]
    return float(np.mean(finite)) if finite else float("nan")
