"""Anomaly triage: the anomaly score, percentiles against validation, a threshold, the top K, and PyOD's names."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flowcli import TabularFlow
from flowcli.encode.categorical import CategoricalColumn
from flowcli.errors import DataError
from flowcli.explain import KNOTS, _category_tails
from flowcli.files import most_anomalous


def flowcli(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "flowcli", *map(str, args)], cwd=cwd, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    return pd.read_csv(io.BytesIO(result.stdout))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """2,000 correlated rows with 10 planted outliers (rows 100..109), and a bundle fit to the others."""
    folder = tmp_path_factory.mktemp("anomaly")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 2))
    table = pd.DataFrame({"a": z[:, 0], "b": z[:, 0] + 0.2 * z[:, 1]})
    table.iloc[100:110, 0] = np.linspace(1.5, 2.5, 10)
    table.iloc[100:110, 1] = -table.iloc[100:110, 0]  # against the correlation of 0.98
    table.to_csv(folder / "all.csv", index=False)
    TabularFlow(epochs=30, seed=0).fit(table.drop(index=range(100, 110))).save(folder / "model.flow")
    return folder


def test_percentile_is_the_share_of_validation_rows_more_anomalous(planted):
    scores = flowcli("score", "model.flow", "all.csv", "--percentile", cwd=planted)
    assert list(scores.columns) == ["log_likelihood", "anomaly_score", "percentile"]
    assert scores["percentile"].between(0, 100).all()
    assert np.all(np.diff(scores.sort_values("anomaly_score")["percentile"]) <= 0)  # monotone in the score
    inliers = scores.drop(index=range(100, 110))["percentile"]
    assert 35 < inliers.median() < 65  # validation rows are like the training rows
    assert (scores.loc[100:109, "percentile"] < 1).all()


def test_top_k_lists_the_most_anomalous_rows_first(planted):
    top = flowcli("score", "model.flow", "all.csv", "--with-input", "--top", "10", cwd=planted)
    everything = flowcli("score", "model.flow", "all.csv", "--percentile", cwd=planted)["anomaly_score"]
    assert len(top) == 10 and list(top.columns) == ["a", "b", "log_likelihood", "anomaly_score"]
    np.testing.assert_array_equal(top["anomaly_score"], -np.sort(-everything)[:10])
    assert set(top["a"].round(9)) == set(pd.read_csv(planted / "all.csv").loc[100:109, "a"].round(9))


def test_threshold_keeps_rows_below_the_percentile(planted):
    kept = flowcli("score", "model.flow", "all.csv", "--threshold", "1", cwd=planted)
    assert (kept["percentile"] < 1).all()
    assert 10 <= len(kept) < 100


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_most_anomalous_streams_in_bounded_memory_and_keeps_ties_in_order(order):
    scores = np.array([5.0, 1.0, 3.0, 1.0, -np.inf, 2.0, 1.0]) * (1 if order == "ascending" else -1)
    batches = [pa.record_batch({"score": scores[i:i + 2], "row": np.arange(i, min(i + 2, 7))}) for i in range(0, 7, 2)]
    top = pa.Table.from_batches(list(most_anomalous(iter(batches), 4, ("score", order))))
    assert top.column("row").to_pylist() == [4, 1, 3, 6]


def test_explain_names_the_column_out_of_keeping_with_the_row(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2000, 3))
    table = pd.DataFrame({"a": z[:, 0], "b": z[:, 0] + 0.2 * z[:, 1], "c": z[:, 2]})
    TabularFlow(epochs=30, seed=0).fit(table).save(tmp_path / "model.flow")
    odd = pd.DataFrame({"a": [0.1, 0.0, 1.0], "b": [0.1, 0.0, 1.0], "c": [6.0, -6.0, 0.0]})
    odd.loc[2, "b"] = -1.0  # against the correlation; c is ordinary
    odd.to_csv(tmp_path / "odd.csv", index=False)
    explained = flowcli("score", "model.flow", "odd.csv", "--explain", cwd=tmp_path)
    assert list(explained.columns) == ["log_likelihood", "explanation", "explanation_nats"]
    assert list(explained["explanation"][:2]) == ["c", "c"]
    assert explained["explanation"][2] in ("a", "b")
    assert (explained["explanation_nats"] > 5).all()  # each far more surprising than its column usually is


def test_explanations_do_not_depend_on_units():
    """Rescaling any column (metres to millimetres) leaves every explanation and its nats as they were."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((1500, 4))
    table = pd.DataFrame({"a": z[:, 0], "b": 3 + z[:, 0] + 0.3 * z[:, 1], "c": np.exp(z[:, 2]), "d": z[:, 3] + 0.5 * z[:, 2]})
    rows = table.iloc[:300].copy()
    rows.loc[:150, "b"] = rows.loc[:150, "b"].sample(frac=1, random_state=0).to_numpy()  # moved against a
    names, nats = TabularFlow(epochs=10, seed=0).fit(table).explanations(rows)
    assert len(set(names)) > 1
    for column in table.columns:
        scale = {column: 1000.0}
        rescaled_names, rescaled_nats = TabularFlow(epochs=10, seed=0).fit(table * pd.Series(scale).reindex(table.columns, fill_value=1.0)).explanations(
            rows * pd.Series(scale).reindex(table.columns, fill_value=1.0))
        assert list(rescaled_names) == list(names), column
        np.testing.assert_allclose(rescaled_nats, nats, atol=1e-3, err_msg=column)


