"""Right on tables as users have them: columns rounded to a grid are dequantized at their step (and
few repeated values off any grid get cells too), every finite number and date of a numeric column
scores finite, dates score alike whatever their type, and a column that counts the rows is left
out."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from flowcli import TabularFlow
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import DataError, FlowcliWarning

STEP = 0.5
COVARIANCE = np.array([[0.6, 0.35], [0.35, 0.5]])  # σ ≈ 0.75: about 1.5 steps per standard deviation


def rounded_gaussian(rows: int, seed: int) -> pd.DataFrame:
    z = np.random.default_rng(seed).multivariate_normal([1.0, -2.0], COVARIANCE, rows)
    return pd.DataFrame(np.round(z / STEP) * STEP, columns=["a", "b"])


def true_rounded_log_density(frame: pd.DataFrame) -> np.ndarray:
    """log P(the row's cell) − log(step²): the density per unit² of the rounded data, exactly."""
    normal = stats.multivariate_normal([1.0, -2.0], COVARIANCE)
    cells = {}
    for a, b in set(map(tuple, frame.to_numpy())):
        lo, hi = np.array([a, b]) - STEP / 2, np.array([a, b]) + STEP / 2
        cells[a, b] = (normal.cdf(hi) - normal.cdf([lo[0], hi[1]]) - normal.cdf([hi[0], lo[1]]) + normal.cdf(lo))
    return np.log([cells[a, b] for a, b in frame.to_numpy()]) - 2 * np.log(STEP)


@pytest.fixture(scope="module")
def grid_model() -> TabularFlow:
    return TabularFlow(max_time=20, seed=0).fit(rounded_gaussian(8_000, seed=0))


def test_a_rounded_column_is_dequantized_at_its_step_and_inspect_shows_it(grid_model):
    columns = {column["name"]: column for column in grid_model.describe()["columns"]}
    assert columns["a"]["grid"] == columns["b"]["grid"] == STEP and columns["a"]["rounded"]
    from flowcli.cli.report import render_report

    assert render_report(grid_model.describe(), "model.flow").count("grid 0.5") == 2
    samples = grid_model.sample(4_000, seed=1)
    assert np.allclose(samples[["a", "b"]] / STEP, np.round(samples[["a", "b"]] / STEP))  # samples keep the grid
    real = rounded_gaussian(4_000, seed=4)
    for name in ("a", "b"):  # on the grid points the data use, as often (a floor would shift them a step)
        assert abs(samples[name].mean() - real[name].mean()) < 0.1, name
        shares = pd.concat([samples[name].value_counts(normalize=True), real[name].value_counts(normalize=True)], axis=1).fillna(0)
        assert (shares.iloc[:, 0] - shares.iloc[:, 1]).abs().max() < 0.05, name


def test_scores_of_rounded_rows_match_the_true_density_of_the_rounded_data(grid_model):
    test = rounded_gaussian(4_000, seed=1)
    gap = grid_model.score_samples(test).mean() - true_rounded_log_density(test).mean()
    # Without dequantization the flow spikes on the grid and scores far above the truth (4.2
    # nats per row measured on a 3-column table); a little below it is the fit's own KL gap.
    assert -0.1 < gap < 0.03, gap


def test_a_value_moved_within_its_cell_scores_like_the_grid_value(grid_model):
    test = rounded_gaussian(1_000, seed=2)
    moved = test + np.random.default_rng(3).uniform(-STEP / 2.2, STEP / 2.2, test.shape)
    difference = grid_model.score_samples(moved) - grid_model.score_samples(test)
    assert np.abs(difference).mean() < 0.5, np.abs(difference).mean()


@pytest.fixture(scope="module")
def positive_model() -> TabularFlow:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "amount": np.round(rng.lognormal(3, 1, 3_000), 2),  # positive: a log
        "share": rng.beta(2, 5, 3_000),  # within [0, 1]: a logit
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, 3_000), unit="D"),
    })
    return TabularFlow(epochs=15, seed=0).fit(frame)


