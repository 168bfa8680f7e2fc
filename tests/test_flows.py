"""Math properties of the RealNVP: invertibility, exact log-det, and the numpy twin equal to torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowcli.flow import couplings, registry
from flowcli.flow.bases import INVERSE_DF_RATE, MIN_INVERSE_DF
from flowcli.flow.config import FlowConfig, default_config
from flowcli.flow.couplings import rational_quadratic_numpy
from flowcli.flow.couplings import rational_quadratic_torch as rational_quadratic
from flowcli.flow.level_inputs import HeldLevels
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.flow.torch_flow import RealNVP

CONFIGS = [
    FlowConfig(features=1, layers=2, hidden=8),
    FlowConfig(features=2, layers=4, hidden=16, base="student"),
    FlowConfig(features=3, layers=5, hidden=8, depth=1),
    FlowConfig(features=7, layers=8, hidden=16, depth=3, scale_bound=2.0, base="student"),
    FlowConfig(features=4, layers=3, hidden=8, mixing=False, base="normal"),  # bundles before format 3
    FlowConfig(features=3, layers=2, hidden=8, base="normal"),  # bundles before format 4
    FlowConfig(features=1, layers=1, hidden=8, coupling="spline", bins=4),
    FlowConfig(features=5, layers=4, hidden=8, coupling="spline", bins=6, tail_bound=3.0, base="student"),
    FlowConfig(features=4, layers=4, hidden=8, base="multivariate-t"),
    FlowConfig(features=1, layers=1, hidden=8, coupling="spline", bins=4, base="multivariate-t"),
    FlowConfig(features=3, layers=3, hidden=8, base="mixture", components=3),
    FlowConfig(features=1, layers=1, hidden=8, coupling="spline", bins=4, base="mixture", components=2),
    FlowConfig(features=4, layers=4, hidden=8, held=(1,)),  # format 16: features a model conditions on
    FlowConfig(features=5, layers=3, hidden=8, coupling="spline", bins=4, held=(0, 3)),
    FlowConfig(features=3, layers=2, hidden=8, held=(0, 2)),  # one feature free
    # format 17: the held columns' levels read as one-hot inputs, the second's given the first's
    FlowConfig(features=5, layers=3, hidden=8, held=(1, 3), held_levels=(HeldLevels((), ((0.3, 0.5),)), HeldLevels((0,), ((0.5,), (0.2,), (0.9,))))),
    FlowConfig(features=4, layers=2, hidden=8, coupling="spline", bins=4, held=(2,), held_levels=(HeldLevels((), ((0.5,),)),)),
]


def registered_configs() -> list[FlowConfig]:
    """A flow for every registered base with every registered coupling: registering is testing."""
    configs = []
    for base in registry.BASES:
        for coupling in registry.COUPLINGS:
            for components in (0, 2):  # a base that takes components takes 2
                try:
                    configs.append(FlowConfig(features=3, layers=3, hidden=8, bins=4, coupling=coupling, base=base, components=components))
                except ValueError:
                    continue
    return configs


REGISTERED = CONFIGS + registered_configs()


def random_flow(config: FlowConfig, seed: int = 0) -> RealNVP:
    """A float64 flow with every weight random, so no coupling is the identity."""
    torch.manual_seed(seed)
    flow = RealNVP(config).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0, 0.2)
        for mixing in flow.mixings if config.mixing and config.held else ():  # held features' entries: zero, as training leaves them
            for name, mask in (("lower", flow.free_pairs), ("upper", flow.free_pairs), ("log_scale", flow.free), ("bias", flow.free)):
                getattr(mixing, name).mul_(mask)
    return flow


def mixture_pdf(weights: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """The density (N,) of a flow's mixture base at z (N, D), by scipy from the stored weights."""
    logits = weights["mixture_logits"].astype(np.float64)
    shares = np.exp(logits) / np.exp(logits).sum()
    upper = np.triu(weights["mixture_upper"], 1) + np.stack([np.diag(np.exp(d)) for d in weights["mixture_log_diagonal"]])
    covariances = np.linalg.inv(upper @ upper.transpose(0, 2, 1))  # Σ = (P Pᵀ)⁻¹
    return sum(share * stats.multivariate_normal(mean, covariance).pdf(z).reshape(len(z))
               for share, mean, covariance in zip(shares, weights["mixture_means"], covariances))


