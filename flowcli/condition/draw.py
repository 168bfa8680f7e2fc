"""Conditional rows and conditional log-likelihoods, from weighted candidates (`importance`).

Every row gets CANDIDATES candidates of its own; a row whose candidates' effective sample
size falls under MIN_EFFECTIVE draws RETRY_FACTOR times as many afresh, once. So no two output
rows share a candidate, and the cost follows the difficulty of the condition, not its rarity:
nothing is rejected for missing the condition. `Effort` keeps the figures to report.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from flowcli.condition.conditions import Condition
from flowcli.condition.importance import Conditioner, Weighted
from flowcli.errors import DataError, FlowcliWarning
from flowcli.table.values import missing_mask

PILOT, ADAPTATIONS = 8, 3  # candidates per row that place the proposal, and how many times
CANDIDATES = 32  # per output row, or per scored row
MIN_EFFECTIVE = 8.0  # rows below this effective sample size draw again
RETRY_FACTOR = 8
BATCH_ROWS = 4_096  # rows whose candidates are held at once


@dataclass
class Effort:
    """What conditioning cost and how exact it is: per row, its candidates and effective sample size."""

    candidates: list[int] = field(default_factory=list)
    effective: list[float] = field(default_factory=list)
    pilot: int = 0  # candidates drawn to place the proposal
    drawn: int = 0  # rows the model drew, for conditions met by keeping those that meet them
    accepted: int = 0
    held_drawn: int = 0  # draws of the declared columns' latent coordinates, for conditions on them (`declared`)
    held_met: int = 0
    warned: bool = False  # the warning on rows that rest on few candidates is given once

    def rejection(self, drawn: int, accepted: int) -> None:
        self.drawn += drawn
        self.accepted += accepted

    def declared(self, drawn: int, met: int) -> None:
        self.held_drawn += drawn
        self.held_met += met

    def add(self, weighted: Weighted) -> None:
        self.candidates += [weighted.log_w.shape[1]] * len(weighted.log_w)
        self.effective += weighted.effective_size().tolist()

    def to_json(self) -> dict:
        exact = {"exact": {"drawn": self.drawn, "met_condition": self.accepted}} if self.drawn else {}
        if self.held_drawn:
            exact["declared"] = {"drawn": self.held_drawn, "met_condition": self.held_met}
        if not self.effective:
            return {"rows": 0, **exact}
        effective = np.asarray(self.effective)
        return {**exact, "rows": len(effective), "candidates": int(np.sum(self.candidates)) + self.pilot,
                "effective_sample_size": {"median": float(np.median(effective)), "min": float(effective.min()),
                                          "p5": float(np.percentile(effective, 5))}}

    def describe(self) -> str:
        figures = self.to_json()
        parts = []
        if self.drawn:
            parts.append(f"exact draws: {self.accepted:,} of {self.drawn:,} rows the model sampled met the conditions "
                         f"({self.accepted / self.drawn:.2%})")
        if self.held_drawn:
            parts.append(f"exact draws on the declared columns: {self.held_met:,} of {self.held_drawn:,} draws of their "
                         f"levels met the conditions ({self.held_met / self.held_drawn:.2%}), one flow pass per row")
        exact = "; ".join(parts)
        if not figures["rows"]:
            return exact or "no conditional rows"
        size = figures["effective_sample_size"]
        return (f"{exact}; " if exact else "") + (f"{figures['rows']:,} conditional rows from {figures['candidates']:,} weighted candidates; "
                f"effective sample size per row: median {size['median']:.1f}, 5th percentile {size['p5']:.1f}, "
                f"lowest {size['min']:.1f} (of {CANDIDATES} to {CANDIDATES * RETRY_FACTOR})")


def weighted(conditioner: Conditioner, given: pa.Table | None, conditions: list[Condition], rows: int,
             rng: np.random.Generator, effort: Effort) -> list[tuple[np.ndarray, Weighted]]:
    """Candidates for `rows` rows, as parts (the rows they are for, their candidates). PILOT
    candidates each, drawn ADAPTATIONS times, move the proposal from the flow's Gaussian to the
    rows' conditionals (`Weighted.adapted`), which then draws CANDIDATES each; rows with too few
    effective candidates are drawn again, RETRY_FACTOR times as many."""
    proposal = None
    for _ in range(ADAPTATIONS):
        pilot = conditioner.candidates(given, conditions, rows, PILOT, rng, proposal)
        effort.pilot += pilot.log_w.size
        proposal = pilot.adapted() or proposal
    first = conditioner.candidates(given, conditions, rows, CANDIDATES, rng, proposal)
    poor = np.flatnonzero(first.effective_size() < MIN_EFFECTIVE)
    kept = np.setdiff1d(np.arange(rows), poor)
    parts = [(kept, first.take(kept))]
    if len(poor):
        again = conditioner.candidates(given.take(poor) if given is not None else None, conditions, len(poor),
                                       CANDIDATES * RETRY_FACTOR, rng, proposal)
        parts.append((poor, again))
        thin = int(np.count_nonzero(again.effective_size() < MIN_EFFECTIVE))
        if thin and not effort.warned:
            effort.warned = True
            warnings.warn(f"{thin:,} conditional row(s) rest on fewer than {MIN_EFFECTIVE:g} effective candidates "
                          f"of {CANDIDATES * RETRY_FACTOR}: their draws and scores are rough (sample --verbose reports them)", FlowcliWarning, 2)
    for _, part in parts:
        effort.add(part)
    return parts


def _picked(parts: list[tuple[np.ndarray, Weighted]], rows: int, rng: np.random.Generator) -> np.ndarray:
    """One candidate per row (rows, W), each drawn in proportion to its weight."""
    u = np.empty((rows, parts[0][1].u.shape[2]))
    for index, part in parts:
        if not part.effective_size().all():
            raise DataError(f"the model gives the conditions no probability: no candidate of {part.log_w.shape[1]} "
                            "meets them (a range between two points of a column's grid?)")
        u[index] = part.pick(rng)
    return u


def sample_rows(conditioner: Conditioner, given: pa.Table | None, conditions: list[Condition], n: int,
                rng: np.random.Generator, effort: Effort, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """`n` rows from p(free columns | conditions), in batches. `given` holds one row of values
    every output row keeps, or one row per output row (n of them); its missing cells leave
    their column free in that row."""
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        rows = given.slice(start, stop - start) if given is not None and given.num_rows == n else given
        yield from _rows(conditioner, rows, conditions, stop - start, rng, effort)


def _rows(conditioner, given, conditions, count, rng, effort) -> Iterator[pa.RecordBatch]:
    """One batch: rows with the same missing cells in `given` are drawn together."""
    if given is None or given.num_columns == 0:
        yield _decoded(conditioner, None, _picked(weighted(conditioner, None, conditions, count, rng, effort), count, rng), rng)
        return
    if given.num_rows == 1:
        given = given.take(np.zeros(count, np.int64))
    batches, order = [], []
    for rows, pattern in _patterns(given):
        subset = given.take(rows).select([name for name, kept in zip(given.schema.names, pattern) if kept])
        parts = weighted(conditioner, subset, conditions, len(rows), rng, effort)
        batches.append(_decoded(conditioner, subset, _picked(parts, len(rows), rng), rng))
        order.append(rows)
    table = pa.Table.from_batches(batches).take(np.argsort(np.concatenate(order), kind="stable"))
    yield from table.combine_chunks().to_batches()


def _decoded(conditioner: Conditioner, given: pa.Table | None, u: np.ndarray, rng: np.random.Generator) -> pa.RecordBatch:
    """Features (N, W) as rows, with the given columns holding exactly the given values."""
    batch = conditioner.preprocessor.decode(u, rng)
    if given is None:
        return batch
    arrays = []
    for name in batch.schema.names:
        if name not in given.schema.names:
            arrays.append(batch.column(name))
            continue
        try:
            arrays.append(given.column(name).combine_chunks().cast(batch.schema.field(name).type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"given: column {name!r} holds {batch.schema.field(name).type} values; "
                            f"{given.column(name)[0].as_py()!r} is not one") from None
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def log_marginal(conditioner: Conditioner, given: pa.Table, rng: np.random.Generator, effort: Effort) -> np.ndarray:
    """log p(given columns) per row of `given` (N,), in their units, by importance sampling over
    the other columns; rows with the same missing cells are estimated together (a missing value
    is a value here), so that one proposal serves rows alike."""
    estimate = np.empty(given.num_rows)
    for start in range(0, given.num_rows, BATCH_ROWS):
        batch = given.slice(start, BATCH_ROWS)
        for rows, _ in _patterns(batch):
            for index, part in weighted(conditioner, batch.take(rows), [], len(rows), rng, effort):
                estimate[start + rows[index]] = part.log_mean()
    return estimate


def _patterns(given: pa.Table) -> list[tuple[np.ndarray, np.ndarray]]:
    """The rows (indices) of each pattern of missing cells in `given`, with the pattern (which
    columns are present)."""
    present = np.column_stack([~missing_mask(given.column(name)) for name in given.schema.names])
    patterns, group = np.unique(present, axis=0, return_inverse=True)
    group = group.reshape(-1)
    return [(np.flatnonzero(group == k), pattern) for k, pattern in enumerate(patterns)]
