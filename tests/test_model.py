"""The Python API against known truth: analytic densities, units, and the numpy path equal to torch."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from scipy import special, stats
from typer.testing import CliRunner

from flowcli import TabularFlow
from flowcli.cli.app import app
from flowcli.errors import DataError, FlowcliError, FlowcliWarning
from flowcli.flow.config import default_config
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.flow.torch_flow import RealNVP
from flowcli.flow.train import TrainSettings, flow_name, train_candidates

COLUMNS = ["tiny", "huge", "unit"]


class Gaussian:
    """A correlated 3-D Gaussian whose columns have scales 1e-3, 1e4 and 1, and large offsets."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(3, 3))
        scales = np.array([1e-3, 1e4, 1.0])
        self.mean = np.array([5.0, -2e4, 0.3])
        self.cov = (a @ a.T + 0.5 * np.eye(3)) * np.outer(scales, scales)
        self.rng = rng

    def draw(self, n: int) -> pd.DataFrame:
        return pd.DataFrame(self.rng.multivariate_normal(self.mean, self.cov, size=n), columns=COLUMNS)

    def log_pdf(self, table: pd.DataFrame) -> np.ndarray:
        cholesky = np.linalg.cholesky(self.cov)
        white = np.linalg.solve(cholesky, (table[COLUMNS].to_numpy() - self.mean).T)
        return -0.5 * (white**2).sum(0) - np.log(np.diag(cholesky)).sum() - 1.5 * math.log(2 * math.pi)


@pytest.fixture(scope="module")
def gaussian_fit(tmp_path_factory):
    """A Gaussian, its data as CSV, a bundle fit by the CLI, and held-out test rows."""
    truth = Gaussian()
    folder = tmp_path_factory.mktemp("gaussian")
    truth.draw(3000).to_csv(folder / "train.csv", index=False)
    test = truth.draw(4000)
    test.to_csv(folder / "test.csv", index=False)
    result = CliRunner().invoke(app, ["fit", str(folder / "train.csv"), "--epochs", "40", "--quiet"])
    assert result.exit_code == 0, result.output
    return truth, folder / "train.flow", folder / "test.csv", test


def test_score_matches_analytic_gaussian_density(gaussian_fit):
    truth, bundle, test_csv, test = gaussian_fit
    result = CliRunner().invoke(app, ["score", str(bundle), str(test_csv)])
    assert result.exit_code == 0
    scores = pd.read_csv(io.StringIO(result.stdout))["log_likelihood"].to_numpy()
    assert len(scores) == len(test)
    # Per dimension, the model's mean log-likelihood is within 0.05 nats of the true density's.
    gap = (truth.log_pdf(test).mean() - scores.mean()) / 3
    assert abs(gap) < 0.05, gap
    # Row by row, too: the scale of each column (1e-3 and 1e4) is in the Jacobian.
    assert np.corrcoef(scores, truth.log_pdf(test))[0, 1] > 0.99


def test_samples_come_back_in_original_units(gaussian_fit):
    truth, bundle, _, _ = gaussian_fit
    samples = TabularFlow.load(bundle).sample(20_000, seed=1)
    assert list(samples.columns) == COLUMNS
    train = pd.read_csv(bundle.with_name("train.csv"))
    # Means within a tenth of a standard deviation, spreads within 6 %, correlations within 0.08.
    assert np.all(np.abs(samples.mean() - train.mean()) < 0.1 * train.std())
    np.testing.assert_allclose(samples.std(), train.std(), rtol=0.06)
    np.testing.assert_allclose(np.corrcoef(samples.to_numpy().T), np.corrcoef(train.to_numpy().T), atol=0.08)


