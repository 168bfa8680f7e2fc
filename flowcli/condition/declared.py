"""Columns a model is fitted to condition on (`TabularFlow(condition=...)`, `fit --condition`).

Their features are held (`FlowConfig.held`): every coupling reads them and none transforms or
mixes them, so each passes to the latent as it is. A category's feature is its level's slice of
a standard normal, moved to the slice given its parents' levels (`encode.links`), and held
columns take parents among themselves only; so under the flow's normal base the held latent
coordinates are the held features, and their levels follow the tree's shares exactly. A
condition on held columns alone is then met in the latent: draw their coordinates from the
base, keep those whose levels meet it (a lookup per draw, no flow), and map the kept ones
with fresh coordinates for the other features through the flow once. The rows follow the
model's conditional exactly, at the cost of unconditional rows. Every coupling reads the held
columns' levels as well, one-hot (`flow.level_inputs`, from `held_levels`), so that the rest
is learned given each level, a rare one included, from that level's own rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowcli.condition.conditions import Condition, admitted
from flowcli.encode.columns import CategoricalColumn
from flowcli.encode.dequantize import ndtri, normal_log_pdf
from flowcli.encode.links import LevelLinks
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import BundleError, DataError
from flowcli.flow import level_inputs
from flowcli.flow.config import FlowConfig
from flowcli.flow.level_inputs import HeldLevels
from flowcli.flow.numpy_flow import NumpyRealNVP
from flowcli.table.values import missing_mask

FIRST_DRAWS = 4_096  # held coordinates drawn in the first round, at least
MAX_DRAWS = 4_000_000  # drawn at once, at most (a few normals each)
MAX_ROUNDS = 64  # of MAX_DRAWS, before a condition is called one the model gives no probability


def declared_columns(names: Sequence[str], kinds: dict[str, str], left_out: dict[str, str], base: str) -> tuple[str, ...]:
    """The columns to fit a model conditioning on, checked against the columns it will model
    (`kinds`: name → kind): category or boolean columns, not all of them, on the normal base."""
    if isinstance(names, str):
        names = [names]
    if names and base != "normal":
        raise DataError(f"--condition needs the normal base, not --base {base}: another base would mix the columns "
                        "conditioned on with the others")
    for name in names:
        if name not in kinds:
            why = f"it is left out ({left_out[name]})" if name in left_out else f"the columns are {', '.join(map(repr, kinds))}"
            raise DataError(f"--condition: no column {name!r} to condition on; {why}")
        if kinds[name] not in ("categorical", "boolean"):
            raise DataError(f"--condition: column {name!r} is {kinds[name]}; a model conditions on category and boolean "
                            "columns (cut a number into bands first, or condition at sampling with --given)")
    names = tuple(dict.fromkeys(names))
    if names and len(names) == len(kinds):
        raise DataError("--condition names every column; leave at least one for the model to draw")
    return names


def check_held(preprocessor: Preprocessor, config: FlowConfig, source: object) -> None:
    """Raise a BundleError naming `source` unless the config's held features are category columns'
    whose parents are held too (only then do their own coordinates tell their levels), and its
    held levels, where it has them, are those columns' slices, as decoding reads them."""
    held = config.held
    names = held_names(preprocessor, held)
    columns = {column.name: column for column in preprocessor.columns}
    if len(names) != len(held) or any(not isinstance(columns[name], CategoricalColumn) or
                                      not set(columns[name].parents) <= set(names) for name in names):
        raise BundleError(f"{source}: the architecture holds features {list(held)}, which are not category columns "
                          "linked among themselves only")
    if config.held_levels and config.held_levels != held_levels(preprocessor, held):
        raise BundleError(f"{source}: the architecture's held levels are not the slices of the held columns")


