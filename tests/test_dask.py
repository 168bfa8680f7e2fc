"""Scoring on Dask (`pip install 'flowcli[dask]'`): the same scores as local scoring, one output
file per partition, none duplicated or missing, the bundle loaded once per worker.

One `LocalCluster` of two worker processes serves the module; the CLI reaches it by address,
and one test starts its own with `--dask local`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import gaussian_table

pytest.importorskip("dask.dataframe", reason="needs pip install 'flowcli[dask]'")
distributed = pytest.importorskip("distributed", reason="needs pip install 'flowcli[dask]'")
import dask.dataframe as dd

from flowcli import TabularFlow
from flowcli.dask_scoring import score_dask, write_folder

ENV = {**os.environ, "FLOWCLI_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
SIZES = (150, 1_000, 333)


def run(*args, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(["-c", code] if code else ["-m", "flowcli"]), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300, check=False)


def table(rows: int, seed: int) -> pd.DataFrame:
    frame = gaussian_table(rows, seed)
    frame["colour"] = np.random.default_rng(seed).choice(["red", "green", "blue"], rows)
    return frame


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A quick model of three numeric columns and a categorical one; the text 'id' is left out."""
    path = tmp_path_factory.mktemp("dask") / "m.flow"
    model = TabularFlow(epochs=2, layers=2, hidden=8, seed=0, device="cpu")
    model.fit(table(500, 99), columns=["small", "large", "plain", "colour"])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("parts")
    paths = []
    for number, rows in enumerate(SIZES):
        paths.append(folder / f"part{number}.parquet")
        table(rows, number).to_parquet(paths[-1], index=False)
    return paths


def local_scores(bundle: Path, paths: list[Path]) -> list[np.ndarray]:
    model = TabularFlow.load(bundle)
    return [model.score_samples(pq.read_table(path)) for path in paths]


def test_score_dask_equals_local_scoring(client, bundle, parts):
    frame = dd.read_parquet([str(path) for path in parts])
    assert frame.npartitions == len(parts)
    scores = score_dask(bundle, frame)
    assert scores.npartitions == frame.npartitions
    result = scores.compute()
    assert list(result.columns) == ["log_likelihood"]
    assert result.index.equals(frame.compute().index)  # partition for partition, index for index
    np.testing.assert_array_equal(result["log_likelihood"].to_numpy(), np.concatenate(local_scores(bundle, parts)))
    joined = frame.assign(log_likelihood=scores["log_likelihood"]).compute()  # the README's recipe
    np.testing.assert_array_equal(joined["log_likelihood"].to_numpy(), result["log_likelihood"].to_numpy())


def test_the_options_match_local_scoring(client, bundle, parts, tmp_path):
    frame = dd.read_parquet([str(path) for path in parts])
    result = score_dask(bundle, frame, with_input=True, percentile=True, explain=True, threshold=40.0).compute()
    model = TabularFlow.load(bundle)
    tables = [pd.read_parquet(path) for path in parts]
    scores = [model.score_samples(part) for part in tables]  # per file, as the partitions are
    below = [model.anomaly_percentile(model.anomaly_scores(part, score)) < 40.0 for part, score in zip(tables, scores)]
    assert list(result.columns) == [*tables[0].columns, "log_likelihood", "anomaly_score", "percentile", "explanation", "explanation_nats"]
    assert len(result) == sum(mask.sum() for mask in below)
    expected = np.concatenate([score[mask] for score, mask in zip(scores, below)])
    np.testing.assert_array_equal(result["log_likelihood"].to_numpy(), expected)
    explained = [model.explain(part, scores=score)[mask] for part, score, mask in zip(tables, scores, below)]
    assert list(result["explanation"]) == list(np.concatenate(explained))
    assert list(result["id"]) == list(pd.concat([part["id"][mask] for part, mask in zip(tables, below)]))