def test_pyod_conventions(planted):
    model = TabularFlow.load(planted / "model.flow").set_params(contamination=0.05)
    table = pd.read_csv(planted / "all.csv")
    np.testing.assert_array_equal(model.decision_function(table), model.anomaly_scores(table))  # higher = odder
    labels = model.predict(table)
    assert set(labels) <= {0, 1}
    assert labels[100:110].all()  # the planted outliers, against the correlation: the joint view finds them
    assert 0.02 < labels.mean() < 0.1  # about the contamination
    assert 0.005 < model.predict(table, contamination=0.01).mean() < 0.03


def test_category_tails_sum_the_values_no_more_common():
    column = CategoricalColumn("c", "categorical", "string", ["a", "b", "c", None], [0.6, 0.25, 0.1, 0.05])
    tails = _category_tails(column, pa.array(["a", "b", "c", None, "never"]))
    np.testing.assert_allclose(tails, [1.0, 0.4, 0.15, 0.05, 0.0])


def test_column_tails_count_shares_of_the_fitted_rows_on_either_side():
    table = pd.DataFrame({"x": np.random.default_rng(0).permutation(2000).astype(float)})
    model = TabularFlow(epochs=2, seed=0, val_fraction=0.01).fit(table)
    knots = model.anomaly_.knots[0]
    assert len(knots) == KNOTS and knots[0] <= 5 and knots[-1] >= 1990  # the training rows' (99 %) quantiles
    tails = model.anomaly_.column_tails(model.preprocessor_, pa.table({"x": [1000.0, 1990.0, 5.0, 1e6, -1e6]}))
    assert tails[0] == pytest.approx(np.log(2), abs=0.01)  # the median: half the rows on either side
    # 10 rows of 2000 lie at or above 1990 (or below 5): −log(share) on the side counted in full,
    # half that on the other (the skewness of a symmetric column is 0 up to rounding)
    long, short = (1, 2) if model.anomaly_.sides == (1,) else (2, 1)
    assert tails[long] == pytest.approx(-np.log(6 / (KNOTS + 1)), rel=0.2)
    assert tails[short] == pytest.approx(tails[long] / 2, rel=0.2)
    # Past the range: finite, the largest, and half of it on the short side
    assert sorted(tails[3:]) == pytest.approx([np.log(KNOTS + 1) / 2, np.log(KNOTS + 1)])


