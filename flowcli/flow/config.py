"""The shape of a RealNVP flow, shared by the torch module and the numpy inference path.

A flow is `layers` steps. With `mixing`, each step starts with a learned invertible linear map
(an LU-parametrized "1×1 convolution", as in Glow) that lets every feature reach every coupling.
Then coupling k keeps the features `conditioning(k)` and transforms the rest with a scale and
shift computed from them by an MLP of `depth` hidden layers of `hidden` units. The splits
alternate between even/odd and first/second half, so every feature is transformed and
conditions every other one within a few layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from flowcli.errors import BundleError
from flowcli.flow import level_inputs, registry
from flowcli.flow.level_inputs import HeldLevels


@dataclass(frozen=True)
class FlowConfig:
    """Everything needed to rebuild a flow's structure; the weights come separately."""

    features: int
    layers: int = 8
    hidden: int = 128
    depth: int = 2
    scale_bound: float = 3.0  # |log-scale| per coupling stays below this (soft tanh clamp)
    mixing: bool = True  # an LU linear map before each coupling (bundles before format 3 have none)
    coupling: str = "affine"  # a name in `registry.COUPLINGS`: or "spline", rational-quadratic (Durkan et al. 2019)
    bins: int = 8  # spline bins on [-tail_bound, tail_bound]; the map is the identity outside
    tail_bound: float = 4.0
    base: str = "normal"  # a name in `registry.BASES` (see `bases`)
    components: int = 0  # the mixture base's components; 0 for every other base
    # Features every coupling conditions on and none transforms or mixes (format 16): those of the
    # columns a model is fitted to condition on, which pass to the latent as they are, so that
    # fixing them fixes their latent coordinates (`flowcli.condition.declared`). Normal base only.
    held: tuple[int, ...] = ()
    # Their columns' level slices (format 17), one per held feature: every coupling reads each held
    # column's level as one-hot inputs too (`flow.level_inputs`). Bundles of format 16 have none.
    held_levels: tuple[HeldLevels, ...] = ()

    def __post_init__(self) -> None:
        sizes = (self.features, self.layers, self.hidden, self.depth, self.bins - 1)
        if (any(type(size) is not int or size < 1 for size in sizes) or not 0 < self.scale_bound <= 10
                or type(self.mixing) is not bool or self.coupling not in registry.COUPLINGS
                or not 0 < self.tail_bound <= 100 or self.base not in registry.BASES
                or type(self.components) is not int or not registry.base(self.base).accepts(self)
                or not _valid_held(self.held, self.features, self.base) or not level_inputs.valid(self.held_levels, self.held)):
            raise ValueError(f"invalid flow configuration: {self}")

    @property
    def outputs_per_feature(self) -> int:
        """What a coupling's MLP computes per transformed feature (an affine map's log-scale and
        shift, a spline's bin widths, heights and interior slopes)."""
        return registry.coupling(self.coupling).outputs_per_feature(self)

    def split(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(conditioning, transformed) feature indices of coupling `layer`, each ascending.

        The features not `held` alternate between the halves; held ones always condition. With one
        feature free, it is transformed in every layer (with none held, by an unconditional map).
        """
        held = np.isin(np.arange(self.features), self.held)
        index = np.flatnonzero(~held)
        if len(index) == 1:
            return np.flatnonzero(held), index
        position = np.arange(len(index))
        if layer % 4 < 2:
            keep = position % 2 == layer % 2
        else:
            keep = (position < len(index) // 2) == (layer % 2 == 0)
        return np.flatnonzero(held | np.isin(np.arange(self.features), index[keep])), index[~keep]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The name and shape of every weight, as torch's state_dict names them."""
        shapes = registry.base(self.base).weight_shapes(self)
        for k in range(self.layers if self.mixing else 0):
            for name in ("lower", "upper"):
                shapes[f"mixings.{k}.{name}"] = (self.features, self.features)
            for name in ("log_scale", "bias"):
                shapes[f"mixings.{k}.{name}"] = (self.features,)
        for k in range(self.layers):
            conditioning, transformed = self.split(k)
            inputs = len(conditioning) + level_inputs.width(self.held_levels)
            widths = [inputs] + [self.hidden] * self.depth + [self.outputs_per_feature * len(transformed)]
            for j, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
                shapes[f"couplings.{k}.linears.{j}.weight"] = (fan_out, fan_in)
                shapes[f"couplings.{k}.linears.{j}.bias"] = (fan_out,)
        return shapes

    def check_weights(self, weights: dict[str, np.ndarray], source: object) -> None:
        """Raise a BundleError naming `source` unless `weights` are finite float32 tensors of exactly
        the names and shapes this config declares, and the base accepts them."""
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
        registry.base(self.base).check_weights(weights, source)
        if self.held and self.mixing:
            mixed = np.ones(self.features, bool)
            mixed[list(self.held)] = False
            for k in range(self.layers):
                pairs = [weights[f"mixings.{k}.{name}"][~np.outer(mixed, mixed)] for name in ("lower", "upper")]
                singles = [weights[f"mixings.{k}.{name}"][~mixed] for name in ("log_scale", "bias")]
                if any(value.any() for value in pairs + singles):
                    raise BundleError(f"{source}: mixing {k} mixes a held feature; the weights do not match the architecture")

    def tensor_count(self) -> int:
        """How many weight tensors there are, told without listing them."""
        return (2 * (self.depth + 1) + 4 * self.mixing) * self.layers + len(registry.base(self.base).weight_shapes(self))

    def weights_bytes(self) -> int:
        """The most bytes a safetensors file of these weights takes: float32 values and a JSON
        header of a few hundred bytes per tensor. Counted before listing the shapes, and refused
        past a million tensors: a forged manifest may declare a billion layers in a few bytes."""
        count = self.tensor_count()
        if count > 1_000_000:
            raise ValueError(f"{count} weight tensors")
        return 4 * self.parameter_count() + 256 * count + 4096

    def parameter_count(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.weight_shapes().values())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FlowConfig:
        """The config a manifest describes; bundles before format 3 predate `mixing`, before
        format 4 `base` (format 5 added the multivariate t, format 6 the mixture), before 16 `held`,
        before 17 `held_levels`."""
        data = {"mixing": False, "base": "normal", **data}
        if isinstance(data.get("held"), list):
            data["held"] = tuple(data["held"])
        if isinstance(data.get("held_levels"), list):
            data["held_levels"] = tuple(HeldLevels.from_json(column) for column in data["held_levels"])
        return cls(**data)


def _valid_held(held: tuple, features: int, base: str) -> bool:
    """Held features are ascending distinct indices, fewer than all features, on a normal base."""
    return type(held) is tuple and (not held or (
        all(type(k) is int for k in held) and list(held) == sorted(set(held)) and 0 <= held[0] and held[-1] < features
        and len(held) < features and base == "normal"))


def default_config(
    rows: int, features: int, *, layers: int | None = None, hidden: int | None = None, coupling: str = "affine",
    base: str = "normal", held: tuple[int, ...] = (), held_levels: tuple[HeldLevels, ...] = (),
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
    return FlowConfig(features=features, layers=layers, hidden=hidden, coupling=coupling, base=base, held=held,
                      held_levels=held_levels)