def test_the_cli_writes_one_file_per_partition_equal_to_local_scoring(client, bundle, parts, tmp_path):
    out = tmp_path / "scores"
    result = run("score", bundle, str(parts[0].parent / "part*.parquet"), "-o", out, "--dask", client.scheduler.address)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {out}: 3 Parquet files, {sum(SIZES):,} rows\n"
    files = sorted(out.iterdir())
    assert [file.name for file in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for file, path, expected in zip(files, parts, local_scores(bundle, parts)):
        written = pq.read_table(file)
        assert written.column_names == ["log_likelihood"]
        np.testing.assert_array_equal(written.column("log_likelihood").to_numpy(), expected)
        # and the same numbers as `flowcli score` without Dask
        single = tmp_path / f"{path.stem}.parquet"
        assert run("score", bundle, path, "-o", single).returncode == 0
        np.testing.assert_array_equal(pq.read_table(single).column("log_likelihood").to_numpy(), expected)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left

    again = run("score", bundle, str(parts[0].parent), "-o", out, "--dask", client.scheduler.address)
    assert again.returncode == 1 and again.stderr.splitlines() == [
        f"error: {out}: already exists and is not empty; pass --force to replace it"]
    forced = run("score", bundle, str(parts[0].parent), "-o", out, "--dask", client.scheduler.address, "--force",
                 "--percentile", "-q")
    assert forced.returncode == 0 and forced.stderr == "", forced.stderr
    assert pq.read_table(out / "part-00001.parquet").column_names == ["log_likelihood", "anomaly_score", "percentile"]


def test_each_worker_loads_the_bundle_once(client, bundle, parts):
    frame = dd.read_parquet([str(path) for path in parts] * 4)  # 12 partitions on 2 workers
    score_dask(bundle, frame).compute()
    loads = client.run(lambda: __import__("flowcli.dask_scoring").dask_scoring.loads)
    assert len(loads) == 2 and all(count == 1 for count in loads.values()), loads


def test_a_worker_that_dies_is_retried_with_no_partition_lost_or_doubled(client, bundle, parts, tmp_path):
    marker = tmp_path / "died"

    def die_once(frame, partition_info=None):  # pickled by value, so the workers can run it
        if partition_info and partition_info["number"] == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return frame

    frame = dd.read_parquet([str(path) for path in parts]).map_partitions(die_once)
    files, rows = write_folder(score_dask(bundle, frame), tmp_path / "out")
    assert marker.exists()  # a worker did die
    assert (files, rows) == (3, sum(SIZES))
    for number, expected in enumerate(local_scores(bundle, parts)):
        written = pq.read_table(tmp_path / "out" / f"part-{number:05d}.parquet").column("log_likelihood")
        np.testing.assert_array_equal(written.to_numpy(), expected)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"part-{n:05d}.parquet" for n in range(3)]


def test_dask_local_starts_its_own_cluster(bundle, parts, tmp_path):
    result = run("score", bundle, parts[0], "-o", tmp_path / "one", "--dask", "local", "-q")
    assert result.returncode == 0, result.stderr
    written = pq.read_table(tmp_path / "one" / "part-00000.parquet").column("log_likelihood")
    np.testing.assert_array_equal(written.to_numpy(), local_scores(bundle, parts[:1])[0])


@pytest.mark.parametrize("args, message", [
    (["-o", "-"], "--dask writes a folder of Parquet files; name it with -o"),
    (["-o", "out", "--top", "5"], "--top needs every row in one place"),
])
def test_usage_errors(bundle, parts, args, message):
    result = run("score", bundle, parts[0], "--dask", "local", *args)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_input_errors_name_the_problem(bundle, parts, tmp_path):
    csv = tmp_path / "t.csv"
    table(20, 0).to_csv(csv, index=False)
    for data, message in ((tmp_path / "none*.parquet", "no file matches"), (csv, "--dask reads Parquet files only")):
        result = run("score", bundle, data, "-o", tmp_path / "o", "--dask", "local")
        assert result.returncode == 1 and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "o").exists()


def test_without_dask_one_error_line_says_what_to_install(bundle, parts, tmp_path):
    code = ("import sys; sys.modules['dask'] = None; from flowcli.cli.app import main; "
            "sys.argv = ['flowcli', *sys.argv[1:]]; main()")
    result = run("score", bundle, parts[0], "-o", tmp_path / "o", "--dask", "local", code=code)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert "pip install 'flowcli[dask]'" in result.stderr