def test_column_tails_sum_each_columns_largest_surprise_on_its_long_side():
    """COPOD as PyOD computes it: per column the larger of the surprise on the side the column is
    skewed to and the mean of both sides' surprises, summed over the columns."""
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"up": rng.exponential(1.0, 3000), "down": -rng.exponential(1.0, 3000),
                          "kind": rng.choice(["a", "b", "c"], 3000, p=[0.7, 0.25, 0.05])})
    model = TabularFlow(epochs=2, seed=0, val_fraction=0.01).fit(table)
    assert model.anomaly_.sides[:2] == (1, -1)  # long right tail, long left tail
    rows = pa.table({"up": [np.median(table.up), 0.0, 8.0], "down": [np.median(table.down), -8.0, 0.0], "kind": ["a", "c", "b"]})
    each = [model.anomaly_._surprises(column, knots, rows.column(column.name))
            for column, knots in zip(model.preprocessor_.columns, model.anomaly_.knots)]
    (up_left, up_right, _), (down_left, down_right, _), (kind, _, single) = each
    assert single.all() and kind[0] < kind[2] < kind[1]  # the rarer the category, the larger its surprise
    expected = np.maximum(up_right, (up_left + up_right) / 2) + np.maximum(down_left, (down_left + down_right) / 2) + kind
    np.testing.assert_allclose(model.anomaly_.column_tails(model.preprocessor_, rows), expected)
    # Far out on each column's long side (row 1: down = −8; row 2: up = 8) counts in full; 0 sits
    # at the short end of both, which counts half.
    assert expected[1] > down_left[1] > 5 and expected[2] > up_right[2] > 5
    assert np.maximum(up_right, (up_left + up_right) / 2)[1] == pytest.approx(up_left[1] / 2, abs=0.01)


def test_a_category_of_numbers_counts_its_tails_along_their_order():
    """A 10 on a 1-10 scale is far out even when as common as a 5 (breastw's columns), as COPOD
    counts it; the same levels as strings have no order, and no tails beyond how rare they are."""
    rng = np.random.default_rng(2)
    scale = rng.integers(1, 11, 3000)
    table = pd.DataFrame({"scale": pd.array(np.where(rng.uniform(size=3000) < 0.05, None, scale), dtype="Int64"),
                          "label": [f"level {v}" for v in scale]})
    model = TabularFlow(epochs=2, seed=0, val_fraction=0.01).fit(table)
    scale_column, label_column = model.preprocessor_.columns
    assert isinstance(scale_column, CategoricalColumn) and scale_column.ordered and not label_column.ordered
    assert model.anomaly_.knots[0] is not None and model.anomaly_.knots[1] is None
    rows = pa.table({"scale": pa.array([5, 10, 1, None], pa.int64()), "label": ["level 5", "level 10", "level 1", "level 5"]})
    ordered, unordered = (model.anomaly_._surprises(column, knots, rows.column(column.name))
                          for column, knots in zip(model.preprocessor_.columns, model.anomaly_.knots))
    left, right, missing = ordered
    assert missing.tolist() == [False, False, False, True]
    # About a tenth of the rows lie at or above 10, and at or below 1; half at or below 5
    assert right[1] == pytest.approx(np.log(10), abs=0.15) and left[2] == pytest.approx(np.log(10), abs=0.15)
    assert left[0] == pytest.approx(np.log(2), abs=0.15) and left[1] == right[2] == 0
    assert left[3] == right[3] == pytest.approx(-np.log(scale_column.missing_rate))  # its indicator's tail
    # The strings' tails do not see the order: only how common each value is
    np.testing.assert_allclose(unordered[0], -np.log(_category_tails(label_column, rows.column("label"))))
    tails = model.anomaly_.column_tails(model.preprocessor_, rows)
    assert tails[1] > tails[0] + 0.7 and tails[2] > tails[0] + 0.7
    # Numbers declared categorical (store ids, say) keep no order
    declared = TabularFlow(epochs=2, seed=0, val_fraction=0.01).fit(table, kinds={"scale": "categorical"})
    assert not declared.preprocessor_.columns[0].ordered and declared.anomaly_.knots[0] is None


