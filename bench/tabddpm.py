"""TabDDPM (Kotelnikov et al., ICML 2023) as synthcity's `ddpm` plugin runs it, as a bench peer.

synthcity 0.2.12 pins torch < 2.3 and numpy < 2, so the bench environment installs it with
--no-deps beside torch 2.13 (the Makefile's bench target lists its runtime dependencies). Two
things then stand between it and the plugin, none of which the plugin uses:
- it imports torchvision and tsai at load time, for its image and time-series plugins. PyPI's
  only torchvision for torch 2.13 is a CUDA build that cannot load beside the CPU torch, and tsai
  does not build here, so importing them gives empty placeholder modules;
- one of its survival metrics imports numpy.trapz, which numpy 2 renamed numpy.trapezoid.

The plugin itself stops on a table with missing values ("found NaNs in sample"), refuses
datetimes with a time zone, and returns integers as floats, so
`fit_tabddpm` hands it what a user would: each column with missing values gets a 0/1 flag
column (numbers filled with the median, categories with a level of their own) that puts the
gaps back after sampling, datetimes become seconds, and integer columns are rounded. Its epochs
are sized to the budget from a timed probe fit (the learning rate anneals over them), and a
callback stops the fit at the budget should they run slower. It samples with
strict=False: strict mode drops duplicate rows and samples again, which loops on a table whose
real rows repeat.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd

WORKSPACE = Path(tempfile.gettempdir()) / "synthcity"  # its cache, which it would put in the working directory
MISSING = "__missing__"  # the level that stands for a missing category, and the flag column's suffix


def fit_tabddpm(train: pd.DataFrame, budget: float, seed: int) -> pd.DataFrame:
    """Fit the ddpm plugin on `train` for about `budget` seconds and sample len(train) rows."""
    plugins = _synthcity_plugins()
    encoded = _encode(train)
    start = time.perf_counter()
    probe = _Clock(seconds=min(5.0, budget / 10), epochs=3)  # epochs as fast as they run, past the first one's set-up
    _plugin(plugins, 10**6, seed, probe).fit(encoded)
    per_epoch = float(np.median(np.diff(probe.ends)))
    left = start + budget - time.perf_counter()
    model = _plugin(plugins, max(1, int(left / per_epoch)), seed, _Clock(seconds=left))
    model.fit(encoded)
    return _decode(model.generate(len(train)).dataframe(), train)


def _plugin(plugins, epochs: int, seed: int, clock: _Clock):
    """The ddpm plugin at its defaults, its learning rate annealed over `epochs`, stopped by `clock`."""
    return plugins.get("ddpm", n_iter=epochs, random_state=seed, strict=False, workspace=WORKSPACE,
                       callbacks=[clock.as_callback()])


class _Clock:
    """Times the epochs of a fit (`ends`, seconds) and stops it `seconds` after it began, once it has
    run at least `epochs`."""

    def __init__(self, seconds: float, epochs: int = 1) -> None:
        self.seconds, self.epochs, self.ends = seconds, epochs, []

    def as_callback(self):
        from synthcity.utils.callbacks import Callback

        clock = self

        class Stop(Callback):
            def on_fit_begin(self, model) -> None:
                clock.began = time.perf_counter()

            def on_epoch_begin(self, model) -> None:
                pass

            def on_fit_end(self, model) -> None:
                pass

            def on_epoch_end(self, model) -> None:
                clock.ends.append(time.perf_counter())
                late = clock.ends[-1] - clock.began > clock.seconds and len(clock.ends) >= clock.epochs
                model.should_stop = model.should_stop or late

        return Stop()


def _encode(table: pd.DataFrame) -> pd.DataFrame:
    """Columns the plugin can take: no gaps (a flag column marks them), datetimes as seconds, booleans as 0/1."""
    columns = {}
    for name, values in table.items():
        if pd.api.types.is_datetime64_any_dtype(values):
            values = values.dt.tz_localize(None) if values.dt.tz is not None else values
            values = values.astype("datetime64[ns]").astype("int64").where(values.notna()) / 1e9
        elif pd.api.types.is_bool_dtype(values):
            values = values.astype(int)
        missing = values.isna()
        if missing.any():
            numeric = pd.api.types.is_numeric_dtype(values)
            values = values.fillna(values.median()) if numeric else values.astype(object).where(~missing, MISSING)
            columns[f"{name}{MISSING}"] = missing.astype(int)
        columns[name] = values
    return pd.DataFrame(columns)


def _decode(sampled: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """The plugin's rows back in `like`'s columns and types."""
    columns = {}
    for name, values in like.items():
        fake = sampled[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            fake = pd.to_datetime(np.round(fake.astype(float) * 1e9).astype("int64"), unit="ns")
            fake = fake.dt.tz_localize(values.dt.tz) if values.dt.tz is not None else fake
        elif pd.api.types.is_bool_dtype(values):
            fake = fake.astype(float).round().astype(bool)
        elif pd.api.types.is_integer_dtype(values) or _integral(values):
            fake = fake.astype(float).round()
        if f"{name}{MISSING}" in sampled:
            fake = fake.where(sampled[f"{name}{MISSING}"].astype(float).round() == 0)
            fake = fake.where(fake.astype(str) != MISSING)
        columns[name] = fake.to_numpy()
    return pd.DataFrame(columns)


def _integral(values: pd.Series) -> bool:
    """A float column of whole numbers with gaps (pandas' int with NaN) is an integer column."""
    numbers = values.dropna()
    return pd.api.types.is_float_dtype(values) and len(numbers) > 0 and bool((numbers == np.round(numbers)).all())


def _synthcity_plugins():
    if not any(isinstance(finder, _Absent) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Absent("torchvision", "tsai"))
    np.trapz = getattr(np, "trapz", np.trapezoid)
    from synthcity.plugins import Plugins

    return Plugins()


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for packages synthcity imports at load time but its ddpm plugin never calls."""

    def __init__(self, *packages: str) -> None:
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.packages:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _placeholder
        return module

    def exec_module(self, module) -> None:
        pass


def _placeholder(attribute: str) -> type:
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    return type(attribute, (), {})
