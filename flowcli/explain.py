"""Why a row is unlikely: the column whose value the rest of the row makes most surprising,
measured in nats that do not depend on any column's units or kind.

The surprise of column j in a row is −log p(x_j | the rest) = log p(the rest) − log p(row): what
the row's log-likelihood gains when x_j is left blank (integrated out). It is in column j's own
units (a density per millimetre, a probability for a category), so the surprises of two columns
cannot be compared as they are: the same column in millimetres would be named about 6.9 nats more
readily than in metres. Subtracting the column's typical surprise, its median over validation
rows at fit, removes the units (rescaling a column shifts both by the same log) and the kind.
What is left, the excess surprise, says how many nats more surprising the value is, given the
rest of the row, than the column's values usually are; the explanation names the largest.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from flowcli.errors import FlowcliWarning

TYPICAL_ROWS = 2_000  # validation rows the typical surprises are the medians of


def surprises(score: Callable[[pa.Table], np.ndarray], table: pa.Table, columns: list[str], base: np.ndarray) -> np.ndarray:
    """−log p(x_j | the rest) per column and row (C, N), given the rows' log-likelihoods `base`
    (N,) and `score`, which scores a table; one scoring pass per column. A value the model never
    saw is +inf; a missing value, or one whose blanking cannot help (another column's value was
    never seen), is −inf: there is nothing to explain there."""
    out = np.empty((len(columns), table.num_rows))
    for j, name in enumerate(columns):
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        blank = table.set_column(index, field, pa.nulls(table.num_rows, field.type))
        with warnings.catch_warnings():  # unseen values were reported by the pass that scored `base`
            warnings.simplefilter("ignore", FlowcliWarning)
            with np.errstate(invalid="ignore"):  # −inf − −inf where even blanking does not help
                gain = score(blank) - base
        out[j] = np.where(np.isnan(gain) | np.asarray(table.column(index).is_null()), -np.inf, gain)
    return out


def typical_surprises(score: Callable[[pa.Table], np.ndarray], table: pa.Table, columns: list[str]) -> dict[str, float]:
    """Each column's median surprise over (up to TYPICAL_ROWS of) the validation rows in `table`."""
    table = table.slice(0, TYPICAL_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowcliWarning)
        each = surprises(score, table, columns, score(table))
    typical = {}
    for name, row in zip(columns, each):
        finite = row[np.isfinite(row)]
        typical[name] = float(np.median(finite)) if len(finite) else 0.0
    return typical


def explanations(each: np.ndarray, columns: list[str], typical: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The column of largest excess surprise per row (N,), and that excess in nats (N,). Without
    `typical` (bundles before format 7) the surprises are compared as they are, in their units."""
    excess = each - np.array([[typical[name]] for name in columns]) if typical else each
    best = np.argmax(excess, axis=0)
    return np.asarray(columns, dtype=object)[best], excess[best, np.arange(excess.shape[1])]


def typical_from_json(data: object, columns: list[str]) -> dict[str, float] | None:
    """A manifest's typical surprises (format 7), checked: a finite number for each of `columns`
    (extra names are ignored); None for bundles before them."""
    if data is None:
        return None
    typical = {str(name): float(value) for name, value in dict(data).items()}
    if not set(columns) <= set(typical) or not all(map(math.isfinite, typical.values())):
        raise ValueError("typical_surprises must hold a finite number for every column")
    return {name: typical[name] for name in columns}
