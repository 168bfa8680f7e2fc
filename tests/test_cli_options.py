"""Options that make the CLI fit its surroundings: a JSON training log and environment defaults."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

FAST = ("--epochs", "3", "--layers", "2", "--hidden", "8", "--quiet")


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "flowcli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_log_json_appends_one_object_per_epoch(table_csv, tmp_path):
    log = tmp_path / "train.jsonl"
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--log-json", log, *FAST)
    assert result.returncode == 0, result.stderr
    epochs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [epoch["epoch"] for epoch in epochs] == [1, 2, 3]
    assert set(epochs[0]) == {"epoch", "epochs", "train_nll", "val_nll", "best_val_nll", "elapsed", "max_time", "coupling"}
    assert {epoch["coupling"] for epoch in epochs} == {"affine"}  # no --max-time: auto trains the affine flow alone


def test_log_json_in_a_missing_folder_is_one_error_line(table_csv, tmp_path):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--log-json", tmp_path / "no" / "log.jsonl", *FAST)
    assert result.returncode == 1
    assert result.stderr.count("error: ") == 1 and "--log-json" in result.stderr
    assert not (tmp_path / "m.flow").exists()


def test_flowcli_device_sets_the_default_device(table_csv, tmp_path):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", *FAST, env={"FLOWCLI_DEVICE": "tpu"})
    assert result.returncode == 2 and "FLOWCLI_DEVICE" in result.stderr
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", *FAST, env={"FLOWCLI_DEVICE": "cpu", "FLOWCLI_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    inspect = json.loads(run("inspect", tmp_path / "m.flow", "--json").stdout)
    assert inspect["training"]["device"] == "cpu"


def test_base_multivariate_t_learns_one_degrees_of_freedom_that_inspect_shows(table_csv, tmp_path):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--base", "multivariate-t", *FAST)
    assert result.returncode == 0, result.stderr
    assert "multivariate Student-t base (ν " in " ".join(run("inspect", tmp_path / "m.flow").stdout.split())  # rows wrap
    architecture = json.loads(run("inspect", tmp_path / "m.flow", "--json").stdout)["architecture"]
    assert architecture["base"] == "multivariate-t"
    assert len(architecture["degrees_of_freedom"]) == 1 and architecture["degrees_of_freedom"][0] >= 1
    assert run("score", tmp_path / "m.flow", table_csv).returncode == 0


def test_base_mixture_fits_the_components_that_inspect_shows(table_csv, tmp_path):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--base", "mixture", *FAST)
    assert result.returncode == 0, result.stderr
    architecture = json.loads(run("inspect", tmp_path / "m.flow", "--json").stdout)["architecture"]
    assert architecture["base"] == "mixture" and architecture["components"] >= 1
    text = " ".join(run("inspect", tmp_path / "m.flow").stdout.split())  # rows wrap
    assert f"Gaussian mixture base ({architecture['components']} components)" in text
    scored = run("score", tmp_path / "m.flow", table_csv)
    assert scored.returncode == 0 and all(math.isfinite(float(v)) for v in scored.stdout.split()[1:])
    sampled = run("sample", tmp_path / "m.flow", "-n", "50", "--seed", "1")
    assert sampled.returncode == 0 and len(sampled.stdout.splitlines()) == 51


def test_base_student_learns_degrees_of_freedom_that_inspect_shows(table_csv, tmp_path):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--base", "student", *FAST)
    assert result.returncode == 0, result.stderr
    text = run("inspect", tmp_path / "m.flow").stdout
    assert "Student-t base" in text and "(ν " in text
    architecture = json.loads(run("inspect", tmp_path / "m.flow", "--json").stdout)["architecture"]
    assert architecture["base"] == "student"
    assert len(architecture["degrees_of_freedom"]) == architecture["features"]
    assert all(df >= 1 for df in architecture["degrees_of_freedom"])
