"""Shared fixtures: small tables and one quickly trained bundle per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

torch.set_num_threads(1)  # tests are many small problems; threads only add overhead


def gaussian_table(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Three correlated numeric columns on very different scales, plus a text column."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 3))
    return pd.DataFrame({
        "id": [f"r{i}" for i in range(rows)],
        "small": 1e-3 * z[:, 0] + 0.5,
        "large": 1e4 * (0.8 * z[:, 0] + 0.6 * z[:, 1]) - 3e4,
        "plain": z[:, 2] + 0.3 * z[:, 0],
    })


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory) -> Path:
    """A 400-row CSV: 'id' (text) and three numeric columns."""
    path = tmp_path_factory.mktemp("data") / "table.csv"
    gaussian_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory, table_csv) -> Path:
    """A bundle fit to `table_csv` in a few epochs (for contract tests, not quality)."""
    from flowcli import TabularFlow

    path = tmp_path_factory.mktemp("bundle") / "table.flow"
    model = TabularFlow(epochs=3, layers=4, hidden=16, seed=0, device="cpu")
    model.fit(pd.read_csv(table_csv), columns=["small", "large", "plain"])
    model.save(path)
    return path
