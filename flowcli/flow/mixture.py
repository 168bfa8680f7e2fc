"""A Gaussian mixture with full covariances, in numpy: a flow's base when the data come in clusters.

Component k has a weight softmax(logits)_k, a mean μ_k (D,) and the Cholesky factor P_k of its
precision, Σ_k⁻¹ = P_k P_kᵀ with P_k upper triangular and a positive diagonal, so that
log N(z; μ_k, Σ_k) = −|(z − μ_k) P_k|²/2 + Σ log diag P_k − (D/2) log 2π needs no solve.
They are a flow's weights (`FlowConfig.weight_shapes`): `mixture_logits` (K,), `mixture_means`
(K, D), `mixture_log_diagonal` (K, D) and `mixture_upper` (K, D, D), whose strict upper
triangles are P's. `bases.GaussianMixture` holds the torch twin of `log_pdf`.

`fit` finds them by expectation-maximization, so that a flow on this base starts as the
mixture that fits the data and training only has to improve on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

COMPONENTS = (2, 4, 8, 16)  # the counts `fit` tries
MAX_COMPONENTS = 64  # what a bundle may declare: more than `fit` makes, few enough to score in memory
FIT_ROWS = 16_384  # EM runs on a sample of the training rows this large: about 2 s at 16 features
# (4,096 rows left mixture-16 0.17 nats from the truth, 20,000 rows 0.06: full covariances need rows);
# a step costs rows · D², so wider rows get proportionally fewer, down to MIN_FIT_ROWS
MIN_FIT_ROWS = 2_048
MAX_LOG_DIAGONAL = 30.0  # |log| of a precision factor's diagonal: σ from e⁻³⁰ to e³⁰ standard units
ITERATIONS = 60
TOLERANCE = 1e-4  # nats per row: EM stops when an iteration gains less
RIDGE = 1e-4  # added to each covariance's diagonal: a component on a few tied rows stays invertible


def precision_factors(weights: dict[str, np.ndarray]) -> np.ndarray:
    """P (K, D, D) in float64 from the stored weights."""
    upper = np.triu(weights["mixture_upper"].astype(np.float64), 1)
    return upper + np.einsum("kd,de->kde", np.exp(weights["mixture_log_diagonal"].astype(np.float64)),
                             np.eye(upper.shape[-1]))


def component_log_pdfs(z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """log π_k + log N(z; μ_k, Σ_k) (N, K) in float64, for z (N, D)."""
    precision = precision_factors(weights)
    means = weights["mixture_means"].astype(np.float64)
    z = np.asarray(z, dtype=np.float64)
    features, components = z.shape[1], len(precision)
    # One matmul for every component: z P_k for all k side by side, then minus μ_k P_k.
    y = (z @ precision.transpose(1, 0, 2).reshape(features, components * features)).reshape(len(z), components, features)
    y -= np.einsum("kd,kde->ke", means, precision)
    return (_log_shares(weights) + weights["mixture_log_diagonal"].astype(np.float64).sum(axis=1)
            - 0.5 * np.einsum("nke,nke->nk", y, y) - 0.5 * features * math.log(2 * math.pi))


def log_pdf(z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """log p(z) (N,) in float64 under the mixture, for z (N, D)."""
    return logsumexp(component_log_pdfs(z, weights), axis=1)


def sample(rng: np.random.Generator, rows: int, weights: dict[str, np.ndarray]) -> np.ndarray:
    """`rows` draws (rows, D) in float64: a component by its weight, then μ_k + ε P_k⁻¹."""
    component = rng.choice(len(weights["mixture_logits"]), size=rows, p=np.exp(_log_shares(weights)))
    means, inverses = weights["mixture_means"].astype(np.float64), np.linalg.inv(precision_factors(weights))
    z = rng.standard_normal((rows, means.shape[1]))
    for k in np.unique(component):  # a matmul per component, not a (rows, D, D) stack of factors
        chosen = component == k
        z[chosen] = means[k] + z[chosen] @ inverses[k]
    return z


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log Σ exp(a) along `axis`, stable, with −inf where every term is −inf."""
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(a - peak), axis=axis)) + np.squeeze(peak, axis=axis)


def _log_shares(weights: dict[str, np.ndarray]) -> np.ndarray:
    """log π (K,): the log-softmax of the logits."""
    logits = weights["mixture_logits"].astype(np.float64)
    return logits - logsumexp(logits, axis=0)


