"""What synthetic rows and a model give away about the training rows.

- exact copies: synthetic rows equal, in every model column, to some training row;
- DCR, the distance to the closest training record (`ColumnValues.distance_features`): a
  synthetic row much closer to a training row than fresh real rows come is a near-copy;
- membership: how well a row's log-likelihood tells the rows the model was fitted on from rows
  it never saw (ROC AUC; 0.5 is no signal). A flow's exact likelihood makes this direct.
"""

from __future__ import annotations

import numpy as np

from flowcli.evaluate.values import ColumnValues

NEAR_QUANTILE = 5  # %: synthetic rows closer to training rows than this quantile of the holdout's DCR are "near"


def copy_share(train: ColumnValues, rows: ColumnValues) -> float:
    """The share of `rows` equal to some training row in every model column."""
    if rows.rows == 0:
        return float("nan")
    return float(np.isin(rows.row_keys(), train.row_keys()).mean())


def closest_distances(train: ColumnValues, *tables: ColumnValues) -> list[np.ndarray]:
    """For each of `tables`, each row's distance to its closest training record (N,), by
    scikit-learn's exact nearest-neighbour search."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=1).fit(train.distance_features())
    return [search.kneighbors(rows.distance_features(), return_distance=True)[0][:, 0] for rows in tables]


def distance_summary(synthetic: np.ndarray, holdout: np.ndarray) -> dict:
    """The DCR figures: both medians, the holdout's NEAR_QUANTILE % quantile, and the share of
    synthetic rows closer than it (about NEAR_QUANTILE / 100 when synthetic rows come as close as
    fresh real rows do; more means near-copies)."""
    near = float(np.percentile(holdout, NEAR_QUANTILE))
    return {
        "dcr_synthetic_median": float(np.median(synthetic)),
        "dcr_holdout_median": float(np.median(holdout)),
        f"dcr_holdout_p{NEAR_QUANTILE}": near,
        "closer_than_holdout_share": float(np.mean(synthetic < near)),
    }


def membership_auc(train_log_likelihood: np.ndarray, holdout_log_likelihood: np.ndarray) -> float:
    """ROC AUC of the log-likelihood as a score for "was fitted on": 0.5 when the model treats
    rows it saw and rows it did not alike; rows of probability zero rank lowest."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([train_log_likelihood, holdout_log_likelihood])
    labels = np.repeat([1, 0], [len(train_log_likelihood), len(holdout_log_likelihood)])
    return float(roc_auc_score(labels, np.nan_to_num(scores, neginf=np.finfo(np.float64).min)))
