"""Maximum-likelihood training of a RealNVP with Adam, a validation split and early stopping.

The loop reports each epoch through a callback and never prints: the CLI draws the progress.
Validation and the weights it keeps use an average of the weights over recent steps
(`optim.WeightAverage`). It keeps the best-validation average, and the average after the first
epoch (a smoother density, which the anomaly score ranks by), stops on patience, epochs or
wall-clock time, and recovers from a non-finite loss by reloading the best weights at a lower
learning rate.
The learning rate follows `LearningRate`: a cosine over the time budget, halved on plateaus, warmed
up for a flow that starts on a fitted mixture base. `train_candidates` trains several flows in
one budget and keeps the best.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from flowcli.flow import mixture
from flowcli.flow.config import FlowConfig
from flowcli.flow.device import EVAL_BATCH, check_memory, resolve_device
from flowcli.flow.optim import FlatAdam, WeightAverage
from flowcli.flow.torch_flow import RealNVP
from flowcli.parallel import torchrun

MAX_RECOVERIES = 3
WARMUP_STEPS = 2_000  # of a flow started on a fitted base (500 measured alike on student-t-8, 0.005 worse on mixture-16)
AVERAGE_DECAY = 0.99  # per step: the weight average spans about 100 steps (0.98 to 0.995 measured alike)


@dataclass(frozen=True)
class TrainSettings:
    """How to train; `None` sizes are chosen from the data."""

    epochs: int = 500
    max_time: float | None = None  # seconds of wall-clock training
    batch_size: int | None = None
    lr: float = 1.5e-3  # peak of the cosine; 1e-3 and 2e-3 measured worse overall (bench/density.py at 30 s)
    patience: int = 20  # epochs without a better validation NLL before stopping
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch; NLLs are nats per row in the data's units."""

    epoch: int
    epochs: int
    train_nll: float
    val_nll: float
    best_val_nll: float
    elapsed: float  # seconds since training started
    max_time: float | None  # seconds of training allowed: what the fit's budget leaves it
    coupling: str  # the flow in training (`flow_name`): "auto" trains an affine one, then maybe others, each from epoch 1


