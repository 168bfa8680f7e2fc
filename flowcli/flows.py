"""RealNVP in torch (Dinh, Sohl-Dickstein & Bengio 2017), used for training.

`forward` maps data to latent and returns `(z, log_det)`, where log_det = log|det ∂z/∂x|
per row, so log p(x) = log p_base(z) + log_det. The numpy twin in `numpy_flow` evaluates
the same weights for scoring and sampling without importing torch.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import nn

from flowcli.architecture import INVERSE_DF_RATE, INVERSE_DF_START, MIN_BIN, MIN_SLOPE, MIN_INVERSE_DF, SLOPE_OFFSET, FlowConfig


class Coupling(nn.Module):
    """z_C = x_C and z_T = τ(x_T; θ(x_C)) on features stored conditioning first, x_C = x[:, :c] and
    x_T = x[:, c:]: a monotone elementwise map τ of the transformed features, whose parameters θ
    an MLP computes from the conditioning ones. Subclasses give τ and its log-slopes log|τ'| (N, |T|).
    `RealNVP` stores each coupling's features in that order, so the halves are views, not gathers."""

    def __init__(self, conditioning: int, transformed: int, config: FlowConfig):
        super().__init__()
        self.c = conditioning
        self.config = config
        widths = [conditioning] + [config.hidden] * config.depth + [config.outputs_per_feature * transformed]
        self.linears = nn.ModuleList(_linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # Zero output weights make τ the identity, so training begins from the standardized data itself.
        nn.init.zeros_(self.linears[-1].weight)
        nn.init.zeros_(self.linears[-1].bias)

    def conditioner(self, x_conditioning: torch.Tensor) -> torch.Tensor:
        """The MLP's output (N, P·|T|) from the conditioning features (N, |C|)."""
        h = x_conditioning
        for linear in self.linears[:-1]:
            h = torch.relu_(linear(h))  # in place: no fresh buffer per layer (5 to 8 % faster at a batch of 4,096)
        return self.linears[-1](h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One split, not two slices: its gradient is one cat, theirs two zero-filled copies and a sum.
        x_conditioning, x_transformed = x.split([self.c, x.shape[1] - self.c], dim=1)
        z_transformed, log_slopes = self.elementwise(x_transformed, self.conditioner(x_conditioning))
        return torch.cat([x_conditioning, z_transformed], dim=1), log_slopes

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z_conditioning, z_transformed = z.split([self.c, z.shape[1] - self.c], dim=1)
        x_transformed = self.elementwise_inverse(z_transformed, self.conditioner(z_conditioning))
        return torch.cat([z_conditioning, x_transformed], dim=1)


class AffineCoupling(Coupling):
    """τ(x) = x · exp(s) + t, with |s| soft-bounded by `scale_bound`."""

    def scale_shift(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-scale s and shift t, each (N, |T|), from the conditioner's output (N, 2|T|)."""
        s, t = out.chunk(2, dim=-1)
        return self.config.scale_bound * torch.tanh(s / self.config.scale_bound), t

    def elementwise(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.scale_shift(out)
        return torch.addcmul(t, x, torch.exp(s)), s

    def elementwise_inverse(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        s, t = self.scale_shift(out)
        return (z - t) * torch.exp(-s)


class SplineCoupling(Coupling):
    """τ a monotone rational-quadratic spline on [-B, B] (Durkan et al. 2019), the identity outside."""

    def elementwise(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rational_quadratic(x, out.unflatten(-1, (x.shape[1], -1)), self.config.tail_bound)

    def elementwise_inverse(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return rational_quadratic(z, out.unflatten(-1, (z.shape[1], -1)), self.config.tail_bound, inverse=True)[0]




def rational_quadratic(
    x: torch.Tensor, params: torch.Tensor, bound: float, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline (or its inverse) at x (N, T), with params (N, T, 3K−1): K raw widths, K raw
    heights, K−1 raw interior slopes. Returns the value and log|dτ/dx| (N, T) (of the forward map).

    Written in few operations on whole tables, as at a batch of 256 each one costs about as much
    as its arithmetic: one softmax and one cumsum give both rows of knots, and one gather reads
    the knots and slopes at both ends of each value's bin."""
    bins = (params.shape[-1] + 1) // 3
    raw_shares, raw_slopes = params.split([2 * bins, bins - 1], dim=-1)
    inner_knots = _inner_knots(raw_shares.unflatten(-1, (2, bins)), bound)  # (N, T, 2, K−1): x, then y
    inner_slopes = MIN_SLOPE + nn.functional.softplus(raw_slopes + SLOPE_OFFSET)
    # Rows x knots, y knots, slopes (N, T, 3, K+1): the inner columns, padded, plus the constant ends.
    table = nn.functional.pad(torch.cat([inner_knots, inner_slopes[..., None, :]], dim=-2), (1, 1))
    table = table + _ends(bins, bound, x.dtype, x.device)
    inside = (x > -bound) & (x < bound)
    x_in = x.clamp(-bound, bound)
    k = torch.searchsorted(inner_knots[..., int(inverse), :].contiguous(), x_in[..., None].contiguous())  # (N, T, 1)
    ends_of_bin = table.gather(-1, torch.cat([k, k + 1], dim=-1)[..., None, :].expand(-1, -1, 3, 2))
    x0, x1, y0, y1, d0, d1 = ends_of_bin.flatten(-2).unbind(-1)
    width, height = x1 - x0, y1 - y0
    delta = height / width
    if inverse:  # solve the quadratic for the position θ within the bin
        dy = x_in - y0
        a = height * (delta - d0) + dy * (d0 + d1 - 2 * delta)
        b = height * d0 - dy * (d0 + d1 - 2 * delta)
        c = -delta * dy
        theta = (2 * c / (-b - torch.sqrt((b**2 - 4 * a * c).clamp(min=0)))).clamp(0, 1)
    else:
        theta = (x_in - x0) / width
    spread = theta * (1 - theta)
    denominator = delta + (d0 + d1 - 2 * delta) * spread
    value = x0 + theta * width if inverse else y0 + height * (delta * theta**2 + d0 * spread) / denominator
    log_slope = (2 * torch.log(delta) + torch.log(d1 * theta**2 + 2 * delta * spread + d0 * (1 - theta) ** 2)
                 - 2 * torch.log(denominator))
    return torch.where(inside, value, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))


@functools.lru_cache(maxsize=16)
def _ends(bins: int, bound: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The spline table's first and last columns (3, K+1), zero between: knots ±bound and slopes 1,
    where the spline joins the identity tails. Built once, not in every training step."""
    ends = torch.zeros(3, bins + 1, dtype=dtype, device=device)
    ends[:2, 0], ends[:2, -1], ends[2, 0], ends[2, -1] = -bound, bound, 1, 1
    return ends


def _inner_knots(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """The K − 1 increasing knots (…, K−1) strictly between -bound and bound from K raw bin shares,
    each bin at least MIN_BIN of the span. The softmax is spelled out: torch's is several times
    slower on a last dimension of 8."""
    shifted = torch.exp(raw - raw.detach().amax(dim=-1, keepdim=True))  # the shift cancels, so its gradient is 0
    share = MIN_BIN + (1 - MIN_BIN * raw.shape[-1]) * shifted / shifted.sum(dim=-1, keepdim=True)
    return 2 * bound * torch.cumsum(share[..., :-1], dim=-1) - bound


class LinearMixing(nn.Module):
    """The parameters of z = x Wᵀ + b with W = L·U: L unit lower-triangular, U upper-triangular
    with diagonal exp(log_scale). W is invertible for any parameters and log|det W| = Σ log_scale.
    It starts as the identity. `RealNVP` applies every step's W at once."""

    def __init__(self, features: int):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def weight(self) -> torch.Tensor:
        """W (D, D)."""
        return lu_weight(self.lower, self.upper, self.log_scale)


def lu_weight(lower: torch.Tensor, upper: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """W = L·U (…, D, D) from raw factors (…, D, D) and log-scales (…, D), batched over leading dims."""
    eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
    return (torch.tril(lower, -1) + eye) @ (torch.triu(upper, 1) + torch.diag_embed(torch.exp(log_scale)))


class RealNVP(nn.Module):
    """Steps of (optional linear mixing, coupling) over a base density, shaped by a `FlowConfig`.

    The base is the standard normal, a Student-t per latent feature or a multivariate t, with
    learned degrees of freedom: a flow of bounded slopes keeps its base's tails (Jaini et al.
    2020), so only a heavy-tailed base fits heavy-tailed data. It starts close to the normal (ν = 100).
    Or it is a Gaussian mixture (`mixture`), learned too, for data that come in clusters.

    Between steps the features are stored in the order the next coupling wants, conditioning
    first, so that its halves are slices: each mixing's W has its rows and columns permuted to
    read one order and write the next (a flow without mixing gathers columns instead), and the
    latent is put back in feature order at the end. All mixing weights are built in one batched
    pass per call: at a batch of 256 a step is mostly per-operation overhead.
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        splits = [config.split(k) for k in range(config.layers)]
        order_out = np.stack([np.concatenate(split) for split in splits])  # (L, D): the feature in each column
        order_in = np.concatenate([np.arange(config.features)[None], order_out[:-1]])
        take = np.take_along_axis(np.argsort(order_in, axis=1), order_out, axis=1)  # columns to gather without mixing
        for name, value in [("order_in", order_in), ("order_out", order_out), ("take", take),
                            ("to_features", np.argsort(order_out[-1]))]:
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.long), persistent=False)
        if config.mixing:
            self.mixings = nn.ModuleList(LinearMixing(config.features) for _ in range(config.layers))
        if config.degrees_of_freedom:
            self.inverse_df = nn.Parameter(torch.full((config.degrees_of_freedom,), INVERSE_DF_START))
        if config.components:  # the standard normal's components until `import_weights` sets a fitted mixture
            k, d = config.components, config.features
            self.mixture_logits, self.mixture_means = nn.Parameter(torch.zeros(k)), nn.Parameter(torch.zeros(k, d))
            self.mixture_log_diagonal, self.mixture_upper = nn.Parameter(torch.zeros(k, d)), nn.Parameter(torch.zeros(k, d, d))
        kind = AffineCoupling if config.coupling == "affine" else SplineCoupling
        self.couplings = nn.ModuleList(kind(len(conditioning), len(transformed), config) for conditioning, transformed in splits)

    def mixing_maps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every step's mixing in storage order: y = x @ M[k] + b[k], with M (L, D, D), b (L, D),
        and Σ log|det W| over the steps (a scalar)."""
        lower, upper, log_scale, bias = (torch.stack([getattr(m, name) for m in self.mixings])
                                         for name in ("lower", "upper", "log_scale", "bias"))
        weight = lu_weight(lower, upper, log_scale)
        layers = torch.arange(len(weight), device=weight.device)[:, None, None]
        permuted = weight[layers, self.order_out[:, :, None], self.order_in[:, None, :]]
        return permuted.transpose(1, 2), bias.gather(1, self.order_out), log_scale.sum()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data (N, D) → latent (N, D) and log|det ∂z/∂x| (N,)."""
        if self.config.mixing:
            weights, biases, mixing_log_det = self.mixing_maps()
            weights, biases = weights.unbind(), biases.unbind()  # one operation, not one index per step
        log_slopes = []
        for k, coupling in enumerate(self.couplings):
            x = torch.addmm(biases[k], x, weights[k]) if self.config.mixing else x[:, self.take[k]]
            x, coupling_log_slopes = coupling(x)
            log_slopes.append(coupling_log_slopes)
        log_det = torch.cat(log_slopes, dim=1).sum(dim=1)  # one sum for all couplings, not one per coupling
        return x[:, self.to_features], log_det + mixing_log_det if self.config.mixing else log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, D) → data (N, D)."""
        x = z[:, self.order_out[-1]]
        if self.config.mixing:
            weights, biases, _ = self.mixing_maps()
            inverses = torch.linalg.inv(weights)
        for k in reversed(range(self.config.layers)):
            x = self.couplings[k].inverse(x)
            x = (x - biases[k]) @ inverses[k] if self.config.mixing else x[:, torch.argsort(self.take[k])]
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row (N,), in the units of x."""
        return self.change_of_variables(*self.forward(x))

    def change_of_variables(self, z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
        """log p(x) (N,) from the latent z (N, D) and log|det ∂z/∂x| (N,)."""
        if self.config.base == "normal":
            return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi) + log_det
        if self.config.base == "mixture":
            return mixture_log_pdf(z, self.mixture_logits, self.mixture_means, self.mixture_log_diagonal, self.mixture_upper) + log_det
        inverse_df = torch.sigmoid(INVERSE_DF_RATE * self.inverse_df) + MIN_INVERSE_DF
        squares = z * z if self.config.base == "student" else (z * z).sum(dim=-1, keepdim=True)
        return t_log_pdf(squares, inverse_df, z.shape[-1] // squares.shape[-1]) + log_det

    def export_weights(self) -> dict[str, np.ndarray]:
        """The weights as float32 numpy arrays, named as `FlowConfig.weight_shapes` names them."""
        return {name: value.detach().to("cpu", torch.float32).numpy().copy() for name, value in self.state_dict().items()}

    def import_weights(self, weights: dict[str, np.ndarray], strict: bool = True) -> RealNVP:
        """Set the weights `weights` names: all of this flow's, when `strict`, else some of them."""
        _, unexpected = self.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()}, strict=strict)
        if unexpected:
            raise KeyError(f"this flow has no weights {unexpected}")
        return self


def t_log_pdf(squares: torch.Tensor, inverse_df: torch.Tensor, dimension: int) -> torch.Tensor:
    """Σ_k log t_d(·; ν_k) per row (N,) of K independent standard d-dimensional Student-t's, from
    each one's squared norm (N, K) and 1/ν (K,): the per-feature base has K = D and d = 1, the
    multivariate one K = 1 and d = D. The normalizing constants are differences of large
    log-gammas when ν is large, so they are taken in float64. Written in few operations: at a
    batch of 256 each one costs about as much as its arithmetic."""
    half_df, half_d = 0.5 / inverse_df.double(), 0.5 * dimension  # ν/2, d/2
    constant = (torch.lgamma(half_df + half_d) - torch.lgamma(half_df) - half_d * torch.log(2 * math.pi * half_df)).sum()
    return constant.to(squares.dtype) - torch.log1p(squares * inverse_df) @ (0.5 / inverse_df + half_d)


def mixture_log_pdf(
    z: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_diagonal: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """log p(z) (N,) under a Gaussian mixture with full covariances, for z (N, D): the torch twin of
    `mixture.log_pdf`, from logits (K,), means (K, D) and precision Cholesky factors P_k, upper
    triangular, given by their log-diagonals (K, D) and strict upper triangles (K, D, D)."""
    components, features = means.shape
    precision = torch.triu(upper, 1) + torch.diag_embed(torch.exp(log_diagonal))
    # One matmul for every component: z P_k for all k side by side, then minus μ_k P_k.
    y = (z @ precision.transpose(0, 1).reshape(features, -1)).unflatten(1, (components, features))
    y = y - (means.unsqueeze(1) @ precision).squeeze(1)
    log_joint = (torch.log_softmax(logits, dim=0) + log_diagonal.sum(dim=1) - 0.5 * (y * y).sum(dim=-1)
                 - 0.5 * features * math.log(2 * math.pi))
    return torch.logsumexp(log_joint, dim=1)


def _linear(fan_in: int, fan_out: int) -> nn.Linear:
    with warnings.catch_warnings():
        # A coupling of one feature has no conditioning inputs: torch warns about the empty weight.
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        return nn.Linear(fan_in, fan_out)
