"""`flowcli evaluate`: every figure against an independent computation, known answers, and the
CLI contract (report on stdout, gates, bad input, no partial HTML file)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from test_cli import assert_usage_error, assert_user_error, run

from flowcli import TabularFlow
from flowcli.encode.columns import CategoricalColumn
from flowcli.evaluate import Gates, evaluate
from flowcli.evaluate.fidelity import column_shapes, pair_trends
from flowcli.evaluate.privacy import closest_distances
from flowcli.evaluate.values import ColumnValues
from flowcli.files import score_file
from flowcli.table.inputs import as_table

KEYS = {
    "likelihood": {"train_nll", "holdout_nll", "membership_auc"},
    "privacy": {"exact_copy_share", "dcr_synthetic_median", "dcr_holdout_median", "closer_than_holdout_share"},
    "fidelity": {"quality", "detection_auc", "columns", "pairs"},
}


def mixed_table(rows: int, seed: int) -> pd.DataFrame:
    """A number in odd units, one that depends on a category, the category, a small integer, and
    a number with missing values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rows)
    group = rng.choice(["north", "south", "east"], rows, p=[0.5, 0.3, 0.2])
    spend = 2 * x + 3 * (group == "south") + 0.5 * rng.standard_normal(rows)
    rate = np.where(rng.random(rows) < 0.1, np.nan, rng.gamma(2.0, 1.5, rows))
    return pd.DataFrame({"height": 100 * x + 500, "spend": spend, "group": group,
                         "items": rng.integers(0, 6, rows), "rate": rate})


@pytest.fixture(scope="module")
def tables():
    return {"train": mixed_table(3000, 0), "holdout": mixed_table(1500, 1), "fresh": mixed_table(3000, 2)}


@pytest.fixture(scope="module")
def model(tables):
    return TabularFlow(max_time=8, seed=0, device="cpu").fit(tables["train"])


@pytest.fixture(scope="module")
def files(tmp_path_factory, tables, model):
    folder = tmp_path_factory.mktemp("evaluate")
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    model.save(folder / "model.flow")
    return folder


def quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(*args, **kwargs)


@pytest.fixture(scope="module")
def own(model, tables):
    return quietly(model, tables["train"], tables["holdout"], seed=0)


def test_the_report_holds_the_named_figures(own):
    for group, keys in KEYS.items():
        assert keys <= set(own.report[group]), group
    assert own.report["rows"] == {"train": 3000, "holdout": 1500, "synthetic": 3000}
    json.dumps(own.report, allow_nan=False)  # strict JSON


def test_membership_auc_is_sklearns_on_scores_output(own, files):
    scores = {}
    for name in ("train", "holdout"):
        out = files / f"{name}.scores.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score_file(files / "model.flow", str(files / f"{name}.csv"), str(out), force=True)
        scores[name] = pd.read_csv(out)["log_likelihood"].to_numpy()
    labels = np.repeat([1, 0], [len(scores["train"]), len(scores["holdout"])])
    expected = roc_auc_score(labels, np.concatenate([scores["train"], scores["holdout"]]))
    assert own.report["likelihood"]["membership_auc"] == pytest.approx(expected, abs=1e-9)
    assert own.report["likelihood"]["train_nll"] == pytest.approx(-scores["train"].mean(), rel=1e-9)
    assert own.report["likelihood"]["holdout_nll"] == pytest.approx(-scores["holdout"].mean(), rel=1e-9)


def test_closest_distances_match_brute_force(model, tables):
    """Numbers on the model's scale, a category mismatch 1, a missing number its mean plus 1."""
    train, rows = tables["train"].iloc[:200], tables["fresh"].iloc[:50]
    found = closest_distances(*(ColumnValues.of(model.preprocessor_, as_table(t), "t") for t in (train, rows)))[0]
    columns = {column.name: column for column in model.preprocessor_.columns}

    def squared(a: pd.Series, b: pd.Series) -> float:
        total = 0.0
        for name, column in columns.items():
            if isinstance(column, CategoricalColumn):
                total += float(a[name] != b[name])
                continue
            x = np.array([a[name], b[name]], dtype=float)
            missing = np.isnan(x)
            z = np.where(missing, 0.0, column.scaled(x))
            total += (z[0] - z[1]) ** 2 + (float(missing[0] != missing[1]) if column.missing_rate is not None else 0)
        return total

    brute = [min(np.sqrt(squared(row, other)) for _, other in train.iterrows()) for _, row in rows.iterrows()]
    np.testing.assert_allclose(found, brute, atol=1e-6)


def test_shapes_and_trends_agree_with_their_definitions(model, tables):
    from scipy.stats import ks_2samp

    real, fake = (ColumnValues.of(model.preprocessor_, as_table(t), "t") for t in (tables["train"], tables["fresh"]))
    shapes = {entry["column"]: entry["score"] for entry in column_shapes(real, fake)}
    rate = tables["train"]["rate"].dropna(), tables["fresh"]["rate"].dropna()
    assert shapes["rate"] == pytest.approx(1 - ks_2samp(*rate).statistic)
    shares = [t["group"].value_counts(normalize=True) for t in (tables["train"], tables["fresh"])]
    assert shapes["group"] == pytest.approx(1 - (shares[0] - shares[1]).abs().sum() / 2)
    pairs = {tuple(entry["columns"]): entry for entry in pair_trends(real, fake)}
    r = [np.corrcoef(t["height"], t["spend"])[0, 1] for t in (tables["train"], tables["fresh"])]
    assert pairs["height", "spend"]["score"] == pytest.approx(1 - abs(r[0] - r[1]) / 2)
    assert pairs["height", "spend"]["counts"] and pairs["spend", "group"]["counts"]
    assert not pairs["height", "items"]["counts"]  # independent columns do not enter the average
    assert pairs["spend", "group"]["metric"] == "ContingencySimilarity"