def test_numpy_scores_equal_torch_scores(gaussian_fit):
    _, bundle, _, test = gaussian_fit
    model = TabularFlow.load(bundle)
    flow = RealNVP(model.config_).import_weights(model.weights_)
    u, log_weight = model.preprocessor_.encode(pa.Table.from_pandas(test), np.zeros((len(test), 3)))
    with torch.no_grad():
        expected = flow.log_prob(torch.as_tensor(u, dtype=torch.float32)).double().numpy() + log_weight
    np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_flow_learns_a_non_gaussian_density(coupling, tmp_path):
    """On a two-component mixture, the flow beats the best single Gaussian by a wide margin,
    and its bundle scores the same after a round trip."""
    rng = np.random.default_rng(3)

    def draw(n):
        side = rng.choice([-1.0, 1.0], size=n)
        return np.column_stack([side * 2 + 0.4 * rng.standard_normal(n), 0.5 * side + 0.3 * rng.standard_normal(n)])

    def mixture_log_pdf(x):
        def component(c):
            return -0.5 * (((x[:, 0] - 2 * c) / 0.4) ** 2 + ((x[:, 1] - 0.5 * c) / 0.3) ** 2) - np.log(2 * np.pi * 0.12)
        return np.logaddexp(component(-1), component(1)) - np.log(2)

    train, test = draw(3000), draw(3000)
    model = TabularFlow(epochs=30, seed=0, device="cpu", coupling=coupling).fit(train)
    flow_ll = model.score_samples(test).mean()
    model.save(tmp_path / "mixture.flow")
    np.testing.assert_array_equal(TabularFlow.load(tmp_path / "mixture.flow").score_samples(test), model.score_samples(test))
    cov = np.cov(train.T)
    white = np.linalg.solve(np.linalg.cholesky(cov), (test - train.mean(0)).T)
    gaussian_ll = (-0.5 * (white**2).sum(0) - 0.5 * np.linalg.slogdet(cov)[1] - np.log(2 * np.pi)).mean()
    true_ll = mixture_log_pdf(test).mean()
    print(f"flow {flow_ll:.4f}, best Gaussian {gaussian_ll:.4f}, truth {true_ll:.4f}")
    assert flow_ll > gaussian_ll + 0.5
    assert true_ll - flow_ll < 0.15  # KL gap, nats per row


def _degrees_of_freedom(model: TabularFlow) -> np.ndarray:
    return 1 / NumpyRealNVP(model.config_, model.weights_).inverse_df


def test_the_base_learns_heavy_tails_from_heavy_tailed_data_only():
    """On t-distributed columns (ν = 2.5) the Student-t base learns heavy tails, and the fit is
    within 0.01 nats per row of the truth; on Gaussian ones ν rises (it starts at 100)."""
    rng = np.random.default_rng(4)
    law = stats.t(2.5)
    train, test = law.rvs((4000, 2), random_state=rng), law.rvs((4000, 2), random_state=rng)
    heavy = TabularFlow(epochs=30, seed=0, device="cpu", coupling="affine", base="student").fit(train)
    assert _degrees_of_freedom(heavy).max() < 8
    assert law.logpdf(test).sum(axis=1).mean() - heavy.score_samples(test).mean() < 0.01
    light = TabularFlow(epochs=30, seed=0, device="cpu", coupling="affine", base="student").fit(Gaussian().draw(3000))
    assert _degrees_of_freedom(light).min() > 120


def test_the_multivariate_t_base_fits_a_correlated_t_closer_than_the_normal():
    """On a correlated t(3) in 4 dimensions, the multivariate t base learns ν near 3 and comes
    closer to the truth than the normal base does; the one scale its rows share is what the
    per-feature bases cannot express."""
    rng = np.random.default_rng(6)
    law = stats.multivariate_t(np.zeros(4), np.eye(4) + 0.6, df=3, seed=rng)
    train, test = law.rvs(4000), law.rvs(4000)
    gaps = {}
    for base in ("normal", "multivariate-t"):
        model = TabularFlow(epochs=30, seed=0, device="cpu", coupling="affine", base=base).fit(train)
        gaps[base] = law.logpdf(test).mean() - model.score_samples(test).mean()
    print(f"KL gaps {gaps}, ν {_degrees_of_freedom(model)}")
    assert 2 < _degrees_of_freedom(model)[0] < 6
    assert gaps["multivariate-t"] < 0.03 and gaps["multivariate-t"] < gaps["normal"] - 0.01  # measured 0.021 and 0.038


def test_heavy_tailed_samples_far_past_the_range_are_drawn_again_not_piled_on_its_edges():
    """Draws far past the range seen at fit are drawn again; clipping them all, as normal-base
    bundles do, piles them on the range's edges."""
    rng = np.random.default_rng(5)
    heavy = stats.t(1.5).rvs((3000, 2), random_state=rng)
    train = pd.DataFrame(np.clip(heavy, -30, 30), columns=["a", "b"])  # heavy tails in a bounded range
    model = TabularFlow(epochs=20, seed=0, device="cpu", coupling="affine", base="student").fit(train)

    def share_at_edges(samples: pd.DataFrame) -> float:
        return float(((samples == train.min()) | (samples == train.max())).to_numpy().mean())

    raw = model._flow.features(model._flow.sample_latent(np.random.default_rng(0), 20_000))
    clipped = share_at_edges(model.preprocessor_.decode(raw, np.random.default_rng(0)).to_pandas())
    samples = model.sample(20_000, seed=0)
    print(f"far past the range {1 - model.preprocessor_.near_range(raw).mean():.4f}, at the edges: "
          f"all clipped {clipped:.5f}, far ones drawn again {share_at_edges(samples):.5f}")
    assert share_at_edges(samples) < 0.6 * clipped
    assert (samples.min() >= train.min()).all() and (samples.max() <= train.max()).all()


