"""Links between category columns (`flowcli.encode.links`): the fixed first step is invertible with
an exact log-determinant, gives the tree's level probabilities, and a fitted model keeps how its
categories go together, which the flow alone blurred towards independence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_bundle import assert_column_edits_refused

from flowcli import TabularFlow
from flowcli.encode.dequantize import ndtri
from flowcli.encode.links import LevelLinks, Link, given_parent, move
from flowcli.encode.preprocess import Preprocessor
from flowcli.flow.config import FlowConfig
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.likelihood import log_likelihood


def associated_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """`region` by fixed shares, `group` by shares that depend strongly on the region (a rare
    group concentrated in one region), `urban` on the group, and a number that moves with the region."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], rows, p=[0.25, 0.3, 0.25, 0.2])
    rare_share = np.select([region == "south", region == "west"], [0.16, 0.01], 0.05)
    group = np.where(rng.uniform(size=rows) < rare_share, "b", "a")
    urban = rng.uniform(size=rows) < np.where(group == "b", 0.95, 0.7)
    amount = rng.normal(size=rows) + (region == "south") * 1.5
    return pd.DataFrame({"region": region, "group": group, "urban": urban, "amount": amount})


def chain(rng: np.random.Generator) -> tuple[LevelLinks, int]:
    """Features 0 → 1 → 2 linked in a chain (3, 4 and 2 levels), 2 also given 0, and a free feature 3."""
    shares = [rng.dirichlet(np.ones(k) * 2) for k in (3, 4, 2)]
    links = [Link(1, (0,), shares[1], (shares[0],), rng.dirichlet(np.ones(4), size=3)),
             Link(2, (1, 0), shares[2], (shares[1], shares[0]), rng.dirichlet(np.ones(2), size=12))]
    return LevelLinks(links), 4


def test_move_is_invertible_and_its_log_det_is_the_derivative():
    rng = np.random.default_rng(0)
    old, new = rng.dirichlet(np.ones(5), size=400), rng.dirichlet(np.ones(5), size=400)
    k = rng.integers(0, 5, 400)
    rows = np.arange(400)
    starts, new_starts = (np.cumsum(old, 1) - old)[rows, k], (np.cumsum(new, 1) - new)[rows, k]
    g = ndtri(starts + rng.uniform(size=400) * old[rows, k])  # inside level k's slice
    moved, log_det = move(g, starts, old[rows, k], new_starts, new[rows, k])
    back, back_log_det = move(moved, new_starts, new[rows, k], starts, old[rows, k])
    np.testing.assert_allclose(back, g, atol=1e-8)
    np.testing.assert_allclose(back_log_det, -log_det, atol=1e-8)
    h = 1e-7
    slope = (move(g + h, starts, old[rows, k], new_starts, new[rows, k])[0]
             - move(g - h, starts, old[rows, k], new_starts, new[rows, k])[0]) / (2 * h)
    np.testing.assert_allclose(log_det, np.log(slope), atol=1e-4)


def test_linked_features_round_trip_and_log_det_matches_the_jacobian():
    links, width = chain(np.random.default_rng(1))
    u = np.random.default_rng(2).normal(size=(50, width))
    v, log_det = links.forward(u)
    np.testing.assert_allclose(links.inverse(v), u, atol=1e-9)
    assert np.array_equal(v[:, [0, 3]], u[:, [0, 3]])  # roots and other features stay as they are
    h = 1e-6
    for row in range(10):  # the full Jacobian by central differences: it is triangular, and its log|det| is log_det
        jacobian = np.stack([(links.forward(u[row] + h * e[None])[0] - links.forward(u[row] - h * e[None])[0])[0] / (2 * h)
                             for e in np.eye(width)], axis=1)
        assert np.linalg.slogdet(jacobian)[1] == pytest.approx(log_det[row], abs=1e-5)


def test_a_flow_that_leaves_the_features_normal_gives_the_trees_probabilities():
    table = associated_table(3000)[["region", "group", "urban"]]
    preprocessor = Preprocessor.fit(pa.table(table), {"region": "categorical", "group": "categorical", "urban": "boolean"},
                                    source="t")
    columns = {column.name: column for column in preprocessor.columns}
    assert columns["group"].parent == "region" and columns["urban"].parent == "group"
    config = FlowConfig(features=preprocessor.width, layers=2, hidden=4)
    identity = NumpyRealNVP(config, {name: np.zeros(shape, np.float32) for name, shape in config.weight_shapes().items()},
                            front=preprocessor.front)
    every = pd.DataFrame([(r, g, u) for r in columns["region"].levels for g in columns["group"].levels for u in (False, True)],
                         columns=["region", "group", "urban"])
    scores = log_likelihood(preprocessor, identity, pa.table(every), source="t")
    expected = []
    for r, g, u in every.itertuples(index=False):
        ri, gi, ui = columns["region"].levels.index(r), columns["group"].levels.index(g), columns["urban"].levels.index(u)
        expected.append(np.log(columns["region"].probabilities[ri] * columns["group"].given_parent[ri][gi]
                               * columns["urban"].given_parent[gi][ui]))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.exp(scores).sum() == pytest.approx(1.0, abs=1e-5)


def interaction_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """`associated_table`'s region and group, and `city`, which depends on the two together: 95 %
    of the rare group in the west live in a city, 30 % of it elsewhere, 60 % of the common group
    anywhere (CPS1988's smsa given region and ethnicity, sharpened)."""
    table = associated_table(rows, seed)[["region", "group"]]
    rng = np.random.default_rng(seed + 1)
    share = np.where(table.group == "b", np.where(table.region == "west", 0.95, 0.3), 0.6)
    return table.assign(city=rng.uniform(size=rows) < share)


