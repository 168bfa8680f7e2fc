"""`TabularFlow`: the density model users import. fit / score_samples / sample / save / load.

Fitting imports torch; scoring, sampling and loading run in numpy alone, so a pipeline
that scores ten rows does not pay torch's start-up.
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flowcli import __version__
from flowcli.architecture import FlowConfig, default_config
from flowcli.bundle import FORMAT_VERSION, read_bundle, write_bundle
from flowcli.errors import BundleError, DataError, FlowcliWarning
from flowcli.numpy_flow import NumpyRealNVP
from flowcli.preprocess import Preprocessor
from flowcli.schema import select_columns, to_matrix

if TYPE_CHECKING:
    import pandas as pd

    from flowcli.train import EpochReport

MIN_ROWS = 10
SAMPLE_BATCH_ROWS = 65_536


class TabularFlow:
    """A RealNVP normalizing flow over the numeric columns of a table.

    Hyperparameters left as None are sized from the data at `fit`. Learned state ends in `_`.
    Log-likelihoods are natural logs of the density in the units of the user's columns.
    """

    def __init__(
        self,
        *,
        layers: int | None = None,
        hidden: int | None = None,
        epochs: int = 500,
        max_time: float | None = None,
        batch_size: int | None = None,
        lr: float = 1e-3,
        val_fraction: float = 0.1,
        patience: int = 20,
        seed: int = 0,
        device: str = "auto",
    ):
        self.layers = layers
        self.hidden = hidden
        self.epochs = epochs
        self.max_time = max_time
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.device = device

    # ----------------------------------------------------------------------------- fitting
    def fit(
        self,
        data: Any,
        columns: list[str] | None = None,
        *,
        on_epoch: Callable[[EpochReport], None] | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
        source: str = "data",
    ) -> TabularFlow:
        """Learn the joint density of `columns` (default: every usable numeric column) of `data`.

        `data` is a pandas DataFrame, a pyarrow Table or a 2-D numpy array. Columns left out
        are named in a `FlowcliWarning`. `on_epoch` sees each epoch; when `stop_requested()`
        turns true, training ends early with the best weights so far. `source` names the data
        in error messages.
        """
        table = as_table(data)
        selection = select_columns(table, columns, source=source)
        if selection.left_out:
            reasons = "; ".join(f"{name!r} {why}" for name, why in selection.left_out.items())
            warnings.warn(f"{source}: left out {len(selection.left_out)} column(s): {reasons}", FlowcliWarning, 2)
        x = to_matrix(table, selection.columns, source=source)
        if len(x) < MIN_ROWS:
            raise DataError(f"{source}: {len(x)} rows are too few to train; give at least {MIN_ROWS}")

        from flowcli.train import TrainSettings, train_flow  # torch, once the data is known to be usable

        dtypes = [str(table.schema.field(name).type) for name in selection.columns]
        self.preprocessor_ = Preprocessor.fit(x, selection.columns, dtypes)
        u, _ = self.preprocessor_.forward(x)
        self.config_ = default_config(len(x), x.shape[1], layers=self.layers, hidden=self.hidden)
        settings = TrainSettings(
            epochs=self.epochs, max_time=self.max_time, batch_size=self.batch_size, lr=self.lr,
            val_fraction=self.val_fraction, patience=self.patience, seed=self.seed, device=self.device,
        )
        self.weights_, summary = train_flow(
            u, self.config_, settings, nll_offset=-self.preprocessor_.log_det, on_epoch=on_epoch,
            stop_requested=stop_requested,
        )
        self.training_ = summary.to_json()
        self.left_out_ = selection.left_out
        self.data_ = {"rows": len(x), "fingerprint": _fingerprint(x, selection.columns)}
        self.versions_ = {"flowcli": __version__, "torch": _torch_version()}
        self.created_ = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._flow = NumpyRealNVP(self.config_, self.weights_)
        return self

    # ----------------------------------------------------------------------------- inference
    @property
    def columns_(self) -> list[str]:
        return self.preprocessor_.names

    @property
    def sample_schema(self) -> pa.Schema:
        """The schema of sampled rows: the model's columns, as float64."""
        return pa.schema([(name, pa.float64()) for name in self.columns_])

    def score_samples(self, data: Any, *, source: str = "data", first_row: int = 0) -> np.ndarray:
        """log p(row) for every row of `data`, shape (N,), in nats, in the columns' units.

        Columns may come in any order and extra ones are ignored; `first_row` offsets the row
        numbers in error messages when `data` is one batch of a longer input.
        """
        return self.log_likelihood(to_matrix(as_table(data), self.columns_, source=source, first_row=first_row))

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) per row (N,) for a finite matrix x (N, D) in the order of `columns_`."""
        u, log_det = self.preprocessor_.forward(x)
        return self._flow.log_prob(u) + log_det

    def mean_log_likelihood(self, data: Any) -> float:
        """The average of `score_samples` over the rows of `data`, in nats per row."""
        return float(np.mean(self.score_samples(data)))

    def sample_batches(self, n: int, seed: int | None = None, batch_rows: int = SAMPLE_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """`n` synthetic rows in batches, in the original columns and units; a seed fixes them."""
        rng = np.random.default_rng(seed)
        for start in range(0, n, batch_rows):
            z = rng.standard_normal((min(batch_rows, n - start), self.config_.features), dtype=np.float32)
            x = self.preprocessor_.inverse(self._flow.inverse(z))
            yield pa.record_batch(list(x.T), schema=self.sample_schema)

    def sample(self, n: int, seed: int | None = None) -> pd.DataFrame:
        """`n` synthetic rows as a DataFrame with the original column names and units."""
        return pa.Table.from_batches(list(self.sample_batches(n, seed)), schema=self.sample_schema).to_pandas()

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, force: bool = False, inputs: tuple[str, ...] = ()) -> Path:
        """Write the model as a .flow bundle, atomically; refuses to replace a file without `force`."""
        path = Path(path)
        write_bundle(path, self._manifest(), self.weights_, force=force, inputs=inputs)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TabularFlow:
        """Read a .flow bundle; never executes code from it, and checks its contents."""
        manifest, weights = read_bundle(Path(path))
        try:
            model = cls(**manifest["hyperparameters"])
            model.config_ = FlowConfig.from_json(manifest["architecture"])
            model.preprocessor_ = Preprocessor.from_json(manifest["columns"])
            model.training_ = dict(manifest["training"])
            model.left_out_ = dict(manifest["left_out"])
            model.data_ = dict(manifest["data"])
            model.versions_ = dict(manifest["versions"])
            model.created_ = str(manifest["created"])
        except BundleError as error:
            raise BundleError(f"{path}: {error}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BundleError(f"{path}: the manifest is malformed ({type(error).__name__}: {error})") from None
        if len(model.preprocessor_.columns) != model.config_.features:
            raise BundleError(f"{path}: the manifest lists {len(model.preprocessor_.columns)} columns for a flow of {model.config_.features}")
        _check_weights(weights, model.config_, path)
        model.weights_ = weights
        model._flow = NumpyRealNVP(model.config_, weights)
        return model

    def describe(self) -> dict:
        """Everything `inspect` reports, as one JSON-able dict."""
        manifest = self._manifest()
        manifest["architecture"]["parameters"] = self.config_.parameter_count()
        return {"format_version": FORMAT_VERSION, **manifest}

    def _manifest(self) -> dict:
        return {
            "created": self.created_,
            "versions": self.versions_,
            "columns": self.preprocessor_.to_json(),
            "left_out": self.left_out_,
            "architecture": self.config_.to_json(),
            "hyperparameters": self.get_params(),
            "training": self.training_,
            "data": self.data_,
        }

    def get_params(self) -> dict:
        """The constructor's arguments, as scikit-learn estimators report them."""
        names = ("layers", "hidden", "epochs", "max_time", "batch_size", "lr", "val_fraction", "patience", "seed", "device")
        return {name: getattr(self, name) for name in names}


