"""Atoms: a grid cell that holds far more rows than its surroundings (a wage of exactly 500.00
in 5 % of rows) is widened before the flow, so that samples bring the spike back and the cell
scores its own probability, exactly, as a density per unit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowcli import TabularFlow
from flowcli.encode.atoms import Atoms

SPIKE, SHARE = 500.0, 0.05


def wages(rows: int, seed: int, spike: bool = True) -> pd.DataFrame:
    """Log-normal weekly wages in cents and hours; with `spike`, SHARE of the
    rows earn exactly SPIKE; hours independent of them, so that a row's hours score alike at any wage."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 2))
    wage = np.round(np.exp(6.2 + 0.6 * z[:, 0]), 2)
    if spike:
        wage[rng.uniform(size=rows) < SHARE] = SPIKE
    return pd.DataFrame({"wage": wage, "hours": np.round(38 + 5 * z[:, 1], 1)})


def test_the_map_is_monotone_invertible_and_its_log_slope_is_exact():
    atoms = Atoms((0.0, 1.0, 2.5), (0.5, 1.25, 2.75), (3.0, 40.0, 7.0))
    t = np.sort(np.random.default_rng(0).uniform(-1, 4, 10_000))
    s, log_slope = atoms.forward(t)
    assert np.all(np.diff(s) > 0)
    np.testing.assert_allclose(atoms.inverse(s), t, atol=1e-12)
    h = 1e-7
    numeric = np.log((atoms.forward(t + h)[0] - atoms.forward(t - h)[0]) / (2 * h))
    away = np.min(np.abs(t[:, None] - np.array([0.0, 0.5, 1.0, 1.25, 2.5, 2.75])), axis=1) > 1e-5  # not on an edge
    np.testing.assert_allclose(log_slope[away], numeric[away], atol=1e-5)
    assert s[-1] - t[-1] == pytest.approx(2 * 0.5 + 39 * 0.25 + 6 * 0.25)  # every atom's extra width, past the last


def test_only_cells_far_denser_than_their_surroundings_are_atoms():
    def atoms_of(frame):
        columns = TabularFlow(epochs=1, seed=0).fit(frame).describe()["columns"]
        return {column["name"]: column.get("atoms") for column in columns}

    with_spike = atoms_of(wages(5_000, seed=0))
    assert with_spike["hours"] is None and len(with_spike["wage"]) == 1
    low, high, factor = with_spike["wage"][0]
    assert np.exp(low) < SPIKE < np.exp(high) and np.exp(high) - np.exp(low) == pytest.approx(0.01)
    assert factor > 100
    assert atoms_of(wages(5_000, seed=0, spike=False)) == {"wage": None, "hours": None}


@pytest.fixture(scope="module")
def spike_model() -> TabularFlow:
    return TabularFlow(max_time=15, seed=0).fit(wages(6_000, seed=0))


def test_samples_bring_the_spike_back_at_its_share(spike_model):
    samples = spike_model.sample(6_000, seed=1)
    assert abs((samples["wage"] == SPIKE).mean() - SHARE) < 0.01
    assert samples["wage"].round(2).equals(samples["wage"])  # still in cents


def test_the_spike_scores_its_probability_per_cent(spike_model):
    """A row at the spike scores log P(wage = 500.00) − log 0.01 plus its hours' log-density;
    less the same row a cent away, whose wage density is the smooth one, that is the spike's own
    gain over the smooth density."""
    test = wages(3_000, seed=2)
    at = test[test["wage"] == SPIKE]
    beside = at.assign(wage=SPIKE + 0.01)
    gain = (spike_model.score_samples(at) - spike_model.score_samples(beside)).mean()
    smooth = np.exp(-((np.log(SPIKE) - 6.2) ** 2) / (2 * 0.36)) / (SPIKE * 0.6 * np.sqrt(2 * np.pi))  # per dollar
    expected = np.log((SHARE + (1 - SHARE) * smooth * 0.01) / 0.01) - np.log((1 - SHARE) * smooth)
    assert abs(gain - expected) < 0.25, (gain, expected)


def test_atoms_survive_a_bundle_and_bad_ones_are_refused(spike_model, tmp_path):
    spike_model.save(tmp_path / "m.flow")
    loaded = TabularFlow.load(tmp_path / "m.flow")
    rows = wages(200, seed=3)
    np.testing.assert_array_equal(loaded.score_samples(rows), spike_model.score_samples(rows))
    for bad in ([[0.0, 1.0, 0.5]], [[0.0, 1.0, 2.0], [0.5, 2.0, 2.0]], [[1.0, 0.0, 2.0]], [[0.0, float("nan"), 2.0]], []):
        with pytest.raises(ValueError, match="invalid atoms"):
            Atoms.from_json(bad, "wage")


def schooling(rows: int, seed: int) -> pd.DataFrame:
    """Years of schooling, integers 0 to 18 around 13, with heaps at 12 (30 % of rows) and 16 (20 %):
    cells a year wide, wider than the bandwidth, whose heaps only their neighbours reveal."""
    rng = np.random.default_rng(seed)
    years = np.clip(np.round(rng.normal(13, 3, rows)), 0, 18)
    heap = rng.uniform(size=rows)
    years[heap < 0.3] = 12
    years[(heap >= 0.3) & (heap < 0.5)] = 16
    return pd.DataFrame({"years": years.astype(int), "hours": np.round(38 + 5 * rng.standard_normal(rows), 1)})


def test_heaps_on_a_coarse_integer_grid_are_atoms_and_come_back_in_samples():
    """A heap on a grid coarser than the bandwidth is judged by the cells beside it, so it is
    widened, and the flow's samples bring it back at its share (without atoms, 12 came back at
    27 % against 35 %, 16 at 20 % against 25 %)."""
    table = schooling(8_000, seed=0)
    model = TabularFlow(max_time=15, seed=0).fit(table)
    atoms = {column["name"]: column.get("atoms") for column in model.describe()["columns"]}
    assert atoms["hours"] is None and [low for low, _, _ in atoms["years"]] == [12, 16, 18]  # 18: the clipped end
    samples = model.sample(8_000, seed=1)["years"]
    for value in (12, 16, 18):
        assert abs((samples == value).mean() - (table["years"] == value).mean()) < 0.02, value


def heaped_wages(rows: int, seed: int) -> pd.DataFrame:
    """Weekly wages in cents, half of them one of 40 hourly rates times 40 hours: heaps side by
    side, each within a bandwidth of others."""
    rng = np.random.default_rng(seed)
    wage = np.round(np.exp(6.2 + 0.5 * rng.standard_normal(rows)), 2)
    rates = np.round(np.round(np.exp(np.linspace(np.log(6.0), np.log(25.0), 40)), 2) * 40, 2)
    heaped = rng.uniform(size=rows) < 0.5
    wage[heaped] = rng.choice(rates, heaped.sum())
    return pd.DataFrame({"wage": wage})


def test_heaps_side_by_side_each_come_back_at_their_share():
    """Heaps within a window of each other are judged against the rows around them that are not
    heaps, so each is widened as far as it needs (judged against each other, the heaps came back
    in 38 % of samples against 49 %)."""
    table = heaped_wages(8_000, seed=0)
    model = TabularFlow(max_time=15, seed=0).fit(table)
    heaps = set(table["wage"].value_counts().index[:40])
    samples = model.sample(8_000, seed=1)["wage"]
    assert abs(samples.isin(heaps).mean() - table["wage"].isin(heaps).mean()) < 0.03
