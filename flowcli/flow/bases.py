"""The base densities p_base(z) of a flow's latent z (N, D), each with its torch form (training)
and its numpy form (scoring and sampling) side by side, registered by name in `registry`.

A base owns the weights its `weight_shapes` names (stored beside the flow's), checks them when
a bundle is read, and describes itself for `inspect`. The torch forms import torch when called,
so the numpy path never loads it. Tests run every registered base through both forms.
"""

from __future__ import annotations

import math

import numpy as np

from flowcli.errors import BundleError
from flowcli.flow import mixture

# A Student-t base has 1/ν = sigmoid(RATE · weight) + MIN_INVERSE_DF, per feature or one for the
# multivariate t: ν from 1 (Cauchy) to 10⁶ (the normal, in effect). It starts at ν = 100, close to
# the normal. Adam's steps change log(1/ν) by RATE times a step in other weights, so heavy tails
# are learned within a short fit (ν = 3.3 and 5.7 after 30 epochs on t columns of ν = 2.5), while
# near the normal 1/ν moves in small relative steps (equal absolute steps in 1/ν made it jitter
# and cost galaxy 0.7 nats).
INVERSE_DF_RATE = 20.0
INVERSE_DF_START = math.log(1e-2 / (1 - 1e-2)) / INVERSE_DF_RATE
MIN_INVERSE_DF = 1e-6