def fit(
    u_train: np.ndarray, u_val: np.ndarray, seed: int, should_stop: Callable[[], bool] = lambda: False
) -> tuple[dict[str, np.ndarray], float]:
    """The mixture (as float32 weights) with the best validation NLL of those EM fits from a
    k-means++ start, and that NLL in nats per row (on at most FIT_ROWS validation rows).

    EM runs on a sample of the training rows (N, D) for each count in COMPONENTS in turn; once
    `should_stop()` (polled between iterations) turns true, it keeps the best fit so far. Fewer
    than eight rows get one Gaussian, and components that end up holding less than a row are
    dropped, so the count may be below the one tried.
    """
    rng = np.random.default_rng(seed)
    features = u_train.shape[1]
    rows = _sample_rows(u_train, max(MIN_FIT_ROWS, int(FIT_ROWS * min(1.0, (16 / features) ** 2))), rng)
    u_val = _sample_rows(u_val, FIT_ROWS, rng)
    best, best_nll = None, math.inf
    for components in [count for count in COMPONENTS if count <= len(rows) // 4] or [1]:
        weights = _expectation_maximization(rows, components, rng, should_stop)
        nll = -float(np.mean(log_pdf(u_val, weights)))
        if nll < best_nll:
            best, best_nll = weights, nll
        if should_stop():
            break
    return {name: value.astype(np.float32) for name, value in best.items()}, best_nll


def _sample_rows(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return (x if len(x) <= limit else x[rng.choice(len(x), limit, replace=False)]).astype(np.float64)


def _expectation_maximization(
    x: np.ndarray, components: int, rng: np.random.Generator, should_stop: Callable[[], bool]
) -> dict[str, np.ndarray]:
    responsibilities = np.zeros((len(x), components))
    responsibilities[np.arange(len(x)), _nearest(x, _kmeans_plus_plus(x, components, rng))] = 1
    last = -math.inf
    for _ in range(ITERATIONS):
        weights = _maximization(x, responsibilities)
        log_joint = component_log_pdfs(x, weights)
        log_likelihood = logsumexp(log_joint, axis=1)
        responsibilities = np.exp(log_joint - log_likelihood[:, None])
        if log_likelihood.mean() - last < TOLERANCE or should_stop():
            break
        last = log_likelihood.mean()
    return _maximization(x, responsibilities)


def _maximization(x: np.ndarray, responsibilities: np.ndarray) -> dict[str, np.ndarray]:
    """The mixture that maximizes the expected log-likelihood under `responsibilities` (N, K),
    without the components that hold less than one row: their covariance would be the ridge alone."""
    totals = responsibilities.sum(axis=0)  # (K,)
    responsibilities, totals = responsibilities[:, totals >= 1], totals[totals >= 1]
    means = responsibilities.T @ x / totals[:, None]
    covariances = [(responsibilities[:, k, None] * (x - means[k])).T @ (x - means[k]) / totals[k] + RIDGE * np.eye(x.shape[1])
                   for k in range(len(totals))]
    return as_weights(totals / totals.sum(), means, np.array(covariances))


def as_weights(shares: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> dict[str, np.ndarray]:
    """The stored weights (float64) of the mixture of these shares (K,), means (K, D) and
    covariances (K, D, D)."""
    # Σ = L Lᵀ gives Σ⁻¹ = L⁻ᵀ L⁻¹, so P = L⁻ᵀ is upper triangular with P Pᵀ = Σ⁻¹.
    factors = np.linalg.inv(np.linalg.cholesky(covariances)).transpose(0, 2, 1)
    return {"mixture_logits": np.log(shares), "mixture_means": np.asarray(means, dtype=np.float64),
            "mixture_log_diagonal": np.log(np.diagonal(factors, axis1=1, axis2=2)), "mixture_upper": np.triu(factors, 1)}


def _kmeans_plus_plus(x: np.ndarray, components: int, rng: np.random.Generator) -> np.ndarray:
    """`components` rows of x, each drawn with probability ∝ its squared distance to those before."""
    centres = [x[rng.integers(len(x))]]
    distances = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(components - 1):
        centres.append(x[rng.choice(len(x), p=distances / distances.sum())] if distances.sum() > 0 else x[rng.integers(len(x))])
        distances = np.minimum(distances, ((x - centres[-1]) ** 2).sum(axis=1))
    return np.array(centres)


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centres[None]) ** 2).sum(axis=-1).argmin(axis=1)