def test_auto_coupling_spends_the_time_left_on_other_flows_and_keeps_the_best(tmp_path):
    """With a budget the affine flow leaves mostly unused, "auto" also trains an affine flow on a
    fitted Gaussian mixture base (which here validates better than 3 epochs of the affine flow) and
    a spline flow, and keeps the one with the lowest validation NLL; without a budget it trains
    the affine flow alone."""
    x = np.random.default_rng(4).standard_normal((600, 2)) ** 3  # heavy tails: the flows differ
    quick = {"epochs": 3, "layers": 2, "hidden": 8, "seed": 0, "device": "cpu"}
    reports = []
    model = TabularFlow(max_time=120, **quick).fit(x, on_epoch=reports.append)
    tried = model.training_["couplings"]
    assert len(reports) == 9 and all(report.max_time == reports[0].max_time for report in reports)
    assert 110 < reports[0].max_time < 120  # the fit's budget less what comes before and after training
    assert [report.coupling for report in reports] == ["affine"] * 3 + ["affine (mixture base)"] * 3 + ["spline"] * 3
    best = [report.best_val_nll for report in reports]  # the best of all flows so far
    assert best == sorted(best, reverse=True) and best[-1] == min(tried.values())
    assert reports[3].elapsed >= reports[2].elapsed
    assert list(tried) == ["affine", "affine (mixture base)", "spline"] and len(set(tried.values())) == 3
    assert flow_name(model.config_) == min(tried, key=tried.get)
    assert model.training_["best_val_nll"] == min(tried.values())
    model.save(tmp_path / "auto.flow")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "auto.flow")])
    assert "couplings tried" in result.stdout and f"affine {tried['affine']:.4f}" in result.stdout
    alone = TabularFlow(**quick).fit(x)
    assert alone.config_.coupling == "affine" and "couplings" not in alone.training_


def test_a_slower_flow_tried_later_trains_only_on_what_its_extra_scoring_leaves():
    """fit sizes the training budget for the first flow's work after training; a slower flow
    that trains later sets its extra aside (`reserve`), so a reserve as large as the time the
    affine flow left keeps the spline flow from training at all."""
    u = (np.random.default_rng(4).standard_normal((600, 2)) ** 3).astype(np.float32)
    configs = [default_config(600, 2, layers=2, hidden=8, coupling=coupling) for coupling in ("affine", "spline")]
    settings = TrainSettings(epochs=3, max_time=60, seed=0, device="cpu")

    def tried(reserve) -> list[str]:
        summary = train_candidates(u[:500], u[500:], configs, settings, reserve=reserve).summary
        return list(summary.couplings or {"affine": 0.0})

    assert tried(lambda config: 0.0) == ["affine", "spline"]
    assert tried(lambda config: 58.0 if config.coupling == "spline" else 0.0) == ["affine"]


