"""`torchrun -m flowcli fit`: two CPU processes under gloo train one model, and rank 0 alone writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
FIT = ["-m", "flowcli", "fit", "--epochs", "12", "--patience", "100", "--seed", "0", "--device", "cpu"]


def _curved_table(path, rows: int = 3000) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(rows)
    pd.DataFrame({"a": a, "b": a**2 + 0.3 * rng.standard_normal(rows), "c": rng.exponential(2, rows)}).to_csv(path, index=False)


def _val_nll(bundle) -> float:
    with zipfile.ZipFile(bundle) as archive:
        return json.loads(archive.read("manifest.json"))["training"]["best_val_nll"]


def test_two_gloo_processes_match_one_and_only_rank_0_writes(tmp_path):
    data = tmp_path / "table.csv"
    _curved_table(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWCLI_THREADS": "1"}
    single = subprocess.run([sys.executable, *FIT, str(data), "-o", str(tmp_path / "one.flow")],
                            capture_output=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr.decode()
    both = subprocess.run([*TORCHRUN, *FIT, str(data), "-o", str(tmp_path / "two.flow")],
                          capture_output=True, env=env, timeout=300, cwd=tmp_path)
    assert both.returncode == 0, both.stderr.decode()
    assert both.stdout == b""
    summaries = [line for line in both.stderr.decode().splitlines() if "two.flow" in line]
    assert len(summaries) == 1, both.stderr.decode()  # rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".flow") == ["one.flow", "two.flow"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    with zipfile.ZipFile(tmp_path / "two.flow") as archive:
        assert json.loads(archive.read("manifest.json"))["training"]["device"] == "2 × cpu"
    assert abs(_val_nll(tmp_path / "two.flow") - _val_nll(tmp_path / "one.flow")) < 0.05
