"""Numeric columns standardized at a category's level (`flowcli.encode.scales`): the step is
invertible with an exact log-determinant beside the links, gives each level its own normal under
a flow that changes nothing, picks the category that tells most about a number, and none where
none does or where the other numbers tell more, and a fitted model's rows keep each level's mean
and spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import norm
from test_bundle import assert_column_edits_refused
from test_links import chain

from flowcli import TabularFlow
from flowcli.cli.report import render_report
from flowcli.encode.dequantize import Levels
from flowcli.encode.links import SCREEN_ROWS
from flowcli.encode.preprocess import FixedSteps, Preprocessor
from flowcli.encode.scales import PRIOR_ROWS, LevelScales, Scale, level_moments, numbers_gain
from flowcli.flow.config import FlowConfig
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.likelihood import log_likelihood

MEANS, SPREADS = {"a": -20.0, "b": 0.0, "c": 30.0}, {"a": 2.0, "b": 5.0, "c": 10.0}


def level_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """`kind` by fixed shares; `size`, whose mean and spread move with the kind; `weight`, which
    follows the size loosely; and `noise`, which moves with nothing."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(list(MEANS), rows, p=[0.5, 0.3, 0.2])
    size = np.array([MEANS[k] for k in kind]) + np.array([SPREADS[k] for k in kind]) * rng.normal(size=rows)
    return pd.DataFrame({"kind": kind, "size": size, "weight": size + rng.normal(size=rows) * 15,
                         "noise": rng.normal(size=rows)})


def test_level_moments_follow_each_levels_values_and_pay_only_where_they_differ():
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 3, 30_000)
    means, spreads = np.array([-1.0, 0.0, 2.0]), np.array([0.5, 1.0, 2.0])
    u = means[levels] + spreads[levels] * rng.normal(size=30_000)
    moments, gain = level_moments(u, levels, 4)
    np.testing.assert_allclose(moments[:3], np.column_stack([means, spreads]), atol=0.05)
    assert gain > 0.3
    assert moments[3] == pytest.approx([u.mean(), u.std()])  # a level without rows: the column's own
    assert level_moments(rng.normal(size=30_000), levels, 3)[1] < 0  # the same normal at every level: no gain
    assert level_moments(np.zeros(1000), np.repeat([0, 1], 500), 2)[1] == 0  # a constant: nothing to share out


def test_the_fixed_steps_invert_with_an_exact_log_det():
    links, width = chain(np.random.default_rng(1))  # features 0 → 1 → 2 linked, 3 free
    width += 1  # and 4, feature 3's missingness indicator
    rng = np.random.default_rng(3)
    scales = LevelScales([  # feature 3 at the levels of feature 2, a linked child, whose feature the links move
        Scale(3, 2, links.links[1].child_shares, np.column_stack([rng.normal(size=2), rng.uniform(0.2, 3, 2)]),
              Levels(np.array([0.7, 0.3])))])
    steps = FixedSteps((scales, links))
    u = rng.normal(size=(50, width))
    v, log_det = steps.forward(u)
    np.testing.assert_allclose(steps.inverse(v), u, atol=1e-9)
    level = (np.cumsum(scales.scales[0].parent_shares) < norm.cdf(u[:, 2])[:, None]).sum(axis=1)
    mean, std = scales.scales[0].given_parent[level].T
    missing = norm.cdf(u[:, 4]) >= 0.7
    assert 5 < missing.sum() < 45
    np.testing.assert_allclose(v[:, 3], np.where(missing, u[:, 3], (u[:, 3] - mean) / std))  # at the level before the links
    h = 1e-6
    for row in range(10):  # the full Jacobian by central differences; its log|det| is log_det
        jacobian = np.stack([(steps.forward(u[row] + h * e[None])[0] - steps.forward(u[row] - h * e[None])[0])[0] / (2 * h)
                             for e in np.eye(width)], axis=1)
        assert np.linalg.slogdet(jacobian)[1] == pytest.approx(log_det[row], abs=1e-5)


def test_a_flow_that_leaves_the_features_normal_gives_each_level_its_normal():
    table = level_table(5000)
    table.loc[table.index % 10 == 0, "size"] = np.nan  # a missing value's feature is integrated out, unscaled
    preprocessor = Preprocessor.fit(pa.table(table), {"kind": "categorical", "size": "continuous", "noise": "continuous"},
                                    source="t")
    kind, size, noise = preprocessor.columns
    assert size.parent == "kind" and noise.parent is None
    config = FlowConfig(features=preprocessor.width, layers=2, hidden=4)
    identity = NumpyRealNVP(config, {name: np.zeros(shape, np.float32) for name, shape in config.weight_shapes().items()},
                            front=preprocessor.front)
    rows = table.head(200)
    level = np.array([kind.levels.index(k) for k in rows.kind])
    mean, std = np.asarray(size.given_parent)[level].T
    value = norm.logpdf(size.scaled(rows["size"].to_numpy()), mean, std) - np.log(size.std) + np.log(1 - size.missing_rate)
    expected = (np.log(np.asarray(kind.probabilities)[level]) + np.where(rows["size"].isna(), np.log(size.missing_rate), value)
                + norm.logpdf(noise.scaled(rows.noise.to_numpy())) - np.log(noise.std))
    np.testing.assert_allclose(log_likelihood(preprocessor, identity, pa.table(rows[["kind", "size", "noise"]]), source="t"),
                               expected, atol=1e-4)