def rows(config: FlowConfig, n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, config.features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.mark.parametrize("config", REGISTERED, ids=str)
def test_inverse_round_trip(config):
    flow, x = random_flow(config), rows(config)
    z, _ = flow(x)
    assert not torch.allclose(z, x)  # the map does something
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(flow(flow.inverse(x))[0], x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("config", REGISTERED, ids=str)
def test_log_det_equals_autograd_jacobian(config):
    flow, x = random_flow(config), rows(config, n=8)
    _, log_det = flow(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda row: flow(row[None])[0][0], x[i])
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(log_det[i], expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_log_prob_is_normalized_change_of_variables(config):
    flow, x = random_flow(config), rows(config)
    z, log_det = flow(x)
    if config.base == "normal":
        base = stats.norm.logpdf(z.detach().numpy()).sum(axis=1)
    elif config.base == "mixture":
        base = np.log(mixture_pdf({name: value.detach().numpy() for name, value in flow.state_dict().items()}, z.detach().numpy()))
    else:
        weights = {name: value.detach().numpy() for name, value in flow.state_dict().items()}
        df = 1 / NumpyRealNVP(config, weights, dtype=np.float64).inverse_df
        assert df.min() < 20  # random weights: heavy tails, not the normal limit
        if config.base == "student":
            base = stats.t.logpdf(z.detach().numpy(), df).sum(axis=1)
        else:
            base = stats.multivariate_t(np.zeros(config.features), np.eye(config.features), df=df[0]).logpdf(z.detach().numpy())
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(), base + log_det.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("config", REGISTERED, ids=str)
def test_numpy_twin_equals_torch(config):
    flow, x = random_flow(config), rows(config)
    weights = {name: value.numpy() for name, value in flow.state_dict().items()}
    twin = NumpyRealNVP(config, weights, dtype=np.float64)
    z, log_det = flow(x)
    z_np, log_det_np = twin.forward(x.numpy())
    np.testing.assert_allclose(z_np, z.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_det_np, log_det.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(twin.log_prob(x.numpy()), flow.log_prob(x).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(twin.inverse(z_np), x.numpy(), atol=1e-9)


@pytest.mark.parametrize("inverse", [False, True])
def test_spline_gradients_match_finite_differences(inverse):
    """The spline's gradients with respect to its input and all its parameters (the spelled-out
    softmax detaches its shift, which must not change them), in float64."""
    torch.manual_seed(0)
    x = (torch.rand(6, 3, dtype=torch.float64) * 7 - 3.5).requires_grad_()
    params = torch.randn(6, 3, 3 * 4 - 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, p: rational_quadratic(x, p, 3.0, inverse=inverse), (x, params))


def test_spline_twins_agree_at_the_bounds_at_the_knots_and_on_no_rows():
    rng = np.random.default_rng(0)
    params = rng.standard_normal((5, 2, 3 * 4 - 1))
    knots = couplings._knots_numpy(params[..., :4], 3.0)  # (5, 2, 5): -B, three interior knots, B
    for x in (np.full((5, 2), -3.0), np.full((5, 2), 3.0), knots[..., 2], knots[..., 1], np.full((5, 2), 7.0)):
        for inverse in (False, True):
            value, log_slope = rational_quadratic(torch.as_tensor(x), torch.as_tensor(params), 3.0, inverse=inverse)
            value_np, log_slope_np = rational_quadratic_numpy(x, params, 3.0, inverse=inverse)
            np.testing.assert_allclose(value.numpy(), value_np, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(log_slope.numpy(), log_slope_np, rtol=1e-10, atol=1e-10)
    for x in (np.full((5, 2), -3.0), np.full((5, 2), 7.0)):  # on and past the bounds: the identity
        np.testing.assert_array_equal(rational_quadratic(torch.as_tensor(x), torch.as_tensor(params), 3.0)[0].numpy(), x)
    value, log_slope = rational_quadratic(torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 2, 11, dtype=torch.float64), 3.0)
    assert value.shape == log_slope.shape == (0, 2)


def test_float32_twin_matches_exported_weights():
    config = CONFIGS[3]
    flow = random_flow(config).float()
    x = rows(config).float()
    twin = NumpyRealNVP(config, flow.export_weights())
    np.testing.assert_allclose(twin.log_prob(x.numpy()), flow.log_prob(x).detach().numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_weight_shapes_match_state_dict(config):
    state = RealNVP(config).state_dict()
    assert {name: tuple(value.shape) for name, value in state.items()} == config.weight_shapes()
    assert sum(value.numel() for value in state.values()) == config.parameter_count()
    assert len(state) == config.tensor_count()


def test_mixing_is_a_full_rank_linear_map_whose_log_det_is_its_scales():
    config = FlowConfig(features=5, layers=1, hidden=4)
    mixing = random_flow(config).mixings[0]
    weight = mixing.weight().detach()
    assert (weight.abs() > 0).all()  # L·U fills the whole matrix: every feature reaches every other
    torch.testing.assert_close(torch.linalg.slogdet(weight).logabsdet, mixing.log_scale.sum().detach())


def test_legacy_manifests_have_no_mixing_and_a_normal_base():
    legacy = {"features": 3, "layers": 2, "hidden": 8, "depth": 2, "scale_bound": 3.0}
    assert FlowConfig.from_json(legacy).mixing is False
    assert FlowConfig.from_json(legacy).base == "normal"
    format_3 = {**legacy, "mixing": True, "coupling": "affine", "bins": 8, "tail_bound": 4.0}
    assert FlowConfig.from_json(format_3).base == "normal"
    assert FlowConfig.from_json(FlowConfig(features=3).to_json()) == FlowConfig(features=3)
    assert FlowConfig(features=3).base == "normal"
    for base in ("student", "multivariate-t"):
        config = FlowConfig(features=3, base=base)
        assert FlowConfig.from_json(config.to_json()) == config
    mixture = FlowConfig(features=3, base="mixture", components=4)
    assert FlowConfig.from_json(mixture.to_json()) == mixture and FlowConfig.from_json(format_3).components == 0
    for base, components in [("mixture", 0), ("normal", 2), ("mixture", 2000)]:
        with pytest.raises(ValueError):
            FlowConfig(features=3, base=base, components=components)


@pytest.mark.parametrize("base", ["normal", "student"])
def test_latent_samples_follow_the_base(base):
    """Sampling draws the latent from the base that scoring evaluates: a Student-t of each
    feature's learned degrees of freedom, or the standard normal."""
    config = FlowConfig(features=3, layers=1, hidden=4, base=base)
    flow = RealNVP(config)
    if base == "student":
        with torch.no_grad():
            flow.inverse_df.copy_(torch.logit(1 / torch.tensor([1.5, 4.0, 30.0]) - MIN_INVERSE_DF) / INVERSE_DF_RATE)
    twin = NumpyRealNVP(config, flow.export_weights(), dtype=np.float64)
    z = twin.sample_latent(np.random.default_rng(0), 20_000)
    df = [1.5, 4.0, 30.0] if base == "student" else [math.inf] * 3
    for j in range(3):
        law = stats.norm() if base == "normal" else stats.t(df[j])
        assert stats.kstest(z[:, j], law.cdf).pvalue > 1e-3, j
    np.testing.assert_allclose(twin.log_prob(np.zeros((1, 3))),
                               sum(stats.t.logpdf(0, d) if base == "student" else stats.norm.logpdf(0) for d in df), rtol=1e-5)


def test_latent_samples_follow_the_multivariate_t_base():
    """A multivariate t's rows share one scale: |z|²/D follows F(D, ν) and each feature t(ν)."""
    config = FlowConfig(features=3, layers=1, hidden=4, base="multivariate-t")
    flow = RealNVP(config)
    with torch.no_grad():
        flow.inverse_df.copy_(torch.logit(torch.tensor([1 / 4.0 - MIN_INVERSE_DF])) / INVERSE_DF_RATE)
    twin = NumpyRealNVP(config, flow.export_weights(), dtype=np.float64)
    z = twin.sample_latent(np.random.default_rng(0), 20_000)
    assert stats.kstest((z**2).sum(axis=1) / 3, stats.f(3, 4.0).cdf).pvalue > 1e-3
    assert stats.kstest(z[:, 0], stats.t(4.0).cdf).pvalue > 1e-3
    np.testing.assert_allclose(twin.log_prob(np.zeros((1, 3))),
                               stats.multivariate_t(np.zeros(3), np.eye(3), df=4.0).logpdf(np.zeros(3)), rtol=1e-5)


@pytest.mark.parametrize("features", [2, 3, 4, 5, 9])
def test_every_feature_is_transformed_and_conditions(features):
    config = default_config(rows=10_000, features=features)
    transformed, conditioning = set(), set()
    for k in range(config.layers):
        keep, change = config.split(k)
        assert len(keep) and len(change) and len(keep) + len(change) == features
        conditioning |= set(keep.tolist())
        transformed |= set(change.tolist())
    assert transformed == conditioning == set(range(features))


def test_new_flow_is_identity():
    config = FlowConfig(features=4, layers=3, hidden=8)
    x = rows(config).float()
    z, log_det = RealNVP(config)(x)
    torch.testing.assert_close(z, x)
    assert torch.all(log_det == 0)


def test_log_scale_is_bounded():
    config = FlowConfig(features=2, layers=1, hidden=4, scale_bound=1.5)
    flow = random_flow(config)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.mul_(1e3)
    coupling = flow.couplings[0]
    x = rows(config)
    _, s = coupling.map.forward_torch(x[:, coupling.c:], coupling.conditioner(x[:, : coupling.c]), config)  # log-slopes: s
    assert s.abs().max() <= 1.5
