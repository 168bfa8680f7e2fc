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
    if "anomaly_scores" in expected:  # recorded from format 9 on, when the anomaly score came
        np.testing.assert_allclose(model.anomaly_scores(rows), expected["anomaly_scores"], rtol=1e-6, atol=1e-6)
    samples = model.sample(5, seed=0)
    recorded = pd.DataFrame(expected["samples_seed_0"], columns=samples.columns)
    # The flow runs in float32, so a change in the order of its sums (bias folded into a matmul,
    # say) may move floats in their 7th digit: they and the datetimes are compared within that,
    # datetimes at 1e-5 of their spread at fit (about 94 s for a spread of 109 days).
    spreads = {column.name: getattr(column, "std", None) for column in model.preprocessor_.columns}
    for name in samples.columns:
        if pd.api.types.is_float_dtype(samples[name]):
            np.testing.assert_allclose(samples[name], recorded[name].astype(float), rtol=1e-6, atol=1e-9, err_msg=name)
        elif pd.api.types.is_datetime64_any_dtype(samples[name]):
            gap = (samples[name] - pd.to_datetime(recorded[name])).abs()
            assert (gap < pd.Timedelta(days=1e-5 * spreads[name])).all(), (name, gap)
        else:  # integers, booleans and categories come out exactly
            assert samples[name].astype(str).tolist() == recorded[name].astype(str).tolist(), name


@pytest.mark.parametrize("folder", FIXTURES, ids=lambda folder: folder.name)
def test_inspect_reports_the_bundles_own_format_version(folder):
    assert TabularFlow.load(folder / "model.flow").describe()["format_version"] == int(folder.name.removeprefix("format_v"))
