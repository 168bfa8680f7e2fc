"""Every bundle format flowcli ever wrote keeps loading, with the scores and samples it gave then."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcli import TabularFlow
from flowcli.bundle import FORMAT_VERSION

FIXTURES = sorted(Path(__file__).parent.joinpath("fixtures").glob("format_v*"))


def test_there_is_a_fixture_for_the_current_format():
    assert Path(__file__).parent / "fixtures" / f"format_v{FORMAT_VERSION}" in FIXTURES


@pytest.mark.parametrize("folder", FIXTURES, ids=lambda folder: folder.name)
def test_old_bundle_loads_and_scores_as_it_did(folder):
    model = TabularFlow.load(folder / "model.flow")
    expected = json.loads((folder / "expected.json").read_text())
    rows = pd.read_parquet(folder / "rows.parquet") if (folder / "rows.parquet").exists() else pd.read_csv(folder / "rows.csv")
    np.testing.assert_allclose(model.score_samples(rows), expected["scores"], rtol=1e-6, atol=1e-6)
    samples = model.sample(5, seed=0)
    if folder.name == "format_v1":  # numbers only: compare as numbers
        np.testing.assert_allclose(samples.to_numpy(), expected["samples_seed_0"], rtol=1e-6, atol=1e-9)
    else:
        assert samples.astype(str).to_numpy().tolist() == expected["samples_seed_0"]


@pytest.mark.parametrize("folder", FIXTURES, ids=lambda folder: folder.name)
def test_inspect_reports_the_bundles_own_format_version(folder):
    assert TabularFlow.load(folder / "model.flow").describe()["format_version"] == int(folder.name.removeprefix("format_v"))
