"""The Gaussian mixture base: its density, its draws and its fit by EM, against known mixtures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from flowcli.flow import mixture

SHARES = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
COVARIANCES = np.array([[[1.0, 0.6], [0.6, 1.0]], [[0.05, 0.0], [0.0, 0.2]], [[0.3, -0.1], [-0.1, 0.1]]])


def draw(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    component = rng.choice(3, rows, p=SHARES)
    return np.array([rng.multivariate_normal(MEANS[k], COVARIANCES[k]) for k in component])


def true_log_pdf(x: np.ndarray) -> np.ndarray:
    return special.logsumexp([np.log(p) + stats.multivariate_normal(m, c).logpdf(x) for p, m, c in zip(SHARES, MEANS, COVARIANCES)], axis=0)


def test_log_pdf_is_the_mixture_density():
    x = draw(50, 0)
    weights = mixture.as_weights(SHARES, MEANS, COVARIANCES)
    np.testing.assert_allclose(mixture.log_pdf(x, weights), true_log_pdf(x), rtol=1e-10)
    np.testing.assert_allclose(mixture.log_pdf(np.full((1, 2), 1e3), weights), true_log_pdf(np.full((1, 2), 1e3)), rtol=1e-10)  # far out: no underflow


def test_samples_follow_the_mixture():
    z = mixture.sample(np.random.default_rng(0), 20_000, mixture.as_weights(SHARES, MEANS, COVARIANCES))
    for j in range(2):  # each marginal is a mixture of normals
        def cdf(v: np.ndarray, j: int = j) -> np.ndarray:
            return sum(p * stats.norm(m[j], np.sqrt(c[j, j])).cdf(v) for p, m, c in zip(SHARES, MEANS, COVARIANCES))

        assert stats.kstest(z[:, j], cdf).pvalue > 1e-3, j
    overall = SHARES @ MEANS
    np.testing.assert_allclose(z.mean(axis=0), overall, atol=0.05)
    np.testing.assert_allclose(np.corrcoef(z[(z[:, 0] < -1.5) & (z[:, 1] > 1.5)].T)[0, 1], -0.1 / np.sqrt(0.03), atol=0.05)  # the third component's correlation


def test_fit_recovers_a_known_mixture():
    """EM picks its component count on validation and comes within a few hundredths of a nat per
    row of the true density on held-out rows; the weights are float32, as a bundle stores them."""
    train, val, test = draw(3000, 1), draw(1000, 2), draw(2000, 3)
    weights, val_nll = mixture.fit(train, val, seed=0)
    assert all(value.dtype == np.float32 for value in weights.values())
    assert len(weights["mixture_logits"]) in mixture.COMPONENTS
    assert val_nll == pytest.approx(-np.mean(mixture.log_pdf(val, weights)), abs=1e-5)
    gap = -np.mean(mixture.log_pdf(test, weights)) + np.mean(true_log_pdf(test))
    assert 0 < gap < 0.03, gap
    one_gaussian = mixture.as_weights(np.ones(1), train.mean(axis=0)[None], np.cov(train.T)[None])
    assert val_nll < -np.mean(mixture.log_pdf(val, one_gaussian)) - 1


def test_fit_drops_components_that_hold_no_rows():
    """On 100 copies of one row, k-means++ can only start every component there; the ones left
    empty are dropped rather than kept as spikes at the origin."""
    x = np.full((100, 3), 5.0)
    weights, val_nll = mixture.fit(x, x, seed=0)
    assert np.allclose(weights["mixture_means"], 5.0, atol=1e-3) and np.isfinite(val_nll)


def test_fit_stops_trying_counts_when_asked():
    """`should_stop` is polled between EM iterations: once true, the best fit so far is kept."""
    calls = []
    weights, _ = mixture.fit(draw(2000, 1), draw(500, 2), seed=0, should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert len(weights["mixture_logits"]) <= mixture.COMPONENTS[0] and len(calls) == 5


@pytest.mark.parametrize("rows", [3, 7])
def test_fit_on_few_or_tied_rows_stays_finite(rows):
    """Fewer than eight rows give one Gaussian; tied rows and a constant column keep an invertible covariance."""
    x = np.zeros((rows, 3))
    x[: rows // 2, 0] = 1.0
    weights, val_nll = mixture.fit(x, x, seed=0)
    assert len(weights["mixture_logits"]) == 1
    assert np.isfinite(val_nll) and all(np.isfinite(value).all() for value in weights.values())
    assert np.isfinite(mixture.sample(np.random.default_rng(0), 10, weights)).all()