def held_levels(preprocessor: Preprocessor, held: Sequence[int]) -> tuple[HeldLevels, ...]:
    """The level slices of the columns whose features are `held`, as the flow reads them
    (`FlowConfig.held_levels`): each one's cumulative shares, given each combination of its
    parents' levels when it is linked."""
    position = {feature: j for j, feature in enumerate(held)}
    links = LevelLinks.of(preprocessor.columns)
    linked = {link.child: link for link in links.links} if links is not None else {}
    levels = []
    for column, span in zip(preprocessor.columns, preprocessor.spans):
        if span.start in position:
            link = linked.get(span.start)
            rows = [column.probabilities] if link is None else link.given_parent
            levels.append(HeldLevels(tuple(position[parent] for parent in link.parents) if link else (),
                                     tuple(tuple(np.cumsum(row)[:-1].tolist()) for row in rows)))
    return tuple(levels)


def held_features(preprocessor: Preprocessor, names: Sequence[str]) -> tuple[int, ...]:
    """The features (ascending) of the columns `names`."""
    return tuple(sorted(span.start for column, span in zip(preprocessor.columns, preprocessor.spans) if column.name in names))


def held_names(preprocessor: Preprocessor, held: Sequence[int]) -> list[str]:
    """The columns whose features are `held`, in the model's order."""
    return [column.name for column, span in zip(preprocessor.columns, preprocessor.spans) if span.start in held]


def covers_columns(held: Sequence[int], names: Sequence[str], preprocessor: Preprocessor) -> bool:
    """Whether the columns `names` (of a table of conditions) are all held."""
    return bool(held) and set(names) <= set(held_names(preprocessor, held))


def covers(held: Sequence[int], conditions: list[Condition], preprocessor: Preprocessor) -> bool:
    """Whether `conditions` (sets of categories and ranges) are all on held columns."""
    return bool(conditions) and covers_columns(held, [preprocessor.names[c.index] for c in conditions], preprocessor)


def closed(held: Sequence[int], names: Sequence[str], preprocessor: Preprocessor) -> bool:
    """Whether the columns `names` are all held, with their parents among them: then their own
    likelihood is a product of shares (`log_likelihood`), with nothing to integrate out."""
    columns = {column.name: column for column in preprocessor.columns}
    return set(names) <= set(held_names(preprocessor, held)) and all(set(columns[name].parents) <= set(names) for name in names)


def log_likelihood(preprocessor: Preprocessor, table: pa.Table, rng: np.random.Generator, source: str, first_row: int) -> np.ndarray:
    """log p(the values of `table`'s columns) per row (N,), exactly, for columns `closed` under
    their parents: each one's level share given its parents' levels. Computed as the joint
    likelihood computes it (encoded, moved to its slice given its parents, under the normal
    base), which the dequantization noise drawn here cancels out of."""
    spans, width = preprocessor.spans, preprocessor.width
    u, log_weight, features = np.zeros((table.num_rows, width)), np.zeros(table.num_rows), []
    for column, span in zip(preprocessor.columns, spans):
        if column.name in table.schema.names:
            u[:, span], weight = column.encode(table.column(column.name), rng.uniform(size=(table.num_rows, 1)), source, first_row)
            log_weight += weight
            features.append(span.start)
    links, log_det = _links(preprocessor, features), np.zeros(table.num_rows)
    if links is not None:
        u, log_det = links.forward(u)
    with np.errstate(invalid="ignore"):
        return log_weight + log_det + normal_log_pdf(u[:, features]).sum(axis=1)