def test_a_bundle_cannot_order_levels_that_are_not_numbers():
    data = {"name": "c", "kind": "categorical", "dtype": "string", "levels": ["a", "b"], "probabilities": [0.5, 0.5]}
    assert not CategoricalColumn.from_json(data).ordered
    assert CategoricalColumn.from_json({**data, "dtype": "int64", "levels": [1, 2], "ordered": True}).ordered
    for wrong in ({"ordered": True}, {"dtype": "int64", "levels": [1, 2], "ordered": "yes"}):
        with pytest.raises(ValueError, match="ordered"):
            CategoricalColumn.from_json({**data, **wrong})


def test_predict_flags_the_contamination_share_of_fresh_rows_from_the_fitted_distribution():
    rng = np.random.default_rng(3)

    def rows(n):
        z = rng.standard_normal((n, 3))
        return pd.DataFrame({"a": z[:, 0], "b": np.exp(z[:, 0] + 0.3 * z[:, 1]), "k": rng.poisson(4 + 2 * (z[:, 2] > 0), n)})

    model = TabularFlow(epochs=30, seed=0).fit(rows(4000))
    fresh = rows(4000)
    for share in (0.01, 0.05, 0.1):  # within 3 standard errors of a quantile of the 400 validation rows
        assert abs(model.predict(fresh, contamination=share).mean() - share) < 3 * np.sqrt(share * (1 - share) / 400), share


def test_the_anomaly_score_ranks_by_the_first_epoch_density_that_has_not_learned_a_cluster_of_anomalies():
    """40 rows in a tight cluster off a correlated Gaussian's ridge: the fit learns them as a mode of
    their own (a fair share of them among its 40 least likely rows at most), the weights after its
    first epoch have not (most of them); `log_likelihood` stays the fit's, the anomaly score ranks
    by the first epoch's."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 2))
    cluster = rng.normal([1.2, -1.2], 0.02, (40, 2))
    table = pd.DataFrame(np.r_[np.c_[z[:, 0], 0.9 * z[:, 0] + 0.44 * z[:, 1]], cluster], columns=["a", "b"])
    model = TabularFlow(epochs=15, seed=0, coupling="affine").fit(table)
    log_p = model.score_samples(table)
    ranking = model.ranking_log_likelihood(table, log_p)

    def caught(log_likelihood: np.ndarray) -> float:
        return float(np.mean(np.argsort(log_likelihood)[:40] >= 4000))

    assert caught(log_p) < 0.35 and caught(ranking) > 0.5, (caught(log_p), caught(ranking))
    np.testing.assert_array_equal(model.ranking_log_likelihood(table), ranking)  # checked and scored in one pass
    with pytest.raises(DataError, match="outside the range"):
        model.ranking_log_likelihood(table.assign(a=table.a + 100), strict=True)
    tails = model.anomaly_.column_tails(model.preprocessor_, pa.Table.from_pandas(table))
    expected = (-ranking - model.anomaly_.centres[0]) / model.anomaly_.scales[0] + (tails - model.anomaly_.centres[1]) / model.anomaly_.scales[1]
    np.testing.assert_allclose(model.anomaly_scores(table), expected)


def test_bundles_before_format_9_rank_by_the_log_likelihood():
    folder = Path(__file__).parent / "fixtures" / "format_v8"
    model = TabularFlow.load(folder / "model.flow")
    rows = pd.read_parquet(folder / "rows.parquet")
    assert model.anomaly_ is None
    log_p = model.score_samples(rows)
    np.testing.assert_array_equal(model.decision_function(rows), -log_p)
    percentile = model.anomaly_percentile(-log_p)
    assert np.all(np.diff(percentile[np.argsort(log_p)]) >= 0)  # less likely, fewer validation rows below


def test_ranked_output_keeps_to_the_conditional_score_given_columns(planted):
    top = flowcli("score", "model.flow", "all.csv", "--given", "a", "--top", "5", "--percentile", cwd=planted)
    assert list(top.columns) == ["log_likelihood", "percentile"]
    assert np.all(np.diff(top["log_likelihood"]) >= 0)  # least likely given a, first
