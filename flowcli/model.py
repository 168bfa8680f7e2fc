"""`TabularFlow`: the density model users import. fit / score_samples / sample / save / load.

Fitting imports torch; scoring, sampling and loading run in numpy alone, so a pipeline
that scores ten rows does not pay torch's start-up.
"""

from __future__ import annotations

import collections
import datetime
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flowcli import __version__, explain
from flowcli.bundle import FORMAT_VERSION, read_bundle, write_bundle
from flowcli.condition.conditionals import Conditionals
from flowcli.condition.declared import check_held, declared_columns, held_features, held_levels
from flowcli.encode.columns import CategoricalColumn
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import BundleError, DataError, FlowcliError, FlowcliWarning
from flowcli.estimator import EstimatorConventions, one_of
from flowcli.explain import (
    Anomalies,
    AnomalyReference,
    typical_from_json,
    typical_surprises,
    with_ranking,
    without_ranking,
)
from flowcli.flow.config import FlowConfig, default_config
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.likelihood import log_likelihood, quantiles, seconds_per_row, unseen_message
from flowcli.parallel import torchrun
from flowcli.sampling import draw_features
from flowcli.summary import reference_summary, training_fingerprint
from flowcli.table.dialect import dialect_of
from flowcli.table.inputs import as_frame, as_table, feature_names
from flowcli.table.schema import require_columns, select_columns
from flowcli.table.shards import shared_rows

if TYPE_CHECKING:
    import pandas as pd

    from flowcli.flow.train import EpochReport

MIN_ROWS = 10
PROBE_ROWS = 1_000  # validation rows scored before training, to time the work after it
SAMPLE_BATCH_ROWS = 65_536