def as_table(data: Any) -> pa.Table:
    """A pyarrow Table from a DataFrame, Table, RecordBatch or 2-D array (columns x0, x1, ...)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise DataError(f"expected a 2-D array of rows and columns, got shape {data.shape}")
        return pa.table({f"x{j}": data[:, j] for j in range(data.shape[1])})
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    raise DataError(f"expected a DataFrame, a pyarrow Table or a 2-D numpy array, got {type(data).__name__}")


def _check_weights(weights: dict[str, np.ndarray], config: FlowConfig, path: str | Path) -> None:
    mismatch = BundleError(f"{path}: the weights do not match the architecture in the manifest")
    # Count before listing the shapes: a forged manifest may declare a billion layers in a few bytes.
    if len(weights) != 2 * config.layers * (config.depth + 1):
        raise mismatch
    expected = config.weight_shapes()
    if set(weights) != set(expected):
        raise mismatch
    for name, shape in expected.items():
        value = weights[name]
        if value.shape != shape or value.dtype != np.float32 or not np.isfinite(value).all():
            raise BundleError(f"{path}: weight {name} has shape {value.shape} and type {value.dtype}; expected finite float32 {shape}")


def _fingerprint(x: np.ndarray, columns: list[str]) -> str:
    digest = hashlib.sha256("\x1f".join(columns).encode())
    digest.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
    return "sha256:" + digest.hexdigest()


def _torch_version() -> str:
    import torch

    return torch.__version__
