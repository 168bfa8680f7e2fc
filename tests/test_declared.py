"""Models fitted to condition on some columns (`condition=`, `fit --condition`): held features
pass the flow unchanged, held columns link among themselves only, and conditions on them are
drawn from the model's conditional, exactly, at the cost of unconditional rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from flowcli import TabularFlow
from flowcli.condition.conditions import resolve
from flowcli.condition.declared import check_held
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import BundleError, DataError
from flowcli.flow import level_inputs
from flowcli.flow.config import FlowConfig
from flowcli.flow.level_inputs import HeldLevels
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.flow.torch_flow import RealNVP


def test_held_features_condition_every_coupling_and_pass_to_the_latent_unchanged_after_training_steps():
    config = FlowConfig(features=5, layers=6, hidden=8, held=(1, 3))
    for k in range(config.layers):
        conditioning, transformed = config.split(k)
        assert {1, 3} <= set(conditioning) and not {1, 3} & set(transformed)
        assert sorted([*conditioning, *transformed]) == list(range(5))
    torch.manual_seed(0)
    flow = RealNVP(config).double()
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    x = torch.randn(256, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64)
    for _ in range(20):  # every weight moves but those on held features
        optimizer.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        optimizer.step()
    z, _ = flow(x)
    assert torch.equal(z[:, [1, 3]], x[:, [1, 3]])
    weights = flow.export_weights()
    config.check_weights(weights, "flow")
    twin = NumpyRealNVP(config, weights)
    u = twin.inverse(twin.sample_latent(np.random.default_rng(0), 100))
    latent = twin.forward(u.copy())[0]
    np.testing.assert_array_equal(latent[:, [1, 3]], u[:, [1, 3]])


def test_a_bundle_whose_mixing_reaches_a_held_feature_is_refused():
    config = FlowConfig(features=3, layers=2, hidden=8, held=(0,))
    weights = RealNVP(config).export_weights()
    weights["mixings.1.lower"][2, 0] = 0.5  # feature 0 would feed feature 2's mixing
    with pytest.raises(BundleError, match="mixing 1 mixes a held feature"):
        config.check_weights(weights, "model.flow")


@pytest.mark.parametrize("held, base", [((0, 0), "normal"), ((2, 1), "normal"), ((0, 1, 2), "normal"), ((3,), "normal"),
                                        ((0,), "student"), ((0,), "mixture")])
def test_held_features_must_be_distinct_ascending_some_free_on_a_normal_base(held, base):
    with pytest.raises(ValueError):
        FlowConfig(features=3, layers=2, hidden=8, held=held, base=base, components=2 if base == "mixture" else 0)


ROOT, CHILD = HeldLevels((), ((0.3, 0.5),)), HeldLevels((0,), ((0.5,), (0.2,), (0.9,)))  # 3 levels, and 2 given each


@pytest.mark.parametrize("held_levels", [
    (ROOT,),  # one per held feature
    (ROOT, HeldLevels((0,), ((0.5,), (0.2,)))),  # a row per parent level
    (HeldLevels((1,), ((0.5,), (0.2,))), HeldLevels((0,), ((0.5,), (0.2,)))),  # a cycle
    (ROOT, HeldLevels((1,), ((0.5,), (0.2,), (0.9,)))),  # its own parent
    (HeldLevels((), ((0.5, 0.3),)), CHILD),  # shares that fall
    (HeldLevels((), ((0.3, 1.5),)), CHILD),  # beyond 1
    (ROOT, HeldLevels((0,), ((0.5,), (0.2, 0.3), (0.9,)))),  # ragged
])
def test_held_levels_must_be_one_acyclic_set_of_rising_shares_per_held_feature(held_levels):
    FlowConfig(features=4, layers=2, hidden=8, held=(0, 2), held_levels=(ROOT, CHILD))
    with pytest.raises(ValueError):
        FlowConfig(features=4, layers=2, hidden=8, held=(0, 2), held_levels=held_levels)


def test_level_inputs_read_each_held_coordinate_s_level_given_its_parents_as_a_one_hot_row():
    coordinates = np.array([[-1.0, 0.3], [-0.25, 0.3], [1.0, 0.3], [1.0, 1.5]])  # Φ: 0.16, 0.40, 0.84; 0.62, 0.93
    codes = level_inputs.levels_of((ROOT, CHILD), coordinates)
    assert codes.tolist() == [[0, 1], [1, 1], [2, 0], [2, 1]]  # the child's cut is 0.5, 0.2 or 0.9 by its parent's level
    assert level_inputs.input_rows((ROOT, CHILD), codes).tolist() == [[0, 4], [1, 4], [2, 3], [2, 4]]  # the one-hots' ones


def test_the_first_layer_reads_the_levels_as_one_hot_inputs_after_the_conditioning_features():
    """The couplings gather the first layer's weights of each level; the bundle's weights mean
    one-hot inputs (bundle format 17), and this is the product with them."""
    torch.manual_seed(0)
    config = FlowConfig(features=4, layers=2, hidden=8, held=(0, 2), held_levels=(ROOT, CHILD))
    flow = RealNVP(config).double()
    coupling = flow.couplings[1]
    with torch.no_grad():
        for parameter in coupling.parameters():
            parameter.normal_(0, 0.5)
    x_conditioning = torch.randn(60, coupling.c, dtype=torch.float64)
    codes = np.column_stack([np.arange(60) % 3, np.arange(60) // 3 % 2])
    rows = level_inputs.input_rows((ROOT, CHILD), codes)
    one_hots = torch.zeros(60, level_inputs.width((ROOT, CHILD)), dtype=torch.float64)
    one_hots[np.arange(60)[:, None], rows] = 1
    h = torch.cat([x_conditioning, one_hots], dim=1)
    for linear in coupling.linears[:-1]:
        h = torch.relu(linear(h))
    expected = coupling.linears[-1](h)
    torch.testing.assert_close(coupling.conditioner(x_conditioning, torch.as_tensor(rows)), expected)
    twin = NumpyRealNVP(config, {name: value.astype(np.float64) for name, value in flow.export_weights().items()}, dtype=np.float64)
    numpy_coupling = [step for step in twin.steps if hasattr(step, "level_weights")][1]
    np.testing.assert_allclose(numpy_coupling._conditioner(x_conditioning.numpy(), rows), expected.detach().numpy(), atol=1e-6)


def linked_table(rows: int = 6_000, seed: int = 0) -> pd.DataFrame:
    """`shop` nearly fixes `region` (its natural parent), `tier` follows `region`, and `amount`
    moves with both: a rare region (2 %) and a rarer pair (region w, tier gold: about 0.6 %)."""
    rng = np.random.default_rng(seed)
    shop = rng.choice(["s1", "s2", "s3", "s4"], rows, p=[0.5, 0.3, 0.18, 0.02])
    region = np.where(rng.uniform(size=rows) < 0.95, pd.Series(shop).map({"s1": "n", "s2": "e", "s3": "s", "s4": "w"}),
                      rng.choice(["n", "e", "s", "w"], rows))
    tier = np.where(rng.uniform(size=rows) < np.where(region == "w", 0.3, 0.1), "gold", "basic")
    amount = np.round(np.exp(3 + 0.8 * (region == "w") + 0.5 * (tier == "gold") + 0.3 * rng.standard_normal(rows)), 2)
    return pd.DataFrame({"shop": shop, "region": region, "tier": tier, "amount": amount})


def test_held_columns_take_parents_among_themselves_only():
    table = pa.Table.from_pandas(linked_table())
    kinds = {"shop": "categorical", "region": "categorical", "tier": "categorical", "amount": "continuous"}
    free = {c.name: c.parents for c in Preprocessor.fit(table, kinds, source="t").columns if c.kind == "categorical"}
    held = {c.name: c.parents for c in Preprocessor.fit(table, kinds, source="t", held=("region", "tier")).columns
            if c.kind == "categorical"}
    assert free["region"] == ("shop",)  # unconstrained, region hangs on shop
    assert held["region"] == () and held["tier"] == ("region",) and held["shop"] == ("region",)


@pytest.fixture(scope="module")
def declared():
    table = linked_table()
    model = TabularFlow(epochs=40, seed=0, device="cpu", condition=("region", "tier")).fit(table)
    return model, table


def test_a_rare_condition_on_declared_columns_draws_the_models_conditional_exactly(declared):
    model, table = declared
    assert model.config_.held == tuple(model.preprocessor_.spans[k].start for k in (1, 2))
    rows = model.sample(4_000, seed=1, given={"region": "w", "tier": "gold"})
    assert len(rows) == 4_000 and (rows.region == "w").all() and (rows.tier == "gold").all()
    effort = model.effort_.to_json()
    assert effort["declared"]["met_condition"] >= 4_000 and "drawn" not in effort.get("exact", {})
    real = table[(table.region == "w") & (table.tier == "gold")]
    # shop given region is counted exactly (the tree's shares): s4 in most such rows
    assert abs((rows.shop == "s4").mean() - (real.shop == "s4").mean()) < 0.08
    # the same conditional drawn by keeping the model's own rows that meet it
    conditions = resolve({"region": "w", "tier": "gold"}, model.preprocessor_, model.left_out_)
    kept = model._kept_rows(conditions, 400_000, np.random.default_rng(2)).to_pandas()
    assert len(kept) > 1_000
    log_amount, log_kept = np.log(rows.amount), np.log(kept.amount)
    assert abs(log_amount.mean() - log_kept.mean()) < 0.1 * log_kept.std()
    assert abs((rows.shop == "s4").mean() - (kept.shop == "s4").mean()) < 0.05


def test_the_flow_reads_the_levels_sampling_decodes(declared):
    """The levels every coupling reads are the ones decoding gives the same latent rows."""
    model, _ = declared
    flow, held = model._flow, list(model.config_.held)
    z = flow.sample_latent(np.random.default_rng(0), 20_000)
    rows = model.preprocessor_.decode(flow.features(z), np.random.default_rng(1))
    codes = level_inputs.levels_of(model.config_.held_levels, z[:, held].astype(np.float64))
    for j, name in enumerate(("region", "tier")):
        column = model.preprocessor_.columns[model.preprocessor_.names.index(name)]
        np.testing.assert_array_equal(codes[:, j], column.level_index(rows.column(name), "rows"))
    assert len(np.unique(codes[:, 0])) == 4


def test_a_bundle_whose_held_levels_are_not_its_columns_slices_is_refused(declared):
    model, _ = declared
    check_held(model.preprocessor_, model.config_, "model.flow")
    region, tier = model.config_.held_levels
    moved = HeldLevels(region.parents, ((0.1,) + region.cumulative[0][1:],))
    with pytest.raises(BundleError, match="held levels are not the slices"):
        check_held(model.preprocessor_, replace(model.config_, held_levels=(moved, tier)), "model.flow")


def test_a_set_of_levels_and_one_declared_column_of_two(declared):
    model, _ = declared
    rows = model.sample(500, seed=0, given={"region": ["w", "s"]})
    assert set(rows.region) == {"w", "s"} and set(rows.tier) == {"gold", "basic"}
    assert model.effort_.held_drawn > 0
    again = model.sample(500, seed=0, given={"region": ["w", "s"]})
    pd.testing.assert_frame_equal(rows, again)


def test_a_condition_on_another_column_too_draws_by_keeping_the_models_rows(declared):
    model, _ = declared
    before = model.effort_.held_drawn
    rows = model.sample(50, seed=0, given={"region": "w", "amount": {">=": 20}})
    assert (rows.region == "w").all() and (rows.amount >= 20).all()
    assert model.effort_.held_drawn == before and model.effort_.drawn > 0


def test_the_declared_model_round_trips_and_keeps_its_declared_columns(declared, tmp_path):
    model, table = declared
    model.save(tmp_path / "m.flow")
    loaded = TabularFlow.load(tmp_path / "m.flow")
    assert loaded.condition == ("region", "tier") and loaded.config_.held == model.config_.held
    np.testing.assert_allclose(loaded.score_samples(table.head(50)), model.score_samples(table.head(50)))
    pd.testing.assert_frame_equal(loaded.sample(20, seed=3, given={"region": "e"}), model.sample(20, seed=3, given={"region": "e"}))


@pytest.mark.parametrize("condition, base, message", [
    (("amount",), "normal", "column 'amount' is continuous"),
    (("place",), "normal", "no column 'place'"),
    (("shop", "region", "tier", "amount"), "normal", "column 'amount' is continuous"),
    (("region",), "student", "needs the normal base"),
])
def test_columns_a_model_cannot_condition_on_are_refused_by_name(condition, base, message):
    with pytest.raises(DataError, match=message):
        TabularFlow(epochs=1, device="cpu", condition=condition, base=base).fit(linked_table(200))


def test_every_column_declared_leaves_nothing_to_draw():
    with pytest.raises(DataError, match="names every column"):
        TabularFlow(epochs=1, device="cpu", condition=("shop", "region", "tier")).fit(linked_table(200).drop(columns="amount"))


def test_fit_condition_from_the_command_line(tmp_path):
    from test_cli import assert_user_error, read_csv_output, run

    linked_table(600).to_csv(tmp_path / "shops.csv", index=False)
    bad = run("fit", tmp_path / "shops.csv", "--condition", "region,amount", "--epochs", "1", "-o", tmp_path / "bad.flow")
    assert_user_error(bad, "--condition", "'amount'", "continuous")
    assert not (tmp_path / "bad.flow").exists()
    fitted = run("fit", tmp_path / "shops.csv", "--condition", "region, tier", "--epochs", "2", "-o", tmp_path / "m.flow", "--quiet")
    assert fitted.returncode == 0, fitted.stderr
    drawn = run("sample", tmp_path / "m.flow", "-n", "5", "--given", "region=w", "--seed", "0", "--verbose")
    assert drawn.returncode == 0, drawn.stderr
    header, rows = read_csv_output(drawn.stdout)
    assert header == ["shop", "region", "tier", "amount"] and len(rows) == 5 and all(row[1] == "w" for row in rows)
    assert "exact draws on the declared columns" in drawn.stderr


def test_scores_given_declared_columns_take_their_likelihood_exactly(declared):
    model, table = declared
    rows = table.head(200)
    exact = model.given_log_likelihood(rows, ["region", "tier"])
    columns = {c.name: c for c in model.preprocessor_.columns}
    region, tier = columns["region"], columns["tier"]
    r = np.array([region.levels.index(v) for v in rows.region])
    t = np.array([tier.levels.index(v) for v in rows.tier])
    shares = np.log(np.asarray(region.probabilities)[r]) + np.log(np.asarray(tier.given_parent)[r, t])
    np.testing.assert_allclose(exact, shares, atol=1e-9)
    from flowcli.condition.draw import log_marginal

    estimated = log_marginal(model._conditioner(), pa.Table.from_pandas(rows[["region", "tier"]]), np.random.default_rng(0), model.effort_)
    assert np.abs(estimated - exact).mean() < 0.5  # importance sampling agrees roughly: it is noisy here (0.18 nats)
    scores = model.score_samples(rows, given=["region", "tier"])
    np.testing.assert_allclose(scores, model.score_samples(rows) - exact)
    before = len(model.effort_.effective)
    alone = model.given_log_likelihood(rows, ["tier"])  # tier's parent, region, is integrated out: importance sampling
    assert len(model.effort_.effective) > before
    assert np.abs(alone - np.log(np.asarray(tier.probabilities)[t])).mean() < 0.5


def test_a_table_of_declared_levels_draws_one_exact_row_per_row(declared):
    model, _ = declared
    cases = pd.DataFrame({"region": ["w", None, "w", "n", "w"] * 400, "tier": ["gold", "gold", None, "basic", "gold"] * 400})
    before = model.effort_.held_drawn
    rows = model.sample(given=cases, seed=0)
    assert model.effort_.held_drawn > before and len(rows) == len(cases)
    present = cases.notna()
    assert (rows.region[present.region] == cases.region[present.region]).all()
    assert (rows.tier[present.tier] == cases.tier[present.tier]).all()
    assert rows.region[~present.region].nunique() > 1 and rows.tier[~present.tier].nunique() > 1
    # the rows of one case follow the same conditional as `given=` draws it
    both = rows[(cases.region == "w") & (cases.tier == "gold")]
    direct = model.sample(2_000, seed=1, given={"region": "w", "tier": "gold"})
    assert abs((both.shop == "s4").mean() - (direct.shop == "s4").mean()) < 0.05
    assert abs(np.log(both.amount).mean() - np.log(direct.amount).mean()) < 0.1 * np.log(direct.amount).std()
    assert len(model.sample(given=cases.head(0), seed=0)) == 0
