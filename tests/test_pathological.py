"""Pathological tables train to a finite model or fail with a clear error; never a NaN bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowcli import TabularFlow
from flowcli.errors import DataError, FlowcliError, FlowcliWarning

RNG = np.random.default_rng(0)


def cauchy() -> pd.DataFrame:
    return pd.DataFrame({"a": RNG.standard_cauchy(600), "b": RNG.standard_cauchy(600) + RNG.normal(size=600)})


def wild_scales() -> pd.DataFrame:
    z = RNG.standard_normal((600, 4))
    return pd.DataFrame({"nano": 1e-9 * z[:, 0], "tera": 1e12 * (z[:, 1] + 0.5 * z[:, 0]), "offset": 1e9 + z[:, 2], "unit": z[:, 3]})


def near_constant() -> pd.DataFrame:
    a = np.full(600, 3.0)
    a[::97] += 1e-9
    return pd.DataFrame({"almost": a, "b": RNG.normal(size=600)})


def duplicated_rows() -> pd.DataFrame:
    base = pd.DataFrame({"a": RNG.normal(size=20), "b": RNG.normal(size=20)})
    return pd.concat([base] * 30 + [pd.DataFrame({"a": [0.5] * 300, "b": [0.25] * 300})], ignore_index=True)


def one_column() -> pd.DataFrame:
    return pd.DataFrame({"only": RNG.gamma(2.0, 3.0, 500)})


def two_hundred_columns() -> pd.DataFrame:
    z = RNG.standard_normal((400, 200))
    return pd.DataFrame(z + 0.3 * z[:, :1], columns=[f"c{j}" for j in range(200)])


def ten_rows() -> pd.DataFrame:
    return pd.DataFrame({"a": RNG.normal(size=10), "b": RNG.normal(size=10)})


@pytest.mark.parametrize(
    "make", [cauchy, wild_scales, near_constant, duplicated_rows, one_column, two_hundred_columns, ten_rows]
)
def test_pathological_table_gives_a_finite_model(make, tmp_path):
    table = make()
    model = TabularFlow(epochs=4, layers=4, hidden=16, seed=0).fit(table)
    assert all(np.isfinite(value).all() for value in model.weights_.values())
    assert np.isfinite(model.training_["best_val_nll"])
    assert np.isfinite(model.score_samples(table)).all()
    samples = model.sample(200, seed=0)
    assert np.isfinite(samples.to_numpy()).all()
    path = model.save(tmp_path / "model.flow")
    np.testing.assert_array_equal(TabularFlow.load(path).score_samples(table), model.score_samples(table))


def test_a_point_mass_is_certain():
    table = pd.DataFrame({"a": [1.5] * 100, "b": [2.0] * 100})
    with pytest.warns(FlowcliWarning, match="constant"):
        model = TabularFlow(epochs=2, layers=2, hidden=8).fit(table)
    np.testing.assert_allclose(model.score_samples(table), 0.0, atol=0.01)  # probability one
    assert model.sample(10, seed=0).eq({"a": 1.5, "b": 2.0}).all().all()


def test_nine_rows_are_too_few():
    with pytest.raises(DataError, match="9 rows are too few to train; give at least 10"):
        TabularFlow(epochs=1).fit(ten_rows().iloc[:9])


def test_an_architecture_too_big_for_memory_is_refused_before_allocating():
    with pytest.raises(FlowcliError, match=r"GiB .* lower --hidden or --layers"):
        TabularFlow(epochs=1, hidden=200_000).fit(ten_rows())


def test_a_one_valued_range_never_forces_a_redraw():
    """A constant datetime column is numeric with low == high: every draw decodes to its one
    value, so it must not send rows to be drawn again (it would send all of them, ten times)."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"taken": pd.Timestamp("2024-05-01 12:00"), "x": rng.standard_t(2, 500)})
    model = TabularFlow(epochs=2, layers=2, hidden=8, seed=0, base="student").fit(table)
    snapshot = model.preprocessor_.columns[0]
    assert snapshot.kind == "datetime" and snapshot.low == snapshot.high
    raw = model._flow.features(model._flow.sample_latent(np.random.default_rng(0), 1000))
    assert snapshot.near_range(raw[:, :1]).all()
    assert (model.sample(100, seed=0)["taken"] == pd.Timestamp("2024-05-01 12:00")).all()