def test_real_rows_as_synthetic_look_real(model, tables):
    fidelity = quietly(model, tables["train"], tables["holdout"], tables["fresh"]).report["fidelity"]
    assert fidelity["quality"] > 0.9
    assert abs(fidelity["detection_auc"] - 0.5) < 0.05


def test_a_tenth_of_training_rows_are_counted_as_copies(model, tables):
    synthetic = pd.concat([tables["train"].iloc[:300], tables["fresh"].iloc[:2700]])
    privacy = quietly(model, tables["train"], tables["holdout"], synthetic).report["privacy"]
    assert privacy["exact_copy_share"] == pytest.approx(0.10)
    assert privacy["holdout_copy_share"] == 0


def test_near_copies_are_flagged_by_distance(model, tables):
    nudged = tables["train"].iloc[:1000].copy()
    nudged["height"] += 0.001
    privacy = quietly(model, tables["train"], tables["holdout"], nudged).report["privacy"]
    assert privacy["exact_copy_share"] == 0
    assert privacy["closer_than_holdout_share"] > 0.95
    assert privacy["dcr_synthetic_median"] < 0.01 * privacy["dcr_holdout_median"]


def test_shuffled_columns_score_worse_than_the_models_samples(own, model, tables):
    rng = np.random.default_rng(0)
    shuffled = tables["fresh"].apply(lambda column: rng.permutation(column.to_numpy()))
    fidelity = quietly(model, tables["train"], tables["holdout"], shuffled).report["fidelity"]
    assert fidelity["quality"] < own.report["fidelity"]["quality"]
    assert fidelity["detection_auc"] > own.report["fidelity"]["detection_auc"] + 0.1


def test_an_overlapping_holdout_is_warned_of(model, tables):
    holdout = pd.concat([tables["holdout"], tables["train"].iloc[:150]])
    with pytest.warns(UserWarning, match="also appear in train"):
        evaluate(model, tables["train"], holdout, tables["fresh"])


def test_gates_name_the_failed_figure(own):
    assert Gates(min_quality=0.5, max_exact_copies=0.01).failures(own.report) == []
    failed = Gates(max_detection_auc=0.0, max_membership_auc=1.0).failures(own.report)
    assert len(failed) == 1 and failed[0].startswith("--max-detection-auc 0 failed: detection_auc is 0.")


# ----------------------------------------------------------------------------------- CLI
def test_cli_prints_the_report_and_writes_html(files):
    html = files / "report.html"
    result = run("evaluate", files / "model.flow", "--train", files / "train.csv", "--holdout", files / "holdout.csv",
                 "--html", html, "-n", "1000", "--force")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "membership AUC" in text and "detection AUC" in text and "exact copies" in text
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3


def test_cli_json_and_a_failing_gate(files):
    result = run("evaluate", files / "model.flow", "--train", files / "train.csv", "--holdout", files / "holdout.csv",
                 "--synthetic", files / "fresh.csv", "--json", "--max-detection-auc", "0.01")
    assert result.returncode == 1
    report = json.load(io.BytesIO(result.stdout))  # the report comes out whole before the gate fails
    assert report["rows"]["synthetic"] == 3000
    assert result.stderr.splitlines()[-1].startswith("error: --max-detection-auc 0.01 failed: detection_auc is")


@pytest.mark.parametrize("problem", ["columns", "empty", "types"])
def test_cli_bad_tables_fail_with_one_line_and_no_html(files, tables, problem):
    bad = files / f"bad_{problem}.csv"
    frame = tables["holdout"].iloc[:50]
    if problem == "columns":
        frame = frame.drop(columns="spend")
    elif problem == "empty":
        frame = frame.iloc[:0]
    else:
        frame = frame.astype({"height": str}).assign(height="tall")
    frame.to_csv(bad, index=False)
    html = files / f"bad_{problem}.html"
    result = run("evaluate", files / "model.flow", "--train", files / "train.csv", "--holdout", bad, "--html", html)
    fragment = {"columns": "spend", "empty": "no rows", "types": "height"}[problem]
    assert_user_error(result, str(bad), fragment)
    assert not html.exists() and not list(files.glob(".bad_*.part"))


def test_cli_gate_outside_its_range_is_a_usage_error(files):
    assert_usage_error(run("evaluate", files / "model.flow", "--train", files / "train.csv",
                           "--holdout", files / "holdout.csv", "--min-quality", "1.5"), "--min-quality")


def test_a_holdout_too_small_to_cross_validate_gives_no_detection_figure(model, tables):
    report = quietly(model, tables["train"], tables["holdout"].iloc[:2], n=500).report
    assert report["fidelity"]["detection_auc"] is None and report["rows"]["holdout"] == 2


def test_cli_reads_csv_files_in_the_dialect_given(files, tables):
    for name in ("train", "holdout"):
        tables[name].to_csv(files / f"{name}.semicolon.csv", sep=";", decimal=",", index=False)
    result = run("evaluate", files / "model.flow", "--train", files / "train.semicolon.csv",
                 "--holdout", files / "holdout.semicolon.csv", "--delimiter", ";", "--decimal", ",", "-n", "500", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == {"train": 3000, "holdout": 1500, "synthetic": 500}
