"""A Gaussian over the flow's features u, conditioned as the user asks, to draw candidates from.

The importance weights p(u) / q(u) correct whatever the Gaussian gets wrong, so it need only
cover the flow's conditional: it is fitted to draws from the flow, and its conditional spread
is widened by INFLATION so that its tails are no lighter than the flow's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FIT_ROWS = 16_384  # flow draws the Gaussian is fitted to
INFLATION = 1.5  # the conditional covariance is widened by this factor
_RIDGE = 1e-6


@dataclass(frozen=True)
class Gaussian:
    """N(mean, cov) over W features."""

    mean: np.ndarray  # (W,)
    cov: np.ndarray  # (W, W)

    @classmethod
    def fit(cls, u: np.ndarray, weights: np.ndarray | None = None, present: np.ndarray | None = None) -> Gaussian:
        """The moments of rows u (N, W), weighted by `weights` (N,), over the entries `present`
        (N, W) marks (each covariance over the rows where both of its features are present);
        made positive definite. A feature never present gets N(0, 1)."""
        w = np.ones(len(u)) if weights is None else np.asarray(weights, float)
        m = np.ones(u.shape, bool) if present is None else present
        mass = (m * w[:, None]).sum(axis=0)
        mean = np.where(mass > 0, (np.where(m, u, 0.0) * w[:, None]).sum(axis=0) / np.maximum(mass, 1e-300), 0.0)
        centred = np.where(m, u - mean, 0.0)
        pairs = (m * w[:, None]).T @ m
        cov = np.where(pairs > 0, (centred * w[:, None]).T @ centred / np.maximum(pairs, 1e-300), 0.0)
        cov[np.diag_indices_from(cov)] = np.where(mass > 0, np.diag(cov), 1.0)
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        return cls(mean, (vectors * np.maximum(values, _RIDGE)) @ vectors.T)

    def given(self, known: list[int], values: np.ndarray, targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The conditional of `targets` given features `known` at `values` (N, K): means
        (N, T) and the covariance (T, T), widened by INFLATION."""
        if not known:
            return np.broadcast_to(self.mean[targets], (len(values), len(targets))), INFLATION * self.cov[np.ix_(targets, targets)]
        cross = self.cov[np.ix_(targets, known)]
        gain = np.linalg.solve(self.cov[np.ix_(known, known)], cross.T).T  # (T, K)
        means = self.mean[targets] + (values - self.mean[known]) @ gain.T
        cov = self.cov[np.ix_(targets, targets)] - gain @ cross.T
        return means, INFLATION * (cov + cov.T) / 2


def draw_normal(means: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw per row of N(means[i], cov) (N, T), and its log-density (N,)."""
    lower = np.linalg.cholesky(cov + _RIDGE * np.eye(len(cov)))
    e = rng.standard_normal(means.shape)
    log_q = -0.5 * (e * e).sum(axis=1) - np.log(np.diag(lower)).sum() - 0.5 * len(cov) * math.log(2 * math.pi)
    return means + e @ lower.T, log_q


def draw_truncated(mean: np.ndarray, std: float, low: np.ndarray | float, high: np.ndarray | float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw per row of N(mean[i], std²) (N,) kept to [low, high], by its inverse CDF, and its
    log-density (N,). A window far in the tail is sampled in the side where Φ keeps precision."""
    from scipy.special import ndtr, ndtri  # here, so that scoring and sampling without conditions never load scipy

    a, b = (low - mean) / std, (high - mean) / std
    flip = a > 0  # in the upper tail, work with −x, where Φ is exact
    a, b = np.where(flip, -b, a), np.where(flip, -a, b)
    log_mass = _log_window(a, b)
    w = rng.uniform(size=np.shape(mean))
    z = ndtri(np.clip(ndtr(a) + w * (ndtr(b) - ndtr(a)), 1e-300, 1 - 1e-16))
    z = np.clip(z, a, b)
    x = mean + std * np.where(flip, -z, z)
    log_q = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - math.log(std) - log_mass
    return x, log_q


def _log_window(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Φ(b) − Φ(a)) for a ≤ b, precise when a ≤ 0 (as `draw_truncated` arranges)."""
    from scipy.special import log_ndtr

    log_b, log_a = log_ndtr(b), log_ndtr(a)
    with np.errstate(divide="ignore"):
        return log_b + np.log1p(-np.exp(np.minimum(log_a - log_b, 0.0)))