class Base:
    """A base density. Subclasses give both forms of `log_prob` and `sample`; weights come as a
    dict named as `weight_shapes` names them (torch parameters, or the bundle's float32 arrays)."""

    name: str
    light_tailed = True  # samples of a light-tailed base are clipped to the fit range, not drawn again

    def weight_shapes(self, config) -> dict[str, tuple[int, ...]]:
        return {}

    def initial_weights(self, config) -> dict[str, np.ndarray]:
        """What training starts from: zeros, unless a base says otherwise."""
        return {name: np.zeros(shape, np.float32) for name, shape in self.weight_shapes(config).items()}

    def accepts(self, config) -> bool:
        """Whether `config` is a valid flow on this base (only a mixture has components)."""
        return config.components == 0

    def check_weights(self, weights: dict[str, np.ndarray], source: object) -> None:
        """Raise a BundleError naming `source` when finite weights of the right shapes are still unusable."""

    def inverse_df(self, weights: dict[str, np.ndarray]) -> np.ndarray | None:
        """1/ν of a Student-t base in float64; None for a base with no degrees of freedom."""
        return None

    def describe(self, architecture: dict) -> str:
        raise NotImplementedError

    def log_prob_torch(self, z, weights: dict):
        """log p_base(z) (N,) for a torch z (N, D)."""
        raise NotImplementedError

    def log_prob_numpy(self, z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
        """log p_base(z) (N,) in float64 for z (N, D) in float64."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, rows: int, features: int, weights: dict[str, np.ndarray]) -> np.ndarray:
        """`rows` draws (rows, D) from the base, in numpy."""
        raise NotImplementedError


class Normal(Base):
    """The standard normal: every bundle before format 4 has it."""

    name = "normal"

    def describe(self, architecture: dict) -> str:
        return "normal base"

    def log_prob_torch(self, z, weights: dict):
        return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    def log_prob_numpy(self, z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
        return -0.5 * np.einsum("ij,ij->i", z, z) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    def sample(self, rng: np.random.Generator, rows: int, features: int, weights: dict[str, np.ndarray]) -> np.ndarray:
        # Drawn in float32, as flowcli always has: a seed gives the samples it gave before format 4.
        return rng.standard_normal((rows, features), dtype=np.float32)


class _StudentT(Base):
    """K independent standard d-dimensional Student-t's over z with learned ν: a flow of bounded
    slopes keeps its base's tails (Jaini et al. 2020), so only a heavy-tailed base fits
    heavy-tailed data. The per-feature base has K = D and d = 1, the multivariate one K = 1, d = D."""

    light_tailed = False

    def count(self, features: int) -> int:
        """K, the number of t's and of learned degrees of freedom."""
        raise NotImplementedError

    def weight_shapes(self, config) -> dict[str, tuple[int, ...]]:
        return {"inverse_df": (self.count(config.features),)}

    def initial_weights(self, config) -> dict[str, np.ndarray]:
        return {"inverse_df": np.full(self.count(config.features), INVERSE_DF_START, np.float32)}

    def inverse_df(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        # sigmoid(x) as 0.5 + 0.5 tanh(x / 2): it cannot overflow
        return 0.5 + 0.5 * np.tanh(0.5 * INVERSE_DF_RATE * weights["inverse_df"].astype(np.float64)) + MIN_INVERSE_DF

    def log_prob_torch(self, z, weights: dict):
        """Σ_k log t_d(·; ν_k) per row. The normalizing constants are differences of large
        log-gammas when ν is large, so they are taken in float64. Written in few operations: at a
        batch of 256 each one costs about as much as its arithmetic."""
        import torch

        inverse_df = torch.sigmoid(INVERSE_DF_RATE * weights["inverse_df"]) + MIN_INVERSE_DF
        squares = self.squares(z)
        half_df, half_d = 0.5 / inverse_df.double(), 0.5 * (z.shape[-1] // squares.shape[-1])  # ν/2, d/2
        constant = (torch.lgamma(half_df + half_d) - torch.lgamma(half_df) - half_d * torch.log(2 * math.pi * half_df)).sum()
        return constant.to(squares.dtype) - torch.log1p(squares * inverse_df) @ (0.5 / inverse_df + half_d)

    def log_prob_numpy(self, z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
        inverse_df = self.inverse_df(weights)
        squares = self.squares(z)
        d = z.shape[1] // squares.shape[1]  # the dimension of each t
        constant = sum(math.lgamma((v + d) / 2) - math.lgamma(v / 2) - 0.5 * d * math.log(v * math.pi) for v in 1 / inverse_df)
        return constant - np.log1p(squares * inverse_df) @ ((1 + d * inverse_df) / (2 * inverse_df))  # power (ν + d) / 2

    def squares(self, z):
        """Each t's squared norm (N, K) for z (N, D), torch or numpy."""
        raise NotImplementedError

    def describe(self, architecture: dict) -> str:
        low, high = (_degrees(f(architecture["degrees_of_freedom"])) for f in (min, max))
        return self.describe_range(low, high)


class StudentPerFeature(_StudentT):
    """A Student-t per latent feature, each with its own ν (format 4)."""

    name = "student"

    def count(self, features: int) -> int:
        return features

    def squares(self, z):
        return z * z

    def describe_range(self, low: str, high: str) -> str:
        return f"Student-t base (ν {low} to {high} over the features)"

    def sample(self, rng: np.random.Generator, rows: int, features: int, weights: dict[str, np.ndarray]) -> np.ndarray:
        return rng.standard_t(1 / self.inverse_df(weights), (rows, features))


class MultivariateStudent(_StudentT):
    """One elliptical Student-t over all latent features, with one ν (format 5)."""

    name = "multivariate-t"

    def count(self, features: int) -> int:
        return 1

    def squares(self, z):
        return np.einsum("ij,ij->i", z, z)[:, None] if isinstance(z, np.ndarray) else (z * z).sum(dim=-1, keepdim=True)

    def describe_range(self, low: str, high: str) -> str:
        return f"multivariate Student-t base (ν {low})"

    def sample(self, rng: np.random.Generator, rows: int, features: int, weights: dict[str, np.ndarray]) -> np.ndarray:
        df = 1 / self.inverse_df(weights)[0]  # a normal draw scaled per row by √(ν/χ²_ν)
        scale = np.sqrt(df / rng.chisquare(df, rows))
        return rng.standard_normal((rows, features)) * scale[:, None]


class GaussianMixture(Base):
    """A Gaussian mixture with full covariances (format 6), for data that come in clusters; its
    maths and its fit by EM are in `mixture`. Until training sets a fitted mixture, every component
    is the standard normal."""

    name = "mixture"

    def weight_shapes(self, config) -> dict[str, tuple[int, ...]]:
        k, d = config.components, config.features
        return {"mixture_logits": (k,), "mixture_means": (k, d), "mixture_log_diagonal": (k, d), "mixture_upper": (k, d, d)}

    def accepts(self, config) -> bool:
        return 1 <= config.components <= mixture.MAX_COMPONENTS

    def check_weights(self, weights: dict[str, np.ndarray], source: object) -> None:
        if np.abs(weights["mixture_log_diagonal"]).max() > mixture.MAX_LOG_DIAGONAL:
            raise BundleError(f"{source}: weight mixture_log_diagonal holds scales beyond e^±{mixture.MAX_LOG_DIAGONAL:.0f}")

    def describe(self, architecture: dict) -> str:
        return f"Gaussian mixture base ({architecture['components']} components)"

    def log_prob_torch(self, z, weights: dict):
        """`mixture.log_pdf` in torch: precision Cholesky factors P_k, upper triangular, from their
        log-diagonals (K, D) and strict upper triangles (K, D, D)."""
        import torch

        means, log_diagonal = weights["mixture_means"], weights["mixture_log_diagonal"]
        components, features = means.shape
        precision = torch.triu(weights["mixture_upper"], 1) + torch.diag_embed(torch.exp(log_diagonal))
        # One matmul for every component: z P_k for all k side by side, then minus μ_k P_k.
        y = (z @ precision.transpose(0, 1).reshape(features, -1)).unflatten(1, (components, features))
        y = y - (means.unsqueeze(1) @ precision).squeeze(1)
        log_joint = (torch.log_softmax(weights["mixture_logits"], dim=0) + log_diagonal.sum(dim=1)
                     - 0.5 * (y * y).sum(dim=-1) - 0.5 * features * math.log(2 * math.pi))
        return torch.logsumexp(log_joint, dim=1)

    def log_prob_numpy(self, z: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
        return mixture.log_pdf(z, weights)

    def sample(self, rng: np.random.Generator, rows: int, features: int, weights: dict[str, np.ndarray]) -> np.ndarray:
        return mixture.sample(rng, rows, weights)


def _degrees(df: float) -> str:
    return f"{df:.1f}" if df < 10 else f"{df:,.0f}"
