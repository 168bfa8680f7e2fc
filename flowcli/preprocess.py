"""Invertible, JSON-serializable column transforms between the user's units and the flow's.

`forward` returns the per-row log|det| of the map, so a density in the flow's space becomes
a density in the user's units: log p_x(x) = log p_u(u) + log_det.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowcli.errors import BundleError


@dataclass(frozen=True)
class ContinuousColumn:
    """A real-valued column, standardized as u = (x − mean) / std."""

    name: str
    mean: float
    std: float
    dtype: str = "double"  # the column's type in the training table, for the record

    kind = "continuous"

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Preprocessor:
    """Maps a table's columns (N, D) in the user's units to standardized features (N, D)."""

    columns: tuple[ContinuousColumn, ...]

    @classmethod
    def fit(cls, x: np.ndarray, names: list[str], dtypes: list[str]) -> Preprocessor:
        """Learn each column's mean and standard deviation from the rows of x (N, D)."""
        mean, std = x.mean(axis=0), x.std(axis=0)
        return cls(tuple(ContinuousColumn(n, float(m), float(s), d) for n, m, s, d in zip(names, mean, std, dtypes)))

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def _mean(self) -> np.ndarray:
        return np.array([column.mean for column in self.columns])

    @property
    def _std(self) -> np.ndarray:
        return np.array([column.std for column in self.columns])

    @property
    def log_det(self) -> float:
        """log|det ∂u/∂x|, the same for every row: −Σ log std."""
        return float(-np.log(self._std).sum())

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """User units (N, D) → standardized (N, D), with log|det ∂u/∂x| per row (N,)."""
        return (x - self._mean) / self._std, np.full(len(x), self.log_det)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """Standardized (N, D) → user units (N, D), as float64."""
        return u.astype(np.float64) * self._std + self._mean

    def to_json(self) -> list[dict]:
        return [column.to_json() for column in self.columns]

    @classmethod
    def from_json(cls, data: list[dict]) -> Preprocessor:
        columns = []
        if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
            raise BundleError("the manifest is malformed: its columns are not a list of column records")
        for entry in data:
            if entry.get("kind") != ContinuousColumn.kind:
                raise BundleError(f"column kind {entry.get('kind')!r} is not supported by this flowcli version")
            column = ContinuousColumn(str(entry["name"]), float(entry["mean"]), float(entry["std"]), str(entry["dtype"]))
            if not (np.isfinite(column.mean) and np.isfinite(column.std) and column.std > 0):
                raise BundleError(f"column {column.name!r} has an invalid standardization ({column.mean}, {column.std})")
            columns.append(column)
        return cls(tuple(columns))
