"""A Gaussian mixture with full covariances, in numpy: a flow's base when the data come in clusters.

Component k has a weight softmax(logits)_k, a mean μ_k (D,) and the Cholesky factor P_k of its
precision, Σ_k⁻¹ = P_k P_kᵀ with P_k upper triangular and a positive diagonal, so that
log N(z; μ_k, Σ_k) = −|(z − μ_k) P_k|²/2 + Σ log diag P_k − (D/2) log 2π needs no solve.
They are a flow's weights (`FlowConfig.weight_shapes`): `mixture_logits` (K,), `mixture_means`
(K, D), `mixture_log_diagonal` (K, D) and `mixture_upper` (K, D, D), whose strict upper
triangles are P's. `flows.mixture_log_pdf` is the torch twin of `log_pdf`.

`fit` finds them by expectation-maximization, so that a flow on this base starts as the
mixture that fits the data and training only has to improve on it.
"""

from __future__ import annotations

import math

import numpy as np

COMPONENTS = (2, 4, 8, 16)  # the counts `fit` tries
FIT_ROWS = 16_384  # EM runs on a sample of the training rows this large: about 2 s at 16 features
# (4,096 rows left mixture-16 0.17 nats from the truth, 20,000 rows 0.06: full covariances need rows)
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
    logits = weights["mixture_logits"].astype(np.float64)
    log_weights = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    return (log_weights + weights["mixture_log_diagonal"].astype(np.float64).sum(axis=1)
            - 0.5 * np.einsum("nke,nke->nk", y, y) - 0.5 * features * math.log(2 * math.pi))


def log_pdf(z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """log p(z) (N,) in float64 under the mixture, for z (N, D)."""
    return _log_sum_exp(component_log_pdfs(z, weights))


def sample(rng: np.random.Generator, rows: int, weights: dict[str, np.ndarray]) -> np.ndarray:
    """`rows` draws (rows, D) in float64: a component by its weight, then μ_k + ε P_k⁻¹."""
    logits = weights["mixture_logits"].astype(np.float64)
    shares = np.exp(logits - logits.max())
    component = rng.choice(len(logits), size=rows, p=shares / shares.sum())
    inverse = np.linalg.inv(precision_factors(weights))  # (K, D, D)
    noise = rng.standard_normal((rows, inverse.shape[-1]))
    return weights["mixture_means"].astype(np.float64)[component] + np.einsum("nd,nde->ne", noise, inverse[component])


def fit(u_train: np.ndarray, u_val: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], float]:
    """The mixture (as float32 weights) of the count in COMPONENTS with the best validation NLL, and
    that NLL in nats per row. EM from a k-means++ start on at most FIT_ROWS training rows (N, D)."""
    rng = np.random.default_rng(seed)
    rows = u_train if len(u_train) <= FIT_ROWS else u_train[rng.choice(len(u_train), FIT_ROWS, replace=False)]
    rows = rows.astype(np.float64)
    best, best_nll = None, math.inf
    for components in COMPONENTS:
        if components > len(rows) // 4:
            break
        weights = _expectation_maximization(rows, components, rng)
        nll = -float(np.mean(log_pdf(u_val, weights)))
        if nll < best_nll:
            best, best_nll = weights, nll
    if best is None:  # too few rows for two components: a single Gaussian
        best = _expectation_maximization(rows, 1, rng)
        best_nll = -float(np.mean(log_pdf(u_val, best)))
    return {name: value.astype(np.float32) for name, value in best.items()}, best_nll


def _expectation_maximization(x: np.ndarray, components: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    responsibilities = np.zeros((len(x), components))
    responsibilities[np.arange(len(x)), _nearest(x, _kmeans_plus_plus(x, components, rng))] = 1
    last = -math.inf
    for _ in range(ITERATIONS):
        weights = _maximization(x, responsibilities)
        log_joint = component_log_pdfs(x, weights)
        log_likelihood = _log_sum_exp(log_joint)
        responsibilities = np.exp(log_joint - log_likelihood[:, None])
        if log_likelihood.mean() - last < TOLERANCE:
            break
        last = log_likelihood.mean()
    return _maximization(x, responsibilities)


def _maximization(x: np.ndarray, responsibilities: np.ndarray) -> dict[str, np.ndarray]:
    """The mixture that maximizes the expected log-likelihood under `responsibilities` (N, K)."""
    totals = responsibilities.sum(axis=0) + 1e-10  # (K,)
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


def _log_sum_exp(values: np.ndarray) -> np.ndarray:
    """log Σ_k exp(values[:, k]) (N,), without overflow."""
    top = values.max(axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(values - top[:, None]).sum(axis=1))
