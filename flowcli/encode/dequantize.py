"""The standard normal as the encoders use it: a value integrated out is a normal draw from the
noise, weighted by 1/φ, and a set of discrete levels maps to slices of the normal whose
probabilities are the levels' frequencies. scipy is imported only when a table needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def ndtri(c: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri  # imported only for tables that need it

    return ndtri(np.clip(c, 1e-300, 1 - 1e-16))


def ndtr(g: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(g)


def normal_log_pdf(g: np.ndarray) -> np.ndarray:
    return -0.5 * g * g - 0.5 * math.log(2 * math.pi)


def integrated_out(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise in (0, 1) → normal draws g = Φ⁻¹(w) and their log-weights −log φ(g), which make a
    value drawn so count as integrated out: E_g[p(x, g) / φ(g)] = p(x)."""
    g = ndtri(w)
    return g, -normal_log_pdf(g)


@dataclass(frozen=True)
class Levels:
    """Probabilities of a finite set of levels, mapped to one standard-normal feature."""

    probabilities: np.ndarray  # (K,), sums to 1

    @property
    def _starts(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.probabilities)[:-1]])

    def encode(self, index: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level indices (N,), −1 where unseen (log-weight −inf), and noise (N,) → (g, log-weight)."""
        seen = index >= 0
        k = np.where(seen, index, 0)
        f = self.probabilities[k]
        g = ndtri(self._starts[k] + f * w)
        with np.errstate(divide="ignore"):
            log_weight = np.where(seen, np.log(f), -np.inf) - normal_log_pdf(g)
        return g, log_weight

    def decode(self, g: np.ndarray) -> np.ndarray:
        """Feature (N,) → level indices (N,)."""
        return self.level_at(ndtr(g))

    def level_at(self, p: np.ndarray) -> np.ndarray:
        """Probabilities Φ(g) (N,) → level indices (N,): the level whose slice holds each."""
        index = np.searchsorted(np.cumsum(self.probabilities), p, side="right")
        return np.minimum(index, len(self.probabilities) - 1)