def clusters(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (N, 3) of four Gaussian clusters of unequal scales, and their exact log-density (N,)."""
    means = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [-4.0, 5.0, 1.0], [2.0, -5.0, 4.0]])
    scales = np.array([1.0, 0.3, 0.1, 0.5])
    rng = np.random.default_rng(seed)
    component = rng.integers(4, size=rows)
    x = means[component] + scales[component, None] * rng.standard_normal((rows, 3))
    log_p = special.logsumexp([stats.norm(mean, scale).logpdf(x).sum(axis=1) for mean, scale in zip(means, scales)], axis=0)
    return x, log_p - np.log(4)


def test_auto_puts_clustered_data_on_a_mixture_base_and_nears_the_true_density():
    """On clusters of unequal scales (bench/density.py's mixture-16 in small) a Gaussian mixture
    fitted to the rows validates better than the affine flow, so "auto" trains an affine flow on
    that mixture as its base and keeps it. Its held-out NLL is within 0.05 nats of the truth; the
    affine flow alone stays more than 0.2 nats away."""
    (train, _), (test, truth) = clusters(4000, 0), clusters(4000, 1)
    quick = {"epochs": 30, "layers": 4, "hidden": 32, "seed": 0, "device": "cpu"}
    model = TabularFlow(max_time=300, **quick).fit(train)
    assert model.config_.base == "mixture" and model.config_.components >= 4
    assert list(model.training_["couplings"])[:2] == ["affine", "affine (mixture base)"]
    gap = -np.mean(model.score_samples(test)) + np.mean(truth)
    affine = TabularFlow(coupling="affine", **quick).fit(train)
    assert affine.config_.base == "normal"
    affine_gap = -np.mean(affine.score_samples(test)) + np.mean(truth)
    assert -0.01 < gap < 0.05 and affine_gap > 0.2, (gap, affine_gap)
    samples = model.sample(4000, seed=0).to_numpy()
    assert np.mean(model.score_samples(samples)) == pytest.approx(np.mean(truth), abs=0.1)  # the draws look like the data to the model
    nearest = np.argmin(((samples[:, None, :] - np.array([[0, 0, 0], [6, 1, -2], [-4, 5, 1], [2, -5, 4]])) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=4) / 4000, 0.25, atol=0.03)


def test_max_time_bounds_the_whole_fit_counted_from_when_the_caller_started():
    """A caller that spent 4.5 s of a 6 s budget reading its table leaves training what is left
    once the scoring after it is set aside: about a second, where the budget alone gave six."""
    x = np.random.default_rng(0).standard_normal((4000, 3))
    model = TabularFlow(max_time=6, layers=2, hidden=8, seed=0, device="cpu").fit(x, started=time.perf_counter() - 4.5)
    assert model.training_["stopped"] == "max-time" and model.training_["wall_seconds"] < 2.5


def test_mixture_base_fits_within_the_time_budget_and_refuses_torchrun(monkeypatch):
    """EM gets a share of --max-time and the flows the rest, so the whole fit keeps to the budget;
    under torchrun each process would fit its own mixture, so --base mixture is refused there."""
    x, _ = clusters(3000, 0)
    model = TabularFlow(base="mixture", max_time=4, layers=2, hidden=8, seed=0, device="cpu").fit(x)
    assert model.config_.base == "mixture" and model.training_["wall_seconds"] < 4.5
    monkeypatch.setattr("flowcli.parallel.torchrun.world_size", lambda: 2)
    with pytest.raises(FlowcliError, match="--base mixture does not run under torchrun"):
        TabularFlow(base="mixture", epochs=1).fit(x)


def test_fit_accepts_numpy_and_names_columns():
    x = np.random.default_rng(0).standard_normal((200, 2))
    model = TabularFlow(epochs=2, hidden=8, layers=2).fit(x)
    assert model.columns_ == ["x0", "x1"]
    assert model.score_samples(x).shape == (200,)
    assert model.sample(5, seed=0).shape == (5, 2)
    assert np.isfinite(model.mean_log_likelihood(x))


def test_constant_column_is_a_single_level_that_costs_nothing():
    table = pd.DataFrame({"a": np.sqrt(np.arange(50.0)), "b": np.sin(np.arange(50.0)), "c": 7.0})
    with pytest.warns(FlowcliWarning, match="'c' is constant .* modeled as certain"):
        model = TabularFlow(epochs=1, hidden=8, layers=2).fit(table)
    assert model.columns_ == ["a", "b", "c"]
    assert model.preprocessor_.columns[2].levels == [7.0]
    without = TabularFlow(epochs=1, hidden=8, layers=2).fit(table[["a", "b"]])
    np.testing.assert_allclose(model.score_samples(table), without.score_samples(table), atol=0.5)
    assert (model.sample(20, seed=0)["c"] == 7.0).all()
    with pytest.warns(FlowcliWarning, match="never seen at fit"):
        assert model.score_samples(table.assign(c=8.0))[0] == -np.inf


def test_missing_values_are_modeled_and_infinities_named():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    table.loc[table.index % 5 == 0, "b"] = np.nan  # 20 % missing
    model = TabularFlow(epochs=3, hidden=8, layers=2).fit(table)
    scores = model.score_samples(table)
    assert np.isfinite(scores).all()
    assert abs(model.sample(4000, seed=0)["b"].isna().mean() - 0.2) < 0.03
    table.loc[9, "a"] = np.inf
    with pytest.raises(DataError, match=r"column 'a' holds 1 infinite value\(s\), the first in row 10"):
        model.score_samples(table)


def test_score_rejects_a_missing_column_and_ignores_extra_ones(bundle_path, table_csv):
    model = TabularFlow.load(bundle_path)
    table = pd.read_csv(table_csv)
    shuffled = table[["plain", "id", "large", "small"]]
    np.testing.assert_array_equal(model.score_samples(shuffled), model.score_samples(table))
    with pytest.raises(DataError, match="missing column 'large'"):
        model.score_samples(table.drop(columns="large"))


def test_divergent_learning_rate_still_gives_a_finite_model():
    x = np.random.default_rng(0).standard_normal((300, 3)) * [1, 10, 100]
    model = TabularFlow(epochs=6, lr=50.0, hidden=16, layers=4, seed=0).fit(x)
    assert all(np.isfinite(value).all() for value in model.weights_.values())
    assert np.isfinite(model.score_samples(x)).all()
    assert np.isfinite(model.training_["best_val_nll"])


def test_a_non_finite_loss_reloads_the_best_weights_at_a_lower_learning_rate():
    from flowcli.flow.config import FlowConfig
    from flowcli.flow.train import TrainSettings, train_flow

    rng = np.random.default_rng(0)
    u = rng.standard_normal((400, 3))
    calls = 0

    def redraw():  # the second epoch's data is poisoned with NaN, as a diverging step would leave it
        nonlocal calls
        calls += 1
        return np.full_like(u, np.nan) if calls == 1 else u

    trained = train_flow(u, u[:50], FlowConfig(features=3, layers=2, hidden=8), TrainSettings(epochs=5), redraw=redraw)
    summary = trained.summary
    assert summary.recoveries == 1
    assert summary.epochs == 5 and len(summary.history) == 4  # the poisoned epoch is not counted
    assert all(np.isfinite(value).all() for weights in (trained.weights, trained.first_epoch_weights) for value in weights.values())


def test_training_keeps_the_average_after_the_first_epoch_whatever_follows():
    """The ranking weights are the average at the end of epoch 1: a one-epoch fit's, whose best
    weights they are, and a longer fit's alike."""
    from flowcli.flow.config import FlowConfig
    from flowcli.flow.train import TrainSettings, train_flow

    u = np.random.default_rng(0).standard_normal((400, 3)) ** 3
    config = FlowConfig(features=3, layers=2, hidden=8)
    one, five = (train_flow(u[:350], u[350:], config, TrainSettings(epochs=epochs)) for epochs in (1, 5))
    assert one.summary.best_epoch == 1 and five.summary.best_epoch > 1
    for name, value in one.weights.items():
        np.testing.assert_array_equal(one.first_epoch_weights[name], value)
        np.testing.assert_array_equal(five.first_epoch_weights[name], value)
    assert any(not np.array_equal(five.weights[name], value) for name, value in one.weights.items())


def test_a_single_column_can_be_bimodal():
    """One feature alone would be one affine map; the auxiliary feature lets it fit two modes."""
    rng = np.random.default_rng(0)

    def draw(n):
        return pd.DataFrame({"x": rng.choice([-2.0, 2.0], size=n) + 0.4 * rng.standard_normal(n)})

    train, test = draw(3000), draw(3000)
    x = test["x"].to_numpy()
    true_ll = np.logaddexp(*(-0.5 * ((x - c) / 0.4) ** 2 - np.log(0.4 * np.sqrt(2 * np.pi)) for c in (-2, 2))) - np.log(2)
    model = TabularFlow(epochs=30, seed=0).fit(train)
    assert model.preprocessor_.auxiliary == 1 and model.config_.features == 2
    assert true_ll.mean() - model.score_samples(test).mean() < 0.15  # a Gaussian is 0.93 nats worse
    samples = model.sample(4000, seed=0)["x"]
    assert list(model.sample(3, seed=0).columns) == ["x"]
    assert (samples.abs() < 1).mean() < 0.1  # few samples between the modes


def test_scikit_learn_conventions():
    x = np.random.default_rng(0).standard_normal((200, 2))
    model = TabularFlow(epochs=2).set_params(hidden=8, layers=2)
    assert model.get_params()["hidden"] == 8
    assert model.fit(x, None) is model  # fit(X, y=None) returns self
    assert model.score(x) == pytest.approx(model.score_samples(x).mean())
    clone = TabularFlow(**model.get_params())  # what sklearn.base.clone does
    assert clone.get_params() == model.get_params()
    with pytest.raises(ValueError, match="no parameter widht"):
        model.set_params(widht=3)


def test_samples_stay_within_the_range_seen_at_fit():
    """Heavy tails through a log: even a short fit must not sample past what the data showed."""
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"t": rng.standard_t(2, 2000), "price": np.exp(2 * rng.standard_normal(2000))})
    model = TabularFlow(epochs=3, seed=0, device="cpu").fit(table)
    samples = model.sample(20_000, seed=1)
    for name in table:
        assert table[name].min() <= samples[name].min() and samples[name].max() <= table[name].max()