def test_every_finite_value_scores_finite_and_is_counted_in_one_warning(positive_model):
    edge = positive_model.preprocessor_.columns
    low = {column.name: column.low for column in edge}
    rows = pd.DataFrame({
        "amount": [0.0, -5.0, 1e9, low["amount"]],
        "share": [1.2, -0.3, 0.2, 0.2],
        "when": pd.to_datetime(["2023-12-31", "1900-01-01", "2024-06-01", "2024-06-01"]),
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = positive_model.score_samples(rows)
    assert np.all(np.isfinite(scores)), scores
    messages = [str(w.message) for w in caught if issubclass(w.category, FlowcliWarning)]
    assert len(messages) == 1 and "'amount' (3)" in messages[0] and "'share' (2)" in messages[0] and "'when' (2)" in messages[0]
    with pytest.raises(DataError, match="outside the range seen at fit.*'amount'"):
        positive_model.score_samples(rows, strict=True)


def test_a_value_just_past_the_edge_scores_close_to_the_edge(positive_model):
    first = pd.Timestamp("2024-01-01")
    rows = pd.DataFrame({"amount": [20.0, 20.0], "share": [0.3, 0.3], "when": [first, first - pd.Timedelta(days=1)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowcliWarning)
        at_edge, past = positive_model.score_samples(rows)
    assert abs(past - at_edge) < 3, (at_edge, past)


def test_each_number_column_gets_the_map_under_which_a_normal_fits_it_best():
    rng = np.random.default_rng(1)
    frame = pa.table({
        "income": rng.lognormal(1, 0.8, 4_000),  # skewed right: a log makes it normal
        "height": rng.normal(170, 8, 4_000),  # positive, and normal as it is: no log
        "score": 100 - rng.lognormal(1, 0.8, 4_000),  # positive but skewed left: a log would skew it further
        "rate": 1 / (1 + np.exp(-rng.normal(0, 1.5, 4_000))),  # within (0, 1): a logit makes it normal
        "visits": rng.poisson(40, 4_000),  # whole numbers far from zero: no log
        "tiny": rng.normal(1, 0.1, 4_000) * 1e-170,  # normal, at a scale whose squares underflow
    })
    kinds = {"income": "continuous", "height": "continuous", "score": "continuous", "rate": "continuous",
             "visits": "integer", "tiny": "continuous"}
    columns = Preprocessor.fit(frame, kinds, source="t").columns
    assert {column.name: column.transform for column in columns} == {
        "income": "log", "height": "identity", "score": "identity", "rate": "logit", "visits": "identity",
        "tiny": "identity"}


def test_a_date_a_timestamp_and_iso_text_of_the_same_dates_give_the_same_model():
    rng = np.random.default_rng(0)
    days = rng.integers(0, 200, 2_000)
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")
    x = rng.normal(size=2_000) + days / 100
    forms = {
        "date": pa.array(when.date, type=pa.date32()),
        "timestamp": pa.array(when, type=pa.timestamp("us")),
        "text": pa.array(when.strftime("%Y-%m-%d")),
    }
    probe = pa.table({"when": forms["date"][:300], "x": x[:300]})
    scores = {name: TabularFlow(epochs=8, seed=0).fit(pa.table({"when": values, "x": x})).score_samples(probe)
              for name, values in forms.items()}
    for name in ("timestamp", "text"):
        assert np.abs(scores[name] - scores["date"]).max() < 0.3, name


def test_few_repeated_values_off_any_grid_get_cells_not_a_spike():
    """A standardized column whose one value holds 90 % of the rows, and whose other values sit on
    no even grid (cardio's x6 on the anomaly bench): each value gets a cell as wide as the closest
    two values allow, so the repeated value scores its probability per unit of that cell, as a
    rounded grid does, not a spike hundreds of nats high; samples bring it back at its share."""
    rng = np.random.default_rng(0)
    spike, rows = 0.27829494600614724, 3_000
    level = np.where(rng.random(rows) < 0.9, spike, rng.choice(rng.uniform(0.8, 4.4, 60), rows))
    model = TabularFlow(epochs=30, seed=0).fit(pd.DataFrame({"level": level, "x": rng.normal(size=rows)}))
    column = model.describe()["columns"][0]
    assert column["grid"] > 0 and column["atoms"]
    probe = pd.DataFrame({"level": spike, "x": np.linspace(-1, 1, 200)})
    level_score = model.score_samples(probe) - stats.norm.logpdf(probe["x"])  # x is a standard normal
    assert level_score.mean() == pytest.approx(np.log(0.9 / column["grid"]), abs=0.3)
    moved = model.score_samples(probe.assign(level=spike + column["grid"] / 4)) - stats.norm.logpdf(probe["x"])
    assert np.abs(moved - level_score).mean() < 0.5
    assert (model.sample(5_000, seed=1)["level"] == spike).mean() == pytest.approx(0.9, abs=0.03)


def test_a_number_with_few_values_is_categorical_and_its_gaps_score_finite():
    """Measured on the anomaly bench, a few values rank better as levels; a whole number between
    them that no row had still scores finite (its add-one share), unless declared --categorical;
    and the model stays a distribution: every integer and x together hold probability 1."""
    rng = np.random.default_rng(0)
    rating = rng.choice([1, 2, 3, 4, 5, 6, 8, 9, 10], 1_000)  # 7 never occurs
    frame = pd.DataFrame({"rating": rating, "x": rng.normal(size=1_000) + rating / 5})
    levels = TabularFlow(epochs=2, seed=0).fit(frame)
    column = levels.describe()["columns"][0]
    assert column["kind"] == "categorical" and column["gaps"] == 1 and column["gap_share"] == pytest.approx(1 / 1001)
    seven = pd.DataFrame({"rating": [7], "x": [1.4]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowcliWarning)  # a gap value is not "never seen, -inf"
        score = levels.score_samples(seven)[0]
    assert np.isfinite(score) and score < levels.score_samples(seven.assign(rating=6))[0] - 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowcliWarning)
        assert levels.score_samples(seven.assign(rating=11))[0] == -np.inf  # past the levels' range
        declared = TabularFlow(epochs=2, seed=0).fit(frame, kinds={"rating": "categorical"})
        assert declared.score_samples(seven)[0] == -np.inf
        x = np.linspace(-8, 12, 4001)
        mass = sum(np.exp(levels.score_samples(pd.DataFrame({"rating": np.full(len(x), k), "x": x}))).sum() * (x[1] - x[0])
                   for k in range(1, 11))
    assert mass == pytest.approx(1.0, abs=0.01)
    numbers = TabularFlow(epochs=10, seed=0).fit(frame, kinds={"rating": "integer"})
    assert np.isfinite(numbers.score_samples(seven)).all()


def test_a_column_that_counts_the_rows_is_left_out_unless_kept():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"No": np.arange(1, 501), "x": rng.normal(size=500), "y": rng.normal(size=500)})
    with pytest.warns(FlowcliWarning, match="'No' looks like a row number"):
        model = TabularFlow(epochs=2, seed=0).fit(frame)
    assert model.columns_ == ["x", "y"]
    kept = TabularFlow(epochs=2, seed=0).fit(frame, kinds={"No": "integer"})
    assert kept.columns_ == ["No", "x", "y"]
    shuffled = frame.assign(No=rng.permutation(frame["No"]))  # distinct but not in row order: a feature
    assert TabularFlow(epochs=2, seed=0).fit(shuffled).columns_ == ["No", "x", "y"]
