"""The encoder of a continuous, integer or datetime column (see `columns` for how encoders work)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from flowcli.encode.atoms import Atoms
from flowcli.encode.dequantize import Levels, integrated_out
from flowcli.encode.maps import (
    decimal_places,
    forward_transform,
    grid_step,
    inverse_transform,
    likeliest_transform,
    nearest_within,
    repeated_cells,
)
from flowcli.errors import DataError
from flowcli.table.values import (
    arrow_type,
    datetime_text_type,
    datetime_ticks,
    datetime_unit,
    numeric_values,
    ticks_per_day,
    to_arrow,
    type_name,
)

COARSE_GRID = 0.1  # a rounded grid's step, as a share of the values' standard deviation, past which it is scored over its cells
MIN_DATETIME_GRID = 1 / 86_400  # days: times on a coarser grid than a second are dequantized over it
NEAR_EDGE = 0.1  # sampled values up to this share of a column's span past its range are clipped; farther ones drawn again
MAX_SEEN, MIN_REPEATS = 1_000, 10  # a continuous column of at most so many values, each seen this often on average, samples only them
_MIN_STD = 1e-300  # a narrower spread is treated as this one, so 1 / std stays finite
_FLOAT_MAX = np.finfo(np.float64).max


@dataclass(frozen=True)
class NumericColumn:
    """A continuous, integer or datetime column: an optional log or logit, its atoms widened
    (`flowcli.encode.atoms`), then standardization.

    Values on a grid are dequantized over their cell: integers over [x, x + 1), datetimes over
    [x, x + step) (dates: the day), continuous values rounded to a step over [x − step/2,
    x + step/2). Datetimes count days from the earliest at fit, so their densities are per day.
    A column fitted by this version (`extrapolates`) maps every finite value to a finite score:
    its log or logit continues linearly past the range seen at fit. Samples stay within
    [low, high], the range seen at fit, and on the grid.
    """

    name: str
    kind: str  # "continuous", "integer" or "datetime"
    dtype: str  # the arrow type at fit, for the output
    mean: float
    std: float
    transform: str = "identity"  # "identity", "log" or "logit"
    low: float = -math.inf
    high: float = math.inf
    missing_rate: float | None = None  # the indicator's P(missing); None: no indicator
    grid: float = 0.0  # the width of a value's cell, in the column's units (days for datetimes); 0: none
    origin: int = 0  # datetimes: the earliest tick at fit; days count from it, exactly
    span: int = 0  # datetimes: ticks from the earliest to the latest at fit
    decimals: int | None = None  # continuous: samples are rounded as the values at fit were
    step: int = 0  # datetimes: the ticks between any two at fit are a multiple of it; samples keep to it
    seen: tuple[float, ...] | None = None  # continuous: its few values at fit, each repeated; samples take the nearest
    rounded: bool = False  # the cell is centred on the value (a continuous grid), not starting at it
    coarse: bool = False  # a rounded grid wider than COARSE_GRID of the values' spread: scored over its cells
    extrapolates: bool = False  # maps continue linearly past the fit range (format 7); before, −inf there
    atoms: Atoms | None = None  # cells far denser than their surroundings, widened after the map (format 10)
    parent: str | None = None  # the category column its feature is standardized at (see `encode.scales`; format 13)
    given_parent: list[list[float]] | None = None  # (parent's levels, 2): the feature's mean and std at each

    @property
    def parents(self) -> tuple[str, ...]:
        """The column its feature is standardized at, if any (see `encode.scales`)."""
        return () if self.parent is None else (self.parent,)

    @property
    def discrete(self) -> bool:
        """Whether scoring averages a value's density over its cell with noise points: integers,
        datetimes on a grid, and coarse rounded grids, where a flow fitted to the dequantized
        values still bends within a cell. A fine rounded grid is scored at its values."""
        return self.grid > 0 and (not self.rounded or self.coarse)

    @property
    def knees(self) -> tuple[float, float]:
        """Where the log or logit turns into its tangent line: the centres of the lowest and the
        highest cells seen at fit (a log has no upper knee); none for bundles before format 7."""
        if not self.extrapolates or self.transform == "identity":
            return (-math.inf, math.inf)
        centre = 0.0 if self.rounded else self.grid / 2
        return (self.low + centre, math.inf if self.transform == "log" else self.high + centre)

    @property
    def width(self) -> int:
        return 1 if self.missing_rate is None else 2

    @property
    def indicator(self) -> Levels | None:
        """The missingness indicator's levels (present, missing), the second feature; None without one."""
        return None if self.missing_rate is None else Levels(np.array([1 - self.missing_rate, self.missing_rate]))

    @property
    def output_type(self) -> pa.DataType:
        """The type of sampled values: the type at fit where it can hold them."""
        target = arrow_type(self.dtype)
        if self.kind == "datetime":
            return target if pa.types.is_timestamp(target) or pa.types.is_date(target) else pa.timestamp("us")
        if self.kind == "integer":
            return target if pa.types.is_integer(target) else pa.int64()
        return target if pa.types.is_floating(target) else pa.float64()

    @classmethod
    def fit(cls, values: pa.ChunkedArray, name: str, kind: str, source: str) -> NumericColumn:
        origin = span = step = 0
        if kind == "datetime":
            ticks, absent = datetime_ticks(values, None, name=name, source=source)
            present = ticks[~absent]
            if len(present):
                origin, span = int(present.min()), int(present.max() - present.min())
                step = int(np.gcd.reduce(present - origin))  # hourly readings: an hour; irregular times: one tick
        x = numeric_values(values, kind, name=name, source=source, origin=origin)
        missing = np.isnan(x)
        observed = x[~missing]
        if not len(observed):
            raise DataError(f"{source}: column {name!r} is entirely missing; leave it out with --ignore {name}")
        low, high = float(observed.min()), float(observed.max())
        decimals = decimal_places(observed) if kind == "continuous" else None
        distinct = np.unique(observed) if kind == "continuous" else observed[:0]
        few_repeated = _few_repeated(distinct, observed)
        rounded = coarse = False
        if kind == "integer":
            grid = 1.0
        elif kind == "datetime":  # a Parquet date, a timestamp at midnights and ISO dates: all a day
            grid = step / ticks_per_day(datetime_unit(values)) if step else 0.0
            grid = grid if grid >= MIN_DATETIME_GRID else 0.0
        else:  # a grid of decimals, else cells for few repeated values (standardized counts, cardio's x6)
            found = grid_step(observed, decimals) or (repeated_cells(distinct) if few_repeated else None)
            grid, rounded = (found, True) if found else (0.0, False)
            coarse = bool(found and found > COARSE_GRID * np.std(observed))
        # The maps a column's support allows (datetimes are days from the earliest: a position, not
        # a magnitude to log), the likeliest chosen at the centres of the values' cells.
        centres = observed + (0.0 if rounded or not grid else grid / 2)
        allowed = ("identity",) + (("log",) if kind == "integer" and low >= 0 or kind == "continuous" and low > 0 else ()) \
            + (("logit",) if kind == "continuous" and low >= 0 and high <= 1 else ())
        transform = likeliest_transform(centres, allowed)
        missing_rate = float(missing.mean()) if missing.any() else None
        text_dates = kind == "datetime" and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type))
        dtype = str(datetime_text_type(values) or pa.timestamp("us")) if text_dates else type_name(values)
        # Few values, each seen many times: a measuring grid (wind in knots shown in mph, degrees
        # in tens), which decimals alone do not keep and which a classifier spots at once.
        seen = tuple(distinct.tolist()) if few_repeated else None
        column = cls(name, kind, dtype, 0.0, 1.0, transform, low, high, missing_rate, grid, origin, span, decimals, step, seen,
                     rounded, coarse, extrapolates=True)  # standardized below
        if grid:
            column = replace(column, atoms=Atoms.fit(*(column.mapped(v)[0] for v in (centres, centres - grid / 2, centres + grid / 2))))
            observed = centres
        t = column.mapped(observed)[0]
        scale = float(np.max(np.abs(t))) or 1.0  # divide first, so that squares of 1e200 do not overflow
        mean, spread = float(np.mean(t / scale) * scale), float(np.std(t / scale) * scale)
        std = max(spread, _MIN_STD) if spread > 0 else 1.0  # a constant (forced continuous) keeps scale 1
        return replace(column, mean=mean, std=std)

    def mapped(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values v (N,) in the column's units mapped as the flow sees them before standardization,
        and the map's log-slope (N,): the log or logit with its linear tails, then the atoms."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t, log_slope = forward_transform(self.transform, v, self.knees)
        if self.atoms is None:
            return t, log_slope
        s, log_stretch = self.atoms.forward(t)
        return s, log_slope + log_stretch

    def numbers(self, values: pa.ChunkedArray | pa.Array, source: str, first_row: int = 0) -> np.ndarray:
        """The column's values as float64 (N,) in its units (datetimes: days from `origin`),
        NaN where missing; `source` and `first_row` name the input in errors."""
        return numeric_values(values, self.kind, name=self.name, source=source, first_row=first_row,
                              origin=self.origin, output_type=self.output_type)

    def encode(self, values: pa.ChunkedArray | pa.Array, noise: np.ndarray, source: str, first_row: int):
        x = self.numbers(values, source, first_row)
        missing = np.isnan(x)
        w = noise[:, 0]
        v = np.where(missing, 0.5, x + self.grid * (w - 0.5 * self.rounded))  # a point of the value's cell
        t, log_jacobian = self.mapped(v)
        outside = ~np.isfinite(t) & ~missing  # outside the support seen at fit: density zero
        u = np.where(outside, 0.0, t / self.std - self.mean / self.std)  # divided first: no overflow near ±1.8e308
        log_weight = np.where(outside, -np.inf, log_jacobian - math.log(self.std))
        if missing.any():
            u[missing], log_weight[missing] = integrated_out(w[missing])
        if self.missing_rate is None:
            return u[:, None], log_weight
        g, indicator_weight = self.indicator.encode(
            missing.astype(np.int64), noise[:, 1]
        )
        return np.column_stack([u, g]), log_weight + indicator_weight

    def unseen(self, values: pa.ChunkedArray | pa.Array, source: str) -> int:
        """How many values lie outside the range seen at fit (counted by columns from format 7,
        which score them past its edges; before, such values scored −inf uncounted, as ever)."""
        if not self.extrapolates:
            return 0
        x = self.numbers(values, source)
        with np.errstate(invalid="ignore"):
            return int(np.count_nonzero((x < self.low) | (x > self.high)))

    def near_range(self, u: np.ndarray) -> np.ndarray:
        """Per row of the column's features u (N, width): whether it decodes within [low, high]
        widened by NEAR_EDGE of its span on each side, where decoding clips it onto the edge.

        Past that, a draw is the base's far tail rather than an edge value's own spread. On a
        column of 20 values, each a share of 0.05, the edge values got 0.036 when all draws were
        clipped, 0.025 when all past the range were drawn again, and 0.035 with this margin. A
        missing value, and any value of a one-valued range, count as near."""
        if self.low == self.high:
            return np.ones(len(u), dtype=bool)
        slack = NEAR_EDGE * (self.high - self.low)
        x = self._values(u)
        inside = (x >= self.low - slack) & (x <= self.high + slack)
        missing = self._missing(u)
        return inside if missing is None else inside | missing

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """Values x (N,) in the column's units (days from `origin` for datetimes) on the scale the
        flow sees them, without dequantization noise: the map, then standardization. NaN stays
        NaN, and so does a value outside the support of a bundle before format 7."""
        with np.errstate(invalid="ignore"):
            t = self.mapped(x)[0] / self.std - self.mean / self.std
        return np.where(np.isfinite(t), t, np.nan)

    def _values(self, u: np.ndarray) -> np.ndarray:
        """The values (N,) from the value feature u[:, 0], floored or rounded as at fit, not yet
        kept to the range seen at fit."""
        with np.errstate(over="ignore"):
            t = np.nan_to_num(u[:, 0] * self.std + self.mean, posinf=_FLOAT_MAX, neginf=-_FLOAT_MAX)
        x = inverse_transform(self.transform, t if self.atoms is None else self.atoms.inverse(t), self.knees)
        if self.grid and not self.rounded:  # the cell's start
            x = np.floor(x / self.grid) * self.grid if self.grid != 1 else np.floor(x)
        elif self.grid:  # the nearest point of the grid
            x = self.low + np.round((x - self.low) / self.grid) * self.grid
        if self.decimals is not None:
            x = np.round(x, self.decimals) + 0.0  # + 0.0: a value rounded from below zero to zero writes as 0, not -0
            if self.transform == "log":  # rounding must not reach zero: keep to the grid's first step
                x = np.maximum(x, 10.0 ** -self.decimals)
        return x

    def _missing(self, u: np.ndarray) -> np.ndarray | None:
        """Per row (N,), whether the value is missing; None without a missingness indicator."""
        if self.missing_rate is None:
            return None
        return self.indicator.decode(u[:, 1]) == 1

    def decode(self, u: np.ndarray, rng: np.random.Generator) -> pa.Array:
        # A latent draw deep in the base's tail can map far past anything seen (1e300 through a
        # log); samples stay within the range seen at fit, as SDV's synthesizers keep them.
        x = np.clip(self._values(u), self.low, self.high)
        if self.seen is not None:
            x = nearest_within(np.asarray(self.seen), x)
        missing = self._missing(u)
        if self.kind == "datetime":
            offsets = np.round(x * ticks_per_day(self.output_type))
            if self.step > 1:
                offsets = np.round(offsets / self.step) * self.step
            offsets = np.clip(offsets, 0, self.span).astype(np.int64)
            return pa.array(self.origin + offsets, mask=missing).cast(pa.int32() if pa.types.is_date(self.output_type) else pa.int64()).cast(self.output_type)
        return to_arrow(x, self.output_type, missing)

    def to_json(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "dtype": self.dtype, "mean": self.mean, "std": self.std,
            "transform": self.transform, "low": _json_float(self.low), "high": _json_float(self.high),
            "missing_rate": self.missing_rate, "grid": self.grid, "rounded": self.rounded, "coarse": self.coarse,
            "extrapolates": self.extrapolates,
            "origin": self.origin, "span": self.span,
            "decimals": self.decimals, "step": self.step, "seen": None if self.seen is None else list(self.seen),
            "atoms": None if self.atoms is None else self.atoms.to_json(),
            **({} if self.parent is None else {"parent": self.parent, "given_parent": self.given_parent}),
        }

    @classmethod
    def from_json(cls, data: dict) -> NumericColumn:
        column = cls(
            str(data["name"]), str(data["kind"]), str(data["dtype"]), float(data["mean"]), float(data["std"]),
            str(data.get("transform", "identity")), float(data.get("low", -math.inf)),
            float(data.get("high", math.inf)), _optional_rate(data.get("missing_rate")),
            float(data["grid"]) if "grid" in data else float(bool(data.get("discrete", False))),  # format 7 / before
            int(data.get("origin", 0)), int(data.get("span", 0)),
            None if data.get("decimals") is None else int(data["decimals"]), int(data.get("step", 0)),
            None if data.get("seen") is None else tuple(float(value) for value in data["seen"]),
            bool(data.get("rounded", False)), bool(data.get("coarse", False)), bool(data.get("extrapolates", False)),
            None if data.get("atoms") is None else Atoms.from_json(data["atoms"], str(data["name"])),
            data.get("parent"), _moment_rows(data["given_parent"]) if "given_parent" in data else None,
        )
        if not (math.isfinite(column.grid) and column.grid >= 0):
            raise ValueError(f"column {column.name!r} has an invalid grid {column.grid}")
        column.output_type  # a dtype that names no arrow type is an error here, not at scoring time
        if column.seen is not None and not (0 < len(column.seen) <= MAX_SEEN and np.all(np.isfinite(column.seen))
                                            and np.all(np.diff(column.seen) > 0)):
            raise ValueError(f"column {column.name!r} has an invalid set of values seen at fit")
        if column.transform not in ("identity", "log", "logit") or not (math.isfinite(column.mean) and _MIN_STD <= column.std < math.inf):
            raise ValueError(f"column {column.name!r} has an invalid standardization ({column.transform}, mean {column.mean}, std {column.std})")
        if (column.parent is None) != (column.given_parent is None) or not isinstance(column.parent, str | None):
            raise ValueError(f"column {column.name!r} has a parent without its moments given it, or moments without a parent")
        for row in column.given_parent or []:
            if len(row) != 2 or not (math.isfinite(row[0]) and _MIN_STD <= row[1] < math.inf):
                raise ValueError(f"column {column.name!r} has an invalid mean and std given its parent")
        return column




def _few_repeated(distinct: np.ndarray, observed: np.ndarray) -> bool:
    """Whether a column has few values, each seen many times on average: a measuring grid."""
    return 0 < len(distinct) <= MAX_SEEN and len(observed) >= MIN_REPEATS * len(distinct)


def _moment_rows(rows) -> list[list[float]]:
    """A manifest's `given_parent` of a numeric column: one [mean, std] list per parent level."""
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ValueError("a numeric column's moments given its parent are not a list of [mean, std] rows")
    return [[float(m) for m in row] for row in rows]


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None



def _optional_rate(value) -> float | None:
    return None if value is None else float(value)