def test_a_column_that_depends_on_two_together_takes_both_as_parents():
    table = interaction_table(40_000)
    preprocessor = Preprocessor.fit(pa.table(table), {"region": "categorical", "group": "categorical", "city": "boolean"}, source="t")
    columns = {column.name: column for column in preprocessor.columns}
    assert columns["group"].parents == ("region",) and set(columns["city"].parents) == {"region", "group"}
    config = FlowConfig(features=preprocessor.width, layers=2, hidden=4)
    identity = NumpyRealNVP(config, {name: np.zeros(shape, np.float32) for name, shape in config.weight_shapes().items()},
                            front=preprocessor.front)
    every = pd.DataFrame([(r, g, c) for r in columns["region"].levels for g in columns["group"].levels for c in (False, True)],
                         columns=["region", "group", "city"])
    probability = np.exp(log_likelihood(preprocessor, identity, pa.table(every), source="t"))
    assert probability.sum() == pytest.approx(1.0, abs=1e-5)
    for (region, group), rows in every.groupby(["region", "group"]).groups.items():  # P(city | region, group): the counts'
        real = table[(table.region == region) & (table.group == group)].city.mean()
        city = probability[rows] / probability[rows].sum()
        assert city[list(every.city[rows]).index(True)] == pytest.approx(real, abs=0.03), (region, group)


def test_rows_drawn_given_both_parents_keep_their_shares():
    table = interaction_table(20_000)  # enough rows of the rare group in the west for BIC to take the second parent
    model = TabularFlow(epochs=10, seed=0).fit(table)
    columns = {column.name: column for column in model.preprocessor_.columns}
    city = columns["city"]
    first, second = (columns[name] for name in city.parents)
    assert {first.name, second.name} == {"region", "group"}
    for given in ({"region": "west", "group": "b"}, {"region": "south", "group": "b"}, {"region": "west", "group": "a"}):
        rows = model.sample(3000, given=given, seed=1)
        pair = first.levels.index(given[first.name]) * len(second.probabilities) + second.levels.index(given[second.name])
        assert rows.city.mean() == pytest.approx(city.given_parent[pair][city.levels.index(True)], abs=0.04), given
    assert model.sample(3000, given={"region": "west", "group": "b"}, seed=1).city.mean() > 0.8  # 95 % in the table


def test_a_column_that_one_parent_explains_takes_no_second():
    table = associated_table(40_000)[["region", "group", "urban"]]  # urban depends on the group alone
    preprocessor = Preprocessor.fit(pa.table(table), {"region": "categorical", "group": "categorical", "urban": "boolean"}, source="t")
    assert [getattr(column, "parents", ()) for column in preprocessor.columns] == [(), ("region",), ("group",)]


def test_shares_given_a_parent_follow_the_counts_and_fall_back_on_few_rows():
    counts = np.array([[900.0, 100.0], [2.0, 0.0]])
    shares = np.array([0.5, 0.5])
    given = given_parent(counts, shares)
    np.testing.assert_allclose(given.sum(axis=1), 1)
    assert given[0, 0] == pytest.approx(0.9, abs=0.01)
    assert 0.5 < given[1, 0] < 1.0 and given[1, 1] > 0.05  # two rows are not a certainty


def test_independent_categories_are_not_linked():
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.choice(list("xyz"), 5000), "b": rng.choice(list("pq"), 5000), "c": rng.choice(list("uvw"), 5000)})
    preprocessor = Preprocessor.fit(table, {"a": "categorical", "b": "categorical", "c": "categorical"}, source="t")
    assert preprocessor.front is None


def test_a_fitted_model_keeps_how_categories_go_together():
    table = associated_table(6000)
    model = TabularFlow(epochs=40, seed=0).fit(table)
    samples = model.sample(40_000, seed=1)
    real, fake = table.groupby("region").group.apply(lambda g: (g == "b").mean()), \
        samples.groupby("region").group.apply(lambda g: (g == "b").mean())
    # the rare group's share by region: 0.16 in the south, 0.01 in the west
    assert (fake - real).abs().max() < 0.02, pd.DataFrame({"real": real, "sampled": fake})
    assert abs(samples[samples.group == "b"].urban.mean() - table[table.group == "b"].urban.mean()) < 0.05


def test_links_survive_the_bundle_and_malformed_ones_are_refused(tmp_path):
    table = associated_table(2000)
    model = TabularFlow(epochs=3, layers=2, hidden=8, seed=0).fit(table)
    path = model.save(tmp_path / "m.flow")
    loaded = TabularFlow.load(path)
    assert [getattr(c, "parent", None) for c in loaded.preprocessor_.columns] == [None, "region", "group", "region"]
    np.testing.assert_array_equal(loaded.score_samples(table.head(50)), model.score_samples(table.head(50)))
    pd.testing.assert_frame_equal(loaded.sample(20, seed=3), model.sample(20, seed=3))

    assert_column_edits_refused(path, tmp_path, {
        "unknown": ("group", lambda c: c.update(parent="nowhere")),
        "numeric": ("group", lambda c: c.update(parent="amount")),
        "shape": ("group", lambda c: c["given_parent"].pop()),
        "second-unknown": ("urban", lambda c: c.update(second_parent="nowhere")),
        "second-shape": ("urban", lambda c: c.update(second_parent="region")),  # 2 rows of shares, not 2 × 4
        "second-itself": ("urban", lambda c: c.update(second_parent="urban")),
        "second-alone": ("region", lambda c: c.update(second_parent="group")),
        "sum": ("group", lambda c: c["given_parent"][0].__setitem__(0, 0.9)),
        "cycle": ("region", lambda c: c.update(parent="group", given_parent=[[0.25, 0.25, 0.25, 0.25]] * 2)),
        "half": ("group", lambda c: c.pop("given_parent")),
    })