@dataclass
class TrainingSummary:
    """What `inspect` shows about training; NLLs are nats per row in the data's units."""

    rows_train: int
    rows_val: int
    batch_size: int
    lr: float
    seed: int
    device: str
    epochs: int = 0
    best_epoch: int = 0
    best_val_nll: float = math.inf
    wall_seconds: float = 0.0
    stopped: str = "epochs"
    recoveries: int = 0
    history: list[list[float]] = field(default_factory=list)  # [train_nll, val_nll] per epoch: of the weights, of their average
    couplings: dict[str, float] | None = None  # each tried flow's (`flow_name`) best validation NLL, when several were

    def to_json(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass
class TrainedFlow:
    """A trained flow: its config, its best-validation weights, its weights after its first epoch
    (their average then: a smoother density, nearer its start, that the anomaly score ranks by) and
    how training went."""

    config: FlowConfig
    weights: dict[str, np.ndarray]
    first_epoch_weights: dict[str, np.ndarray]
    summary: TrainingSummary


class LearningRate:
    """Adam's learning rate: `lr` times a cosine from 1 to 0 over `max_time` (when there is one),
    halved each time validation stalls for a quarter of the patience, and quartered on recovery.
    With `warmup_steps` it rises linearly over the first ones: a flow that starts on a fitted
    mixture base has narrow components that Adam's first full-size steps would throw it out of.
    (At 20,000 rows 2,000 steps are 25 epochs, so such a flow mostly stops by patience while its
    rate still rises: it refines the mixture at a small rate.)

    The decay lets the last epochs settle into a minimum that a constant rate only circles.
    """

    def __init__(self, settings: TrainSettings, warmup_steps: int = 0):
        self.scale = settings.lr
        self.max_time = settings.max_time
        self.stall = max(1, settings.patience // 4)
        self.last_change = 0  # epoch of the last better validation NLL or halving
        self.warmup_steps = warmup_steps

    def at(self, elapsed: float, steps: int) -> float:
        """The rate after `elapsed` seconds and `steps` steps."""
        warmup = min(1.0, (steps + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.max_time is None:
            return self.scale * warmup
        return self.scale * warmup * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / self.max_time)))

    def after_epoch(self, epoch: int, improved: bool) -> None:
        if improved:
            self.last_change = epoch
        elif epoch - self.last_change >= self.stall:
            self.scale /= 2
            self.last_change = epoch


def torch_version() -> str:
    """The torch that trains, for the bundle's record."""
    return torch.__version__


def split_rows(rows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) row indices; validation gets at least one row."""
    order = np.random.default_rng(seed).permutation(rows)
    n_val = min(rows - 1, max(1, round(rows * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def default_batch_size(rows: int) -> int:
    """About 64 steps per epoch, as a power of two between 32 and 512."""
    return int(np.clip(2 ** round(math.log2(max(rows, 1) / 64)), 32, 512))


def train_candidates(
    u_train: np.ndarray, u_val: np.ndarray, configs: list[FlowConfig], settings: TrainSettings, *,
    mixture_base: str = "never", reserve: Callable[[FlowConfig], float] = lambda config: 0.0, **options
) -> TrainedFlow:
    """`train_flow` for each config in turn within one `settings.max_time`, keeping the flow with the
    best validation NLL. A later config trains only on the time an earlier one left unused: when
    there is a time budget, a tenth of it or more is left, the flows so far stopped on their own
    (patience or epochs) and there is one process (torchrun's group ends with each training).

    `mixture_base` "always" puts every flow on a Gaussian mixture base fitted to the rows
    (`mixture.fit`), from which it starts. "challenge" fits that mixture after the first flow and,
    when the mixture alone validates better, the data come in clusters that flow missed: an
    affine flow on the mixture base trains next, before the configs left. "never" keeps the
    configs' bases.
    `reserve(config)` is the seconds a flow of `config` leaves unused at the end of the budget:
    the work after training that it would cost beyond what the budget already leaves (a spline
    scores slower than the affine flow the budget was sized for).
    Returns the kept flow; its summary has the wall time of all and each tried flow's best
    validation NLL under "couplings" when there was more than one. `options` go to `train_flow`.
    """
    if mixture_base not in ("never", "always", "challenge"):
        raise ValueError(f"mixture_base {mixture_base!r} is not never, always or challenge")
    start = time.perf_counter()
    on_epoch = options.pop("on_epoch", None)
    stop_requested = options.get("stop_requested", lambda: False)
    fitted = None  # (weights, validation NLL) of the mixture, fitted once when needed

    def on_mixture(config: FlowConfig) -> tuple[FlowConfig, dict[str, np.ndarray]]:
        """`config` on the fitted mixture base, and the mixture's weights. EM gets at most a quarter
        of the time left: it tries fewer component counts rather than overrun the budget."""
        nonlocal fitted
        if fitted is None:
            left = time_left()
            deadline = math.inf if left is None else time.perf_counter() + left / 4
            fitted = mixture.fit(u_train, u_val, settings.seed,
                                 should_stop=lambda: stop_requested() or time.perf_counter() > deadline)
        return replace(config, base="mixture", components=len(fitted[0]["mixture_logits"])), fitted[0]

    def time_left(config: FlowConfig | None = None) -> float | None:
        """Seconds for the next flow (of `config`): what is left of the budget less its reserve,
        and None when there is no budget or a flow after the first may not train (see above)."""
        spent = time.perf_counter() - start + (0.0 if config is None else reserve(config))
        left = None if settings.max_time is None else settings.max_time - spent
        if last is not None and (left is None or left < settings.max_time / 10 or torchrun.world_size() > 1
                                 or last.stopped not in ("patience", "epochs")):
            return None
        return left

    kept, last, tried = None, None, {}
    queue = [on_mixture(config) if mixture_base == "always" else (config, None) for config in configs]
    while queue:
        config, base_weights = queue.pop(0)
        left = time_left(config)
        if last is not None and left is None:
            break
        elapsed = time.perf_counter() - start
        best = math.inf if kept is None else kept.summary.best_val_nll
        report = None if on_epoch is None else _whole_fit(on_epoch, elapsed, best, settings.max_time)
        trained = train_flow(u_train, u_val, config, replace(settings, max_time=left), on_epoch=report,
                             base_weights=base_weights, **options)
        last = trained.summary
        tried[flow_name(config)] = last.best_val_nll
        if kept is None or last.best_val_nll < best:
            kept = trained
        if mixture_base == "challenge" and len(tried) == 1 and time_left() is not None:
            challenger = on_mixture(config)
            if fitted[1] + options.get("val_offset", 0.0) < last.best_val_nll:
                queue.insert(0, challenger)
    kept.summary.wall_seconds = time.perf_counter() - start
    if len(tried) > 1:
        kept.summary.couplings = tried
    return kept


def flow_name(config: FlowConfig) -> str:
    """A flow's name in progress reports and `TrainingSummary.couplings`: its coupling, and a mixture base."""
    return config.coupling if config.base != "mixture" else f"{config.coupling} (mixture base)"


def _whole_fit(
    on_epoch: Callable[[EpochReport], None], offset: float, best: float, max_time: float | None
) -> Callable[[EpochReport], None]:
    """`on_epoch` for a flow that starts `offset` seconds into the fit: its reports count time
    from the fit's start, against the whole budget, and their best NLL is that of all flows so far."""
    return lambda epoch: on_epoch(replace(epoch, elapsed=epoch.elapsed + offset, max_time=max_time,
                                          best_val_nll=min(epoch.best_val_nll, best)))


def train_flow(
    u_train: np.ndarray,
    u_val: np.ndarray,
    config: FlowConfig,
    settings: TrainSettings,
    *,
    train_offset: float = 0.0,
    val_offset: float = 0.0,
    redraw: Callable[[], np.ndarray] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    base_weights: dict[str, np.ndarray] | None = None,
) -> TrainedFlow:
    """Fit a RealNVP to encoded training rows (N, W), validating on u_val; returns the best weights,
    and those after the first epoch that ended finite.

    `base_weights` (a fitted mixture's, say) replace the base's initial ones; the couplings and
    mixings start as the identity, so the flow starts as that base, and the learning rate warms up.

    The offsets are added to the reported NLLs to put them in the data's units (minus the mean
    log-weight of the encoding). `redraw`, when given, re-encodes the training rows with fresh
    dequantization noise for every epoch after the first. `stop_requested` is polled every
    step (Ctrl-C, say): training then ends after a last validation, keeping the best weights.

    Under torchrun, the rows are this rank's own: each rank trains on them with
    DistributedDataParallel and a batch of `batch_size / ranks` rows, for as many steps per epoch
    as the rank with the fewest rows can take, so that the global batch and the steps per epoch
    are about those of one process; see `parallel.torchrun`. Only rank 0 calls `on_epoch`.
    """
    start = time.perf_counter()  # the budget counts setting up and the first validation too
    device = torchrun.start(resolve_device(settings.device))
    ranks = torchrun.world_size()
    torch.manual_seed(settings.seed)
    train_counts, val_counts = torchrun.gather_counts(len(u_train)), torchrun.gather_counts(len(u_val))
    batch_size = settings.batch_size or default_batch_size(sum(train_counts))
    check_memory(len(u_train) + len(u_val), config, batch_size, device)
    x_train = torch.as_tensor(u_train, dtype=torch.float32, device=device)
    x_val = torch.as_tensor(u_val, dtype=torch.float32, device=device)
    summary = TrainingSummary(
        rows_train=sum(train_counts), rows_val=sum(val_counts), batch_size=batch_size,
        lr=settings.lr, seed=settings.seed, device=str(device) if ranks == 1 else f"{ranks} × {device.type}",
    )

    flow = RealNVP(config)
    if base_weights is not None:
        flow.import_weights(base_weights, strict=False)  # the base's weights; the rest start as the identity
    flow = flow.to(device)
    optimizer = FlatAdam(flow, settings.lr)  # it moves the weights into one buffer: before DDP sees them
    average = WeightAverage(optimizer, AVERAGE_DECAY)
    model = flow if ranks == 1 else torch.nn.parallel.DistributedDataParallel(flow)
    learning_rate = LearningRate(settings, warmup_steps=0 if base_weights is None else WARMUP_STEPS)
    steps = 0
    shuffle = torch.Generator().manual_seed(settings.seed + torchrun.rank())
    best_state = copy.deepcopy(flow.state_dict())
    first_state = None
    summary.best_val_nll = _mean_nll(flow, x_val) + val_offset

    def interruption(broken: bool = False) -> tuple[bool, str | None]:
        """(a non-finite loss, why to stop), agreed by all ranks."""
        reasons = {"interrupt": stop_requested(),
                   "max-time": settings.max_time is not None and time.perf_counter() - start >= settings.max_time}
        broken, *flags = torchrun.any_rank([broken, *reasons.values()], device)
        return broken, next((reason for reason, flag in zip(reasons, flags) if flag), None)

    for epoch in range(1, settings.epochs + 1):
        if redraw is not None and epoch > 1:
            x_train = torch.as_tensor(redraw(), dtype=torch.float32, device=device)
        flow.train()
        total, seen, stop = torch.zeros((), device=device), torch.zeros((), device=device), None
        shuffled = torch.randperm(len(x_train), generator=shuffle)[: min(train_counts)]  # equal steps on every rank
        for step, batch_rows in enumerate(shuffled.split(math.ceil(batch_size / ranks))):
            x = x_train[batch_rows.to(device)]
            optimizer.lr = learning_rate.at(time.perf_counter() - start, steps)
            steps += 1
            loss = -flow.change_of_variables(*model(x)).mean()  # the base outside DDP's forward: its gradient still syncs
            optimizer.zero_grad()
            loss.backward()
            optimizer.clip_grad_norm(100.0)
            optimizer.step()
            average.update()
            total += loss.detach() * len(x)
            seen += len(x)
            # Checking finiteness syncs with the device, so look only now and then.
            broken, stop = interruption(step % 64 == 63 and not torch.isfinite(total))
            if broken or stop:
                break
        total, seen = torchrun.total(torch.stack([total, seen])).tolist()
        train_nll = total / max(seen, 1) + train_offset
        with average.applied():
            val_nll = _mean_nll(flow, x_val) + val_offset
            averaged = copy.deepcopy(flow.state_dict()) if val_nll < summary.best_val_nll or first_state is None else None
        if not (math.isfinite(train_nll) and math.isfinite(val_nll)):
            # Go back to the best weights and try again more gently.
            summary.recoveries += 1
            flow.load_state_dict(best_state)
            average.reset()
            learning_rate.scale /= 4
            optimizer.restart(learning_rate.scale)
            if summary.recoveries > MAX_RECOVERIES:
                summary.stopped = "non-finite loss"
                break
            continue
        summary.epochs = epoch
        summary.history.append([train_nll, val_nll])
        if first_state is None:
            first_state = averaged
        improved = val_nll < summary.best_val_nll
        if improved:
            summary.best_val_nll, summary.best_epoch = val_nll, epoch
            best_state = averaged
        learning_rate.after_epoch(epoch, improved)
        if on_epoch is not None and torchrun.rank() == 0:
            on_epoch(EpochReport(epoch, settings.epochs, train_nll, val_nll, summary.best_val_nll,
                                 time.perf_counter() - start, settings.max_time, flow_name(config)))
        if stop or (stop := interruption()[1]):
            summary.stopped = stop
            break
        if epoch - summary.best_epoch >= settings.patience:
            summary.stopped = "patience"
            break

    summary.wall_seconds = time.perf_counter() - start
    flow.load_state_dict(first_state or best_state)
    first_epoch_weights = flow.export_weights()
    flow.load_state_dict(best_state)
    torchrun.stop()
    return TrainedFlow(config, flow.export_weights(), first_epoch_weights, summary)


@torch.no_grad()
def _mean_nll(flow: RealNVP, x: torch.Tensor) -> float:
    """Mean −log p over the rows of x (of every rank's x), in the flow's (standardized) units."""
    flow.eval()
    total = sum((-flow.log_prob(chunk).sum() for chunk in x.split(EVAL_BATCH)), torch.zeros((), device=x.device))
    total, count = torchrun.total(torch.stack([total, torch.tensor(float(len(x)), device=x.device)])).tolist()
    return total / count