def test_a_number_takes_the_category_that_tells_most_about_it():
    table = level_table(5000)
    rng = np.random.default_rng(1)
    table["shade"] = np.where(table["size"] > 0, "dark", "light")  # tells about the size, less than the kind
    table["tag"] = rng.choice(["x", "y"], len(table))  # tells nothing
    kinds = {"kind": "categorical", "shade": "categorical", "tag": "categorical", "size": "continuous", "noise": "continuous"}
    columns = {column.name: column for column in Preprocessor.fit(pa.table(table), kinds, source="t").columns}
    assert columns["size"].parent == "kind"
    assert columns["noise"].parent is None


def test_a_number_that_the_other_numbers_tell_more_about_takes_no_parent():
    table = level_table(5000).assign(twin=lambda t: 2 * t["size"] + np.random.default_rng(1).normal(size=len(t)) * 0.1)
    kinds = {"kind": "categorical", "size": "continuous", "twin": "continuous"}
    columns = {column.name: column for column in Preprocessor.fit(pa.table(table), kinds, source="t").columns}
    assert columns["size"].parent is None and columns["twin"].parent is None  # each tells the other within 0.3 %
    rng = np.random.default_rng(2)
    x = rng.normal(size=10_000)
    assert numbers_gain(x, (0.6 * x + 0.8 * rng.normal(size=10_000))[:, None]) == pytest.approx(-0.5 * np.log(1 - 0.36), abs=0.02)
    assert numbers_gain(x, np.empty((10_000, 0))) == 0.0


def test_moments_count_every_row_past_the_rows_that_choose_the_parent():
    table = level_table(SCREEN_ROWS + 10_000)
    kind, size = Preprocessor.fit(pa.table(table[["kind", "size"]]), {"kind": "categorical", "size": "continuous"},
                                  source="t").columns
    assert size.parent == "kind"
    real = table.groupby("kind")["size"].agg(["mean", "std", "count"]).loc[kind.levels]
    shrunk = real["count"] / (real["count"] + PRIOR_ROWS)  # towards the column's own mean, 0 in its feature
    np.testing.assert_allclose(np.asarray(size.given_parent)[:, 0], shrunk * (real["mean"] - size.mean) / size.std, atol=1e-6)
    within = (real["count"] - 1) * (real["std"] / size.std) ** 2  # sums of squares about the shrunk means barely differ
    np.testing.assert_allclose(np.asarray(size.given_parent)[:, 1] ** 2, (within + PRIOR_ROWS) / (real["count"] + PRIOR_ROWS),
                               rtol=1e-4)


def test_sampled_rows_keep_each_levels_mean_and_spread():
    table = level_table(6000)
    model = TabularFlow(epochs=15, seed=0).fit(table)
    samples = model.sample(30_000, seed=1)
    for kind, real in table.groupby("kind"):  # the flow alone, 15 epochs: means 0.17 sd off, spreads up to 42 % too wide
        fake = samples[samples.kind == kind]
        assert abs(fake["size"].mean() - real["size"].mean()) < 0.08 * real["size"].std(), kind
        assert fake["size"].std() == pytest.approx(real["size"].std(), rel=0.08), kind
    given = model.sample(3000, given={"kind": "c"}, seed=2)
    real = table[table.kind == "c"]
    assert abs(given["size"].mean() - real["size"].mean()) < 0.1 * real["size"].std()


def test_scales_survive_the_bundle_and_malformed_ones_are_refused(tmp_path):
    table = level_table(2000)
    model = TabularFlow(epochs=3, layers=2, hidden=8, seed=0).fit(table)
    path = model.save(tmp_path / "m.flow")
    loaded = TabularFlow.load(path)
    assert {c.name: c.parent for c in loaded.preprocessor_.columns if c.name != "kind"} == \
        {"size": "kind", "weight": None, "noise": None}
    np.testing.assert_array_equal(loaded.score_samples(table.head(50)), model.score_samples(table.head(50)))
    pd.testing.assert_frame_equal(loaded.sample(20, seed=3), model.sample(20, seed=3))
    report = " ".join(render_report(loaded.describe(), "m.flow").split())  # rich wraps the long lines
    assert "standardized at each level of kind" in report

    assert_column_edits_refused(path, tmp_path, {
        "unknown": ("size", lambda c: c.update(parent="nowhere")),
        "numeric": ("size", lambda c: c.update(parent="noise")),
        "shape": ("size", lambda c: c["given_parent"].pop()),
        "std": ("size", lambda c: c["given_parent"][0].__setitem__(1, 0.0)),
        "pair": ("size", lambda c: c["given_parent"][0].append(1.0)),
        "text": ("size", lambda c: c["given_parent"].__setitem__(0, "12")),
        "half": ("size", lambda c: c.pop("given_parent")),
    })
