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


def _curved_table(path, rows: int = 3000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(rows)
    pd.DataFrame({"a": a, "b": a**2 + 0.3 * rng.standard_normal(rows), "c": rng.exponential(2, rows)}).to_csv(path, index=False)


def _test_nll(bundle, test) -> float:
    """Mean negative log-likelihood, nats per row, of held-out rows: the same rows for every bundle."""
    from flowcli import TabularFlow

    return -TabularFlow.load(bundle).mean_log_likelihood(pd.read_csv(test))


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
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["training"]["device"] == "2 × cpu" and manifest["data"]["rows"] == 3000
    assert manifest["training"]["rows_train"] + manifest["training"]["rows_val"] == 3000
    _curved_table(test := tmp_path / "test.csv", rows=20_000, seed=1)
    one, two = _test_nll(tmp_path / "one.flow", test), _test_nll(tmp_path / "two.flow", test)
    assert abs(two - one) < 0.05, (one, two)


SHARD_SCRIPT = """
import sys
import pyarrow.parquet as pq
from flowcli.parallel import torchrun
from flowcli.table.shards import read_shard, shared_rows
table, total = read_shard(sys.argv[1])
pq.write_table(table, f"{sys.argv[2]}/own{torchrun.rank()}.parquet")
pq.write_table(shared_rows(table), f"{sys.argv[2]}/shared{torchrun.rank()}.parquet")
print(total, file=sys.stderr)
torchrun.stop()
"""


@pytest.mark.parametrize("suffix, rows", [(".csv", 4_000), (".csv", 400_000), (".parquet", 4_000)])
def test_each_rank_reads_its_own_share_and_all_share_the_preprocessing_rows(tmp_path, suffix, rows):
    """A small CSV goes to the ranks row by row, a large one (16 MiB) by pieces that only their
    rank parses; Parquet with enough row groups by row group. The rows the preprocessing is fit
    on are the same on both ranks and hold every column's extremes and levels."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.standard_normal(rows), "n": rng.integers(0, 50, rows),
                          "level": rng.choice(["a", "b", "c"], rows, p=[0.98, 0.015, 0.005])})
    data = tmp_path / f"table{suffix}"
    frame.to_csv(data, index=False) if suffix == ".csv" else frame.to_parquet(data, row_group_size=500, index=False)
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWCLI_THREADS": "1"}
    result = subprocess.run([*TORCHRUN, str(script), str(data), str(tmp_path)], capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    own = [pd.read_parquet(tmp_path / f"own{rank}.parquet") for rank in (0, 1)]
    if rows == 4_000:
        assert [len(part) for part in own] == [2_000, 2_000]
    else:  # about 19 pieces of 1 MiB, dealt in turn
        assert all(abs(len(part) - rows / 2) < 0.1 * rows for part in own), [len(part) for part in own]
        pd.testing.assert_frame_equal(own[0].head(1_000), frame.head(1_000), check_dtype=False)
    both = pd.concat(own).sort_values(["x", "n"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, frame.sort_values(["x", "n"]).reset_index(drop=True), check_dtype=False)
    if suffix == ".parquet":  # whole row groups: rank 0 has groups 0, 2, 4, 6
        pd.testing.assert_frame_equal(own[0].head(500), frame.head(500), check_dtype=False)
    shared = [pd.read_parquet(tmp_path / f"shared{rank}.parquet") for rank in (0, 1)]
    pd.testing.assert_frame_equal(shared[0], shared[1])
    assert shared[0]["x"].min() == frame["x"].min() and shared[0]["x"].max() == frame["x"].max()
    assert set(shared[0]["level"]) == {"a", "b", "c"}
