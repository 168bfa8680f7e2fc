"""The conditional half of `TabularFlow`: sample or score some columns given the others.

A mixin over the fitted model's flow (`_flow`), encoders (`preprocessor_`), the columns left
out at fit (`left_out_`) and its draws of flow features (`_draw_features`); `model` keeps the
joint half.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from flowcli.condition import declared
from flowcli.condition.conditions import admitted, fixed_values, given_columns, given_rows, resolve
from flowcli.condition.draw import BATCH_ROWS, Effort, log_marginal, sample_rows
from flowcli.condition.importance import Conditioner
from flowcli.errors import DataError
from flowcli.table.inputs import as_table

REJECTION_TRIAL = 20_000  # rows drawn at most to measure how often the model meets a condition
FIRST_TRIAL = 1_000  # rows drawn at least in the first round of that
# Below this share, importance resampling (unless the trial holds the rows): rejection would draw 500+ rows per row.
MIN_ACCEPTANCE = 0.002
MAX_DRAW = 2_000_000  # rows drawn at once for rejection
DECODE_ROWS = 65_536  # of those, rows whose features are held at once (as model.SAMPLE_BATCH_ROWS)


class Conditionals:
    """Conditional sampling and scoring for a fitted `TabularFlow`."""

    def sample_given(self, given: Iterable[Any], seed: int | None = None, *, source: str = "given") -> Iterator[pa.RecordBatch]:
        """One row for each row of each table in `given` (say, the batches of a `--given-file`),
        in order: a row keeps its given values and draws its other columns, and its blank given
        cells, from the model's conditional. `effort_` gathers the effective sample sizes. A table
        of the columns the model was fitted to condition on is drawn exactly (`declared`)."""
        rng = self._rng(seed)
        for part in given:
            rows = given_rows(as_table(part), self.preprocessor_, source)
            if declared.covers_columns(self._flow.config.held, rows.schema.names, self.preprocessor_):
                yield declared.sample_given(self._flow, self.preprocessor_, rows, rng, self.effort_)
            else:
                yield from sample_rows(self._conditioner(), rows, [], rows.num_rows, rng, self.effort_)

    @property
    def effort_(self) -> Effort:
        """What conditional sampling and scoring have cost so far: candidates and effective sample sizes."""
        if getattr(self, "_effort", None) is None:
            self._effort = Effort()
        return self._effort

    def _conditional_batches(self, n: int, given: dict, rng: np.random.Generator) -> Iterator[pa.RecordBatch]:
        """`n` rows under the conditions of a `given` dict (`conditions.resolve`). Conditions on the
        columns the model was fitted to condition on are met in the latent (`declared`); others of
        positive probability (categories, ranges) are drawn exactly, by keeping the model's own
        rows that meet them, when the trial's draws (`_trial`) hold the n rows or the model meets
        them often enough; a value fixed on a continuous column, or a rarer condition, by
        importance resampling."""
        fixed, rest = fixed_values(resolve(given, self.preprocessor_, self.left_out_), self.preprocessor_)
        if n == 0:
            return
        if fixed is None and declared.covers(self._flow.config.held, rest, self.preprocessor_):
            yield from declared.sample_rows(self._flow, self.preprocessor_, rest, n, rng, self.effort_, BATCH_ROWS)
            return
        if fixed is None:
            trial, drawn = self._trial(rest, n, rng)
            rate = trial.num_rows / drawn
            if trial.num_rows >= n or rate >= MIN_ACCEPTANCE:
                self.effort_.rejection(drawn, trial.num_rows)
                yield from self._rejection_batches(rest, n, trial, rate, rng)
                return
        yield from sample_rows(self._conditioner(), fixed, rest, n, rng, self.effort_)

    def _trial(self, conditions: list, n: int, rng: np.random.Generator) -> tuple[pa.Table, int]:
        """The model's own rows that meet `conditions`, and how many rows were drawn for them: in
        rounds that double the rows drawn (the first max(2n, FIRST_TRIAL)), until n rows meet
        them or REJECTION_TRIAL rows are drawn. A few rows under a common condition cost a few
        draws, and a rare condition's rate is still measured on REJECTION_TRIAL rows."""
        parts, drawn, met = [], 0, 0
        rows = min(REJECTION_TRIAL, max(FIRST_TRIAL, 2 * n))
        while rows:
            parts.append(self._kept_rows(conditions, rows, rng))
            drawn, met = drawn + rows, met + parts[-1].num_rows
            rows = 0 if met >= n else min(REJECTION_TRIAL - drawn, drawn)
        return pa.concat_tables(parts), drawn

    def _kept_rows(self, conditions: list, rows: int, rng: np.random.Generator) -> pa.Table:
        """Those of `rows` rows the model samples that meet `conditions`, in the order drawn. Only
        the columns the conditions name are decoded before the rows are chosen, and the rest of
        the rows kept after: decoding every row drawn cost as much as drawing it."""
        preprocessor, spans, batches = self.preprocessor_, self.preprocessor_.spans, []
        for start in range(0, rows, DECODE_ROWS):
            u = self._draw_features(rng, min(DECODE_ROWS, rows - start))
            decoded = {k: preprocessor.columns[k].decode(u[:, spans[k]], rng) for k in {c.index for c in conditions}}
            keep = admitted(decoded, conditions, preprocessor, len(u))
            if keep.any():
                batches.append(preprocessor.decode(u[keep], rng, {k: values.filter(keep) for k, values in decoded.items()}))
        return pa.Table.from_batches(batches, schema=self.sample_schema)

    def _rejection_batches(self, conditions: list, n: int, kept: pa.Table, rate: float,
                           rng: np.random.Generator) -> Iterator[pa.RecordBatch]:
        """`n` rows meeting `conditions`: those already `kept`, then batches of draws sized by the
        acceptance `rate`, so that memory holds about BATCH_ROWS accepted rows at a time."""
        written = 0
        while written < n:
            if kept.num_rows == 0:
                rows = int(min(MAX_DRAW, max(REJECTION_TRIAL, 1.2 * min(n - written, BATCH_ROWS) / rate)))
                kept = self._kept_rows(conditions, rows, rng)
                self.effort_.rejection(rows, kept.num_rows)
            part = kept.slice(0, n - written)
            kept = kept.slice(part.num_rows)
            written += part.num_rows
            yield from part.to_batches()

    def conditional_scores(self, joint: np.ndarray, data: Any, given: Iterable[str], *, first_row: int = 0) -> np.ndarray:
        """log p(other columns | `given` columns) per row (N,), from the rows' joint log-likelihoods
        `joint` (N,): −inf where the given values themselves have probability zero (a category
        never seen at fit), as the joint is there."""
        given_part = self.given_log_likelihood(data, given, first_row=first_row)
        with np.errstate(invalid="ignore"):
            return np.where(np.isneginf(given_part), -np.inf, joint - given_part)

    def given_log_likelihood(self, data: Any, given: Iterable[str], *, first_row: int = 0) -> np.ndarray:
        """log p(the `given` columns' values) per row of `data` (N,), in their units, the other
        columns integrated out by importance sampling, seeded by `first_row` so that a batch
        scores alike however often it is scored; exactly, for columns the model was fitted to
        condition on (with their parents: `declared.closed`). The joint log-likelihood less this is the
        conditional one, `score_samples(data, given=given)`."""
        columns = given_columns(list(given), self.preprocessor_, self.left_out_)
        table, rng = as_table(data).select(columns), np.random.default_rng(first_row)
        if declared.closed(self._flow.config.held, columns, self.preprocessor_):
            return declared.log_likelihood(self.preprocessor_, table, rng, "data", first_row)
        return log_marginal(self._conditioner(), table, rng, self.effort_)

    def _rng(self, seed: int | None) -> np.random.Generator:
        self._require_fitted()
        if seed is not None and seed < 0:
            raise DataError(f"seed {seed} is negative; give a seed of 0 or more")
        return np.random.default_rng(seed)

    def _conditioner(self) -> Conditioner:
        """The proposal for conditionals, fitted to the flow once per model."""
        if getattr(self, "_conditioner_cache", None) is None:
            self._conditioner_cache = Conditioner(self._flow, self.preprocessor_)
        return self._conditioner_cache