def sample_rows(flow: NumpyRealNVP, preprocessor: Preprocessor, conditions: list[Condition], n: int,
                rng: np.random.Generator, effort, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """`n` rows from the model given `conditions` on held columns (`covers`), exactly, in batches."""
    held = list(flow.config.held)
    links, slices, written = _links(preprocessor, held), held_levels(preprocessor, held), 0
    while written < n:
        rows = min(batch_rows, n - written)
        g, decoded = _held_coordinates(preprocessor, links, slices, held, conditions, rows, rng, effort)
        z = flow.sample_latent(rng, rows)
        z[:, held] = g
        yield preprocessor.decode(flow.features(z), rng, decoded)
        written += rows


def sample_given(flow: NumpyRealNVP, preprocessor: Preprocessor, given: pa.Table, rng: np.random.Generator,
                 effort) -> pa.RecordBatch:
    """One row per row of `given`, whose columns are all held (a blank cell leaves its column
    free in that row), exactly: rows with the same levels are drawn together, and every row
    keeps its given values."""
    held, names = list(flow.config.held), given.schema.names
    links, slices = _links(preprocessor, held), held_levels(preprocessor, held)
    index = [preprocessor.names.index(name) for name in names]
    present = [~missing_mask(given.column(name)) for name in names]
    codes = np.column_stack([np.where(mask, preprocessor.columns[k].level_index(given.column(name), "given"), -1)
                             for name, k, mask in zip(names, index, present)])
    keys, group = np.unique(codes, axis=0, return_inverse=True)
    z = flow.sample_latent(rng, given.num_rows)  # a row with every cell blank keeps its base draw
    for j, key in enumerate(keys):
        conditions = [Condition(index=k, levels=[int(level)]) for k, level in zip(index, key) if level >= 0]
        if conditions:
            rows = np.flatnonzero(group.reshape(-1) == j)
            z[np.ix_(rows, held)] = _held_coordinates(preprocessor, links, slices, held, conditions, len(rows), rng, effort)[0]
    batch = preprocessor.decode(flow.features(z), rng)
    arrays = [batch.column(name) for name in batch.schema.names]
    for name, k, mask in zip(names, index, present):  # the given values themselves (a rare one in "other", say)
        arrays[k] = pc.if_else(pa.array(mask), given.column(name).combine_chunks().cast(arrays[k].type), arrays[k])
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _held_coordinates(preprocessor, links, slices, held, conditions, rows, rng, effort) -> tuple[np.ndarray, dict]:
    """Held latent coordinates (rows, H) drawn from the base given `conditions`, and the condition
    columns' values decoded from them. Draws are screened in probability, Φ of the coordinates,
    where each held column's level is a lookup in its `slices` (`held_levels`); the few that pass
    become coordinates in float32, as the flow holds them, and are decoded as sampling decodes
    them, to keep those whose values meet the conditions."""
    spans, width = preprocessor.spans, preprocessor.width
    indices = sorted({c.index for c in conditions})
    kept, values, met, drawn = [], {k: [] for k in indices}, 0, 0
    while met < rows:
        if drawn >= MAX_ROUNDS * MAX_DRAWS:
            raise DataError(f"the model gives the conditions almost no probability: {met:,} of {drawn:,} draws of the "
                            "declared columns' levels met them")
        count = int(min(MAX_DRAWS, max(FIRST_DRAWS, 2 * rows) if not drawn else 1.2 * (rows - met) * drawn / max(met, 1)))
        p = rng.uniform(size=(count, len(held)))
        levels = level_inputs.levels(slices, p)
        screened = np.ones(count, bool)
        for condition in conditions:
            screened &= np.isin(levels[:, held.index(spans[condition.index].start)], condition.levels)
        g = ndtri(p[screened]).astype(np.float32).astype(np.float64)
        u = np.zeros((len(g), width))
        u[:, held] = g
        if links is not None:
            u = links.inverse(u)
        decoded = {k: preprocessor.columns[k].decode(u[:, spans[k]], rng) for k in indices}
        keep = admitted(decoded, conditions, preprocessor, len(g))
        kept.append(g[keep])
        for k in indices:
            values[k].append(decoded[k].filter(keep))
        met, drawn = met + int(keep.sum()), drawn + count
    effort.declared(drawn, met)
    return np.concatenate(kept)[:rows], {k: pa.concat_arrays(values[k]).slice(0, rows) for k in indices}


def _links(preprocessor: Preprocessor, features: Sequence[int]) -> LevelLinks | None:
    """The link step of the columns whose features are `features` (their parents among them), or None."""
    links = LevelLinks.of(preprocessor.columns)
    kept = [link for link in links.links if link.child in features] if links is not None else []
    return LevelLinks(kept) if kept else None
