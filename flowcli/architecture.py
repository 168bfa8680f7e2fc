"""The shape of a RealNVP flow, shared by the torch module and the numpy inference path.

A flow is `layers` steps. With `mixing`, each step starts with a learned invertible linear map
(an LU-parametrized "1×1 convolution", as in Glow) that lets every feature reach every coupling.
Then coupling k keeps the features `conditioning(k)` and transforms the rest with a scale and
shift computed from them by an MLP of `depth` hidden layers of `hidden` units. The splits
alternate between even/odd and first/second half, so every feature is transformed and
conditions every other one within a few layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from flowcli.errors import BundleError
from flowcli.mixture import MAX_COMPONENTS, MAX_LOG_DIAGONAL

MIN_BIN = 1e-3  # a spline's smallest bin width or height, as a share of its span 2B
MIN_SLOPE = 1e-3  # a spline's smallest slope at a knot
SLOPE_OFFSET = math.log(math.expm1(1 - MIN_SLOPE))  # added to raw slopes: a raw 0 gives slope 1, the identity
BASES = ("normal", "student", "multivariate-t", "mixture")
# A Student-t base has 1/ν = sigmoid(RATE · weight) + MIN_INVERSE_DF, per feature or one for the
# multivariate t: ν from 1 (Cauchy) to 10⁶ (the normal, in effect). It starts at ν = 100, close to
# the normal. Adam's steps change log(1/ν) by RATE times a step in other weights, so heavy tails
# are learned within a short fit (ν = 3.3 and 5.7 after 30 epochs on t columns of ν = 2.5), while
# near the normal 1/ν moves in small relative steps (equal absolute steps in 1/ν made it jitter
# and cost galaxy 0.7 nats).
INVERSE_DF_RATE = 20.0
INVERSE_DF_START = math.log(1e-2 / (1 - 1e-2)) / INVERSE_DF_RATE
MIN_INVERSE_DF = 1e-6


@dataclass(frozen=True)
class FlowConfig:
    """Everything needed to rebuild a flow's structure; the weights come separately."""

    features: int
    layers: int = 8
    hidden: int = 128
    depth: int = 2
    scale_bound: float = 3.0  # |log-scale| per coupling stays below this (soft tanh clamp)
    mixing: bool = True  # an LU linear map before each coupling (bundles before format 3 have none)
    coupling: str = "affine"  # or "spline": rational-quadratic (Durkan et al. 2019)
    bins: int = 8  # spline bins on [-tail_bound, tail_bound]; the map is the identity outside
    tail_bound: float = 4.0
    # or "student": a Student-t per latent feature, or "multivariate-t": one elliptical t over all
    # of them, each with learned degrees of freedom, or "mixture": a Gaussian mixture (`mixture`)
    base: str = "normal"
    components: int = 0  # the mixture base's components; 0 for every other base

    def __post_init__(self) -> None:
        sizes = (self.features, self.layers, self.hidden, self.depth, self.bins - 1)
        if (any(type(size) is not int or size < 1 for size in sizes) or not 0 < self.scale_bound <= 10
                or type(self.mixing) is not bool or self.coupling not in ("affine", "spline")
                or not 0 < self.tail_bound <= 100 or self.base not in BASES
                or type(self.components) is not int or not 0 <= self.components <= MAX_COMPONENTS
                or (self.components >= 1) != (self.base == "mixture")):
            raise ValueError(f"invalid flow configuration: {self}")

    @property
    def outputs_per_feature(self) -> int:
        """What a coupling's MLP computes per transformed feature: a log-scale and a shift, or a
        spline's bin widths, bin heights and interior knot derivatives."""
        return 2 if self.coupling == "affine" else 3 * self.bins - 1

    @property
    def degrees_of_freedom(self) -> int:
        """How many learned degrees of freedom the base has: none for the normal or the mixture."""
        return {"normal": 0, "student": self.features, "multivariate-t": 1, "mixture": 0}[self.base]

    def split(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(conditioning, transformed) feature indices of coupling `layer`.

        With one feature nothing can condition, so the coupling is an unconditional affine map.
        """
        index = np.arange(self.features)
        if self.features == 1:
            return index[:0], index
        if layer % 4 < 2:
            keep = index % 2 == layer % 2
        else:
            keep = (index < self.features // 2) == (layer % 2 == 0)
        return index[keep], index[~keep]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The name and shape of every weight, as torch's state_dict names them."""
        shapes = {"inverse_df": (self.degrees_of_freedom,)} if self.degrees_of_freedom else {}
        if self.components:
            k, d = self.components, self.features
            shapes.update(mixture_logits=(k,), mixture_means=(k, d), mixture_log_diagonal=(k, d), mixture_upper=(k, d, d))
        for k in range(self.layers if self.mixing else 0):
            for name in ("lower", "upper"):
                shapes[f"mixings.{k}.{name}"] = (self.features, self.features)
            for name in ("log_scale", "bias"):
                shapes[f"mixings.{k}.{name}"] = (self.features,)
        for k in range(self.layers):
            conditioning, transformed = self.split(k)
            widths = [len(conditioning)] + [self.hidden] * self.depth + [self.outputs_per_feature * len(transformed)]
            for j, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
                shapes[f"couplings.{k}.linears.{j}.weight"] = (fan_out, fan_in)
                shapes[f"couplings.{k}.linears.{j}.bias"] = (fan_out,)
        return shapes

    def check_weights(self, weights: dict[str, np.ndarray], source: object) -> None:
        """Raise a BundleError naming `source` unless `weights` are finite float32 tensors of exactly
        the names and shapes this config declares, and a mixture base's scales are in bounds."""
        mismatch = BundleError(f"{source}: the weights do not match the architecture in the manifest")
        # Count before listing the shapes: a forged manifest may declare a billion layers in a few bytes.
        if len(weights) != self.tensor_count():
            raise mismatch
        expected = self.weight_shapes()
        if set(weights) != set(expected):
            raise mismatch
        for name, shape in expected.items():
            value = weights[name]
            if value.shape != shape or value.dtype != np.float32 or not np.isfinite(value).all():
                raise BundleError(
                    f"{source}: weight {name} has shape {value.shape} and type {value.dtype}; expected finite float32 {shape}"
                )
        if self.components and np.abs(weights["mixture_log_diagonal"]).max() > MAX_LOG_DIAGONAL:
            raise BundleError(f"{source}: weight mixture_log_diagonal holds scales beyond e^±{MAX_LOG_DIAGONAL:.0f}")

    def tensor_count(self) -> int:
        """How many weight tensors there are, told without listing them."""
        return (2 * (self.depth + 1) + 4 * self.mixing) * self.layers + bool(self.degrees_of_freedom) + 4 * bool(self.components)

    def parameter_count(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.weight_shapes().values())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FlowConfig:
        """The config a manifest describes; bundles before format 3 predate `mixing`, and before
        format 4 `base` (format 5 added the multivariate t, format 6 the mixture)."""
        return cls(**{"mixing": False, "base": "normal", **data})


def default_config(
    rows: int, features: int, *, layers: int | None = None, hidden: int | None = None, coupling: str = "affine",
    base: str = "normal",
) -> FlowConfig:
    """A flow sized for `rows` × `features`: 64 hidden units, 128 from 50,000 rows and 17 features,
    256 from 200,000 rows and 65 features.

    Measured by bench/density.py with a 60 s budget: 64 units beat 16, 32 and 128 on the
    galaxy (100,000 × 7) and Sachs (7,466 × 11) tables and tied on a 16-D mixture; a wider
    net only overfits sooner unless there are rows to feed it (banana-32 at 20,000 rows did
    best with 32).
    """
    if hidden is None:
        hidden = 256 if rows >= 200_000 and features > 64 else 128 if rows >= 50_000 and features > 16 else 64
    if layers is None:
        layers = 1 if features == 1 else 8  # one feature: couplings reduce to a single affine map
    return FlowConfig(features=features, layers=layers, hidden=hidden, coupling=coupling, base=base)