class TabularFlow(Anomalies, Conditionals, EstimatorConventions):
    """A RealNVP normalizing flow over the numeric columns of a table.

    Hyperparameters left as None are sized from the data at `fit`. Learned state ends in `_`;
    as in scikit-learn, `n_features_in_` counts the columns given to `fit` and `feature_names_in_`
    names them when they had names (a DataFrame or a pyarrow Table, not an array).
    Log-likelihoods are natural logs of the density in the units of the user's columns.
    `coupling` "auto" trains affine couplings and, given a `max_time`, a spline flow on the time
    the affine one leaves unused, keeping the one with the lowest validation NLL; when a Gaussian
    mixture fitted to the rows validates better than the affine flow, an affine flow on that
    mixture as its base trains first in that time. `base` "mixture" always gives the flows such
    a base (not under torchrun), "multivariate-t" a multivariate Student-t base, and "student"
    one per feature, with degrees of freedom learned, for heavy tails. Beside the kept flow's
    weights (`weights_`), `ranking_weights_` are its averaged weights after its first epoch: the
    smoother density the anomaly score ranks by (`flowcli.explain`). `condition` names category
    columns the flow is fitted to condition on: given them, rows cost what unconditional ones do
    (`flowcli.condition.declared`).
    """

    def __init__(
        self,
        *,
        layers: int | None = None,
        hidden: int | None = None,
        coupling: str = "auto",
        base: str = "normal",
        epochs: int = 500,
        max_time: float | None = None,
        batch_size: int | None = None,
        lr: float = 1.5e-3,
        val_fraction: float = 0.1,
        patience: int = 20,
        seed: int = 0,
        device: str = "auto",
        contamination: float = 0.1,
        condition: Sequence[str] = (),
    ):
        self.layers = layers
        self.hidden = hidden
        self.coupling = coupling
        self.base = base
        self.epochs = epochs
        self.max_time = max_time
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.contamination = contamination
        self.condition = condition

    # ----------------------------------------------------------------------------- fitting
    def fit(
        self,
        data: Any,
        y: None = None,
        *,
        columns: list[str] | None = None,
        kinds: dict[str, str] | None = None,
        ignore: Sequence[str] = (),
        on_epoch: Callable[[EpochReport], None] | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
        source: str = "data",
        started: float | None = None,
    ) -> TabularFlow:
        """Learn the joint distribution of `columns` (default: every column it can model) of `data`.

        `data` is a pandas DataFrame, a pyarrow Table or a 2-D numpy array; `y` is ignored, as
        scikit-learn passes it to density models. `kinds` overrides
        the inferred kind of the columns it names ("continuous", "integer", "categorical",
        "boolean", "datetime"); `ignore` leaves columns out. Columns left out are named in a
        `FlowcliWarning`. `on_epoch` sees each epoch; when `stop_requested()` turns true,
        training ends early with the best weights so far. `source` names the data in errors.
        `max_time` bounds the whole call, counted from `started` (a `time.perf_counter()`; default:
        the call's start), so that a caller's reading of the data counts too: training gets what
        is left once the work after it is set aside (timed on PROBE_ROWS rows), and at least a tenth.

        Under torchrun, `data` is this rank's share of the rows (see `shards`): every rank fits
        the same preprocessing on rows gathered from all shares, then trains on its own rows.
        """
        started = time.perf_counter() if started is None else started
        if self.base == "mixture" and torchrun.world_size() > 1:
            raise FlowcliError("--base mixture does not run under torchrun: each process would fit its own mixture; "
                               "use the normal base, which --coupling auto challenges with a mixture in one process")
        table = as_table(data)
        dialect = dialect_of(table.schema.metadata)  # how a CSV was written, for `inspect`
        if dialect is not None:
            table = table.replace_schema_metadata(None)  # the fingerprint is of the values alone
        input_names = table.schema.names
        shared = shared_rows(table, self.seed)  # `table` itself, unless under torchrun
        selection = select_columns(shared, columns, kinds=kinds, ignore=ignore, source=source)
        if selection.left_out:
            reasons = "; ".join(f"{name!r} {why}" for name, why in selection.left_out.items())
            warnings.warn(f"{source}: left out {len(selection.left_out)} column(s): {reasons}", FlowcliWarning, 2)
        counts = torchrun.gather_counts(table.num_rows)
        total_rows = sum(counts)
        if min(counts) < MIN_ROWS:  # on every rank alike, so that none waits for the others
            raise DataError(f"{source}: {min(counts)} rows are too few to train; give at least {MIN_ROWS}")
        table = table.select(selection.columns)
        fingerprint = training_fingerprint(table)
        condition = declared_columns(self.condition, selection.kinds, selection.left_out, self.base)
        self.preprocessor_ = Preprocessor.fit(shared.select(selection.columns), selection.kinds, source=source,
                                              declared=kinds or {}, held=condition)
        for column in self.preprocessor_.columns:
            if isinstance(column, CategoricalColumn) and column.levels == [column.levels[0]] and not column.rare:
                warnings.warn(f"{source}: column {column.name!r} is constant ({column.levels[0]!r} in every row); "
                              "it is modeled as certain", FlowcliWarning, 2)
        rng = np.random.default_rng(self.seed)
        u, log_weight = self.preprocessor_.encode(table, rng.uniform(size=(table.num_rows, self.preprocessor_.width)), source=source)
        v, log_weight = self.preprocessor_.past_front(u, log_weight)  # the flow trains past its fixed first step

        from flowcli.flow.train import (  # torch, once the data is known to be usable
            TrainSettings,
            split_rows,
            torch_version,
            train_candidates,
        )

        train_rows, val_rows = split_rows(table.num_rows, self.val_fraction, self.seed)
        train_table = table.take(train_rows)
        redraw = None
        if self.preprocessor_.dequantized or not self.preprocessor_.is_exact(table):
            def redraw() -> np.ndarray:  # fresh dequantization and imputation noise for an epoch
                fresh = self.preprocessor_.encode(train_table, rng.uniform(size=(len(train_rows), self.preprocessor_.width)))
                return self.preprocessor_.past_front(*fresh)[0]
        # A mixture base's components are counted at training, from the mixture fitted there.
        held = held_features(self.preprocessor_, condition)  # a mixture base would mix them: no challenge then
        configs = [default_config(total_rows, self.preprocessor_.width, layers=self.layers, hidden=self.hidden, coupling=coupling,
                                  base="normal" if self.base == "mixture" else self.base, held=held,
                                  held_levels=held_levels(self.preprocessor_, held))
                   for coupling in (("affine", "spline") if self.coupling == "auto" else (self.coupling,))]
        mixture_base = ("always" if self.base == "mixture" else
                        "challenge" if self.base == "normal" and self.coupling == "auto" and not held else "never")
        validation = table.take(val_rows)
        training_time, reserve = None, lambda config: 0.0
        if self.max_time is not None:
            # After training: the validation rows scored twice (the fit, the ranking weights), then the typical surprises
            # (a pass per column over some), with a margin of a half; set aside for the first flow (a later one, its extra).
            passes = 2 * len(val_rows) + (len(self.preprocessor_.columns) + 1) * min(explain.TYPICAL_ROWS, len(val_rows))
            probe = validation.slice(0, PROBE_ROWS)
            finishing = {config.coupling: 1.5 * passes * seconds_per_row(self.preprocessor_, config, probe) for config in configs}
            first = finishing[configs[0].coupling]
            training_time = max(self.max_time - (time.perf_counter() - started) - first, self.max_time / 10)
            reserve = lambda config: max(finishing.get(config.coupling, first) - first, 0.0)
        settings = TrainSettings(
            epochs=self.epochs, max_time=training_time, batch_size=self.batch_size, lr=self.lr,
            patience=self.patience, seed=self.seed, device=self.device,
        )
        trained = train_candidates(
            v[train_rows], v[val_rows], configs, settings,
            train_offset=-torchrun.mean(log_weight[train_rows]), val_offset=-torchrun.mean(log_weight[val_rows]),
            redraw=redraw, on_epoch=on_epoch, stop_requested=stop_requested, mixture_base=mixture_base, reserve=reserve,
        )
        self.config_, self.weights_, self.ranking_weights_ = trained.config, trained.weights, trained.first_epoch_weights
        self.training_ = trained.summary.to_json()
        self._flow = NumpyRealNVP(self.config_, self.weights_, front=self.preprocessor_.front)
        self._set_ranking_flow()
        validation_scores = self.score_samples(validation, source=source)
        self.validation_quantiles_ = quantiles(validation_scores)
        ranking_scores = self.ranking_log_likelihood(validation, validation_scores)
        self.anomaly_ = AnomalyReference.fit(self.preprocessor_, train_table, validation, ranking_scores)
        self.typical_surprises_ = typical_surprises(self.score_samples, validation, self.columns_)
        self.reference_ = reference_summary(self.preprocessor_, table, u)
        self.left_out_ = selection.left_out
        self.data_ = {"rows": total_rows, "fingerprint": fingerprint, **({"csv_dialect": dialect.to_json()} if dialect else {})}
        self.versions_ = {"flowcli": __version__, "torch": torch_version()}
        self.created_ = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.format_version_ = FORMAT_VERSION
        self.n_features_in_ = len(input_names)
        names = feature_names(data, input_names)
        if names is None:
            vars(self).pop("feature_names_in_", None)  # a refit on an array forgets an earlier fit's names
        else:
            self.feature_names_in_ = names
        return self

    # ----------------------------------------------------------------------------- inference
    @property
    def columns_(self) -> list[str]:
        return self.preprocessor_.names

    @property
    def sample_schema(self) -> pa.Schema:
        """The schema of sampled rows: the model's columns with their types at fit."""
        return pa.schema([(column.name, column.output_type) for column in self.preprocessor_.columns])

    def score_samples(
        self, data: Any, *, strict: bool = False, source: str = "data", first_row: int = 0,
        unseen: collections.Counter | None = None, given: Sequence[str] = (),
    ) -> np.ndarray:
        """log-likelihood of every row of `data`, shape (N,), in nats, in the columns' units.

        Continuous columns contribute a log-density; discrete ones, and the pattern of missing
        values (whose values are integrated out, see `encode.columns`), a log-probability. A category
        never seen at fit has probability zero: −inf, with a warning, or a DataError when `strict`; a
        number or date outside the range seen at fit scores finite (the maps continue past it), with a
        warning or, when `strict`, a DataError; an `unseen` Counter tallies them per column instead of
        the warning (a caller scoring many batches warns once, with `unseen_message`). Columns may come
        in any order, extra ones ignored; `first_row` offsets row numbers in errors for one batch of
        many. With `given` columns, the score is log p(other columns | given ones): the log-likelihood
        less the given columns' own, estimated by importance sampling over the others.
        """
        table = self._checked(data, strict=strict, source=source, unseen=unseen)
        scores = log_likelihood(self.preprocessor_, self._flow, table, source=source, first_row=first_row)
        if not given:
            return scores
        return self.conditional_scores(scores, table, given, first_row=first_row)

    def _checked(self, data: Any, *, strict: bool, source: str, unseen: collections.Counter | None) -> pa.Table:
        """`data` as a table, its width and columns checked; values unseen at fit refused, tallied or warned of."""
        self._require_fitted()
        width = getattr(self, "n_features_in_", None)  # unknown for a loaded bundle
        if isinstance(data, np.ndarray) and data.ndim == 2 and width is not None and data.shape[1] != width:
            raise DataError(f"{source}: X has {data.shape[1]} features, but TabularFlow is expecting {width} "
                            "features as input (the width of the data at fit)")
        table = as_table(data)
        require_columns(table.schema.names, self.columns_, source=source)
        counts = self.preprocessor_.unseen(table, source=source)
        if counts and strict:
            raise DataError(unseen_message(source, counts, self.preprocessor_, strict=True))
        if counts and unseen is None:
            warnings.warn(unseen_message(source, counts, self.preprocessor_), FlowcliWarning, 3)
        elif counts:
            unseen.update(counts)
        return table

    def mean_log_likelihood(self, data: Any) -> float:
        """The average of `score_samples` over the rows of `data`, in nats per row."""
        return float(np.mean(self.score_samples(data)))

    def score(self, data: Any, y: None = None) -> float:
        """scikit-learn's name for `mean_log_likelihood` (higher is better), e.g. for GridSearchCV."""
        return self.mean_log_likelihood(data)

    def sample_batches(
        self, n: int, seed: int | None = None, batch_rows: int = SAMPLE_BATCH_ROWS, *, given: dict | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """`n` synthetic rows in batches, with the original names, types and units; a seed fixes them.
        `given` conditions them (`flowcli.condition.conditions`): {"region": "north"} fixes a value,
        {"region": ["north", "south"]} a set, {"age": {">=": 30, "<": 65}} a range."""
        rng = self._rng(seed)
        if given is not None:
            yield from self._conditional_batches(n, given, rng)
            return
        for start in range(0, n, batch_rows):
            yield self.preprocessor_.decode(self._draw_features(rng, min(batch_rows, n - start)), rng)

    def _draw_features(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """`rows` flow features (rows, W) drawn from the model, to decode (`sampling.draw_features`)."""
        return draw_features(self._flow, self.preprocessor_, rng, rows)

    def sample(
        self, n: int | None = None, seed: int | None = None, *,
        n_samples: int | None = None, random_state: int | None = None, given: Any = None,
    ) -> pd.DataFrame:
        """`n` synthetic rows as a DataFrame with the original column names, types and units.

        `n_samples` and `random_state` are scikit-learn's names for `n` (default 1) and `seed` (an
        int or None). Integer and boolean columns come as pandas' nullable dtypes (Int64, boolean),
        which hold missing values without turning into floats. `given` is a dict of conditions
        (`sample_batches`), or a table whose rows each give one output row (`sample_given`).
        """
        n = one_of(n, n_samples, "n", "n_samples", default=1)  # ignored with a table of conditions
        seed = one_of(seed, random_state, "seed", "random_state", default=None)
        if given is not None and not isinstance(given, dict):
            batches = self.sample_given([given], seed)
        else:
            batches = self.sample_batches(n, seed, given=given)
        return as_frame(pa.Table.from_batches(list(batches), schema=self.sample_schema))

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, force: bool = False, inputs: tuple[str, ...] = ()) -> Path:
        """Write the model as a .flow bundle, atomically; refuses to replace a file without `force`."""
        path = Path(path)
        write_bundle(path, self._manifest(), with_ranking(self.weights_, self.ranking_weights_), force=force, inputs=inputs)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TabularFlow:
        """Read a .flow bundle (from format 15 with ranking weights); runs no code from it, checks its contents."""
        manifest, weights = read_bundle(Path(path), lambda manifest: 2 * FlowConfig.from_json(manifest["architecture"]).weights_bytes())
        try:
            model = cls(**{**manifest["hyperparameters"], "condition": tuple(manifest["hyperparameters"].get("condition", ()))})
            model.config_ = FlowConfig.from_json(manifest["architecture"])
            model.preprocessor_ = Preprocessor.from_json(manifest["columns"])
            model.training_ = dict(manifest["training"])
            model.left_out_ = dict(manifest["left_out"])
            model.data_ = dict(manifest["data"])
            model.versions_ = dict(manifest["versions"])
            model.created_ = str(manifest["created"])
            model.format_version_ = manifest["format_version"]
            model.validation_quantiles_ = [float(q) for q in manifest.get("validation_quantiles", [])]
            model.typical_surprises_ = typical_from_json(manifest.get("typical_surprises"), model.columns_)
            model.reference_ = dict(manifest.get("reference", {}))
            anomaly = manifest.get("anomaly")
            model.anomaly_ = None if anomaly is None else AnomalyReference.from_json(anomaly, model.preprocessor_.columns)
        except BundleError as error:
            raise BundleError(f"{path}: {error}") from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise BundleError(f"{path}: the manifest is malformed ({type(error).__name__}: {error})") from None
        if model.preprocessor_.width != model.config_.features:
            raise BundleError(f"{path}: the manifest's columns make {model.preprocessor_.width} features for a flow of {model.config_.features}")
        model.weights_, model.ranking_weights_ = without_ranking(weights)
        model.config_.check_weights(model.weights_, path)
        check_held(model.preprocessor_, model.config_, path)
        if model.ranking_weights_ is not None:
            model.config_.check_weights(model.ranking_weights_, path)
        model._flow = NumpyRealNVP(model.config_, model.weights_, front=model.preprocessor_.front)
        model._set_ranking_flow()
        return model

    def describe(self) -> dict:
        """Everything `inspect` reports, as one JSON-able dict."""
        manifest = self._manifest()
        manifest["architecture"]["parameters"] = self.config_.parameter_count()
        if self._flow.inverse_df is not None:
            manifest["architecture"]["degrees_of_freedom"] = (1 / self._flow.inverse_df).tolist()
        return {"format_version": self.format_version_, **manifest}

    def _manifest(self) -> dict:
        self._require_fitted()
        return {
            "created": self.created_,
            "versions": self.versions_,
            "columns": self.preprocessor_.to_json(),
            "left_out": self.left_out_,
            "architecture": self.config_.to_json(),
            "hyperparameters": self.get_params(),
            "training": self.training_,
            "validation_quantiles": self.validation_quantiles_,
            **({"typical_surprises": self.typical_surprises_} if self.typical_surprises_ is not None else {}),
            "reference": self.reference_,
            **({"anomaly": self.anomaly_.to_json()} if self.anomaly_ is not None else {}),
            "data": self.data_,
        }

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_flow")  # set by fit and by load
