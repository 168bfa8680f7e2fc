"""`fit --max-rows N`: a uniform sample drawn in one streaming pass (reservoir sampling).

The sampler is checked as statistics (each row equally likely, order statistics of a column
0..M-1 where they should be), as a function of the seed alone (not of how the rows were cut
into batches, nor of CSV against Parquet), and as memory: a fit on 2,000,000 rows peaks no
higher than one on 200,000, measured on the child process with os.wait4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from scipy import stats

from flowcli.files import fit_file
from flowcli.table.io import iter_batches, read_table
from flowcli.table.reservoir import read_sample, reservoir_sample

ENV = {**os.environ, "FLOWCLI_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
FAST = ["--epochs", "1", "--layers", "2", "--hidden", "8", "--device", "cpu"]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowcli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False, **kwargs)


def counting(rows: int) -> pa.Table:
    return pa.table({"i": np.arange(rows, dtype=np.int64)})


def in_batches(table: pa.Table, rows: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=rows)


# --------------------------------------------------------------------------------- the sampler
def test_a_sample_of_a_counting_column_has_the_quantiles_of_the_whole():
    m, n = 200_000, 5_000
    sample, seen = reservoir_sample(in_batches(counting(m), 7_919), pa.schema([("i", pa.int64())]), n, seed=0)
    i = sample.column("i").to_numpy()
    assert seen == m and len(i) == n
    assert len(np.unique(i)) == n and np.all(np.diff(i) > 0)  # without replacement, in input order
    u = (i + 0.5) / m
    # The mean of n uniforms has sd sqrt(1/12n) = 0.0041; the k/10 quantiles about 0.007.
    assert abs(u.mean() - 0.5) < 0.02
    assert np.abs(np.quantile(u, np.linspace(0.1, 0.9, 9)) - np.linspace(0.1, 0.9, 9)).max() < 0.03
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_every_row_is_equally_likely_across_seeds():
    m, n, seeds = 1_000, 100, 400
    counts = np.zeros(m)
    for seed in range(seeds):
        sample, _ = reservoir_sample(in_batches(counting(m), 37), pa.schema([("i", pa.int64())]), n, seed=seed)
        counts[sample.column("i").to_numpy()] += 1
    expected = seeds * n / m  # 40 per row
    assert counts.sum() == seeds * n
    assert stats.chisquare(counts, np.full(m, expected)).pvalue > 1e-3
    # and no drift along the input: first against last tenth of the rows
    assert abs(counts[:100].mean() - counts[-100:].mean()) < 0.1 * expected


def test_the_seed_alone_fixes_the_sample_not_the_batches():
    table, schema = counting(50_000), pa.schema([("i", pa.int64())])
    samples = [reservoir_sample(in_batches(table, rows), schema, 1_000, seed=7)[0] for rows in (50_000, 4_096, 333, 1)]
    assert all(sample.equals(samples[0]) for sample in samples[1:])
    other, _ = reservoir_sample(in_batches(table, 4_096), schema, 1_000, seed=8)
    assert not other.equals(samples[0])


def test_at_least_as_many_rows_as_the_table_keeps_them_all_in_order():
    table, schema = counting(1_234), pa.schema([("i", pa.int64())])
    for n in (1_234, 1_235, 10**9):
        sample, seen = reservoir_sample(in_batches(table, 100), schema, n)
        assert sample.equals(table) and seen == 1_234
    empty, seen = reservoir_sample([], schema, 5)
    assert empty.num_rows == 0 and empty.schema == schema and seen == 0


@pytest.fixture
def mixed_csv(tmp_path) -> Path:
    """Numbers, text with quotes and line breaks, dates, booleans and missing values."""
    path = tmp_path / "mixed.csv"
    labels = ['"line\nbreak"', '"say ""hi"""', "plain"]
    rows = (f"{i * 0.25},{labels[i % 3]},2024-01-{1 + i % 28:02d},{i % 2 == 0},{'' if i % 5 == 0 else i}\n"
            for i in range(3_000))
    path.write_text('x,"label, quoted",day,flag,n\n' + "".join(rows))
    return path


def test_a_csv_sample_of_every_row_equals_the_whole_table(mixed_csv, monkeypatch):
    monkeypatch.setattr("flowcli.table.csv_reader.CSV_PIECE_BYTES", 1_000)  # many pieces, cut inside quoted values
    sample, seen = read_sample(str(mixed_csv), max_rows=10_000)
    whole = read_table(str(mixed_csv))
    assert seen == 3_000
    assert sample.equals(whole), (sample.schema, whole.schema)


def test_csv_and_parquet_give_the_same_sample(mixed_csv, tmp_path):
    parquet = tmp_path / "mixed.parquet"
    pq.write_table(read_table(str(mixed_csv)), parquet, row_group_size=500)
    from_csv, _ = read_sample(str(mixed_csv), max_rows=300, seed=3)
    from_parquet, _ = read_sample(str(parquet), max_rows=300, seed=3)
    assert from_csv.num_rows == 300 and from_csv.equals(from_parquet)


def test_types_come_from_the_sample_not_from_the_first_block(tmp_path):
    """A column empty for the first megabytes and numeric later: a streaming reader that guesses
    types from its first block fails on it; the text stream does not."""
    path = tmp_path / "late.csv"
    with open(path, "w") as handle:
        handle.write("x,y\n" + "1,\n" * 1_500_000 + "2,3.5\n")
    schema, _ = iter_batches(str(path), batch_rows=65_536, text=True)
    assert schema == pa.schema([("x", pa.string()), ("y", pa.string())])
    sample, seen = read_sample(str(path), max_rows=2_000_000)
    assert seen == 1_500_001 and sample.schema.field("y").type == pa.float64()
    assert sample.column("y")[-1].as_py() == 3.5


def test_a_row_longer_than_a_piece_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("flowcli.table.csv_reader.CSV_PIECE_BYTES", 64)
    path = tmp_path / "long.csv"
    path.write_text("a,b\n" + f'"{"word " * 200}",1\n' * 3)
    sample, seen = read_sample(str(path), max_rows=10)
    assert seen == 3 and sample.column("a")[0].as_py() == "word " * 200


def test_stdin_and_compressed_csv(mixed_csv, tmp_path):
    import gzip

    packed = tmp_path / "mixed.csv.gz"
    packed.write_bytes(gzip.compress(mixed_csv.read_bytes()))
    expected, _ = read_sample(str(mixed_csv), max_rows=100, seed=1)
    assert read_sample(str(packed), max_rows=100, seed=1)[0].equals(expected)
    out = tmp_path / "out.parquet"
    code = ("import pyarrow.parquet as pq; from flowcli.table.reservoir import read_sample;"
            f"pq.write_table(read_sample('-', max_rows=100, seed=1)[0], {str(out)!r})")
    with open(mixed_csv, "rb") as stdin:
        piped = subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr.decode()
    assert pq.read_table(out).equals(expected)


# --------------------------------------------------------------------------------- fit and inspect
def test_fit_file_records_the_sample(table_csv, tmp_path):
    model = fit_file(str(table_csv), tmp_path / "m.flow", columns=["small", "large", "plain"], max_rows=100,
                     hyperparameters={"epochs": 1, "layers": 2, "hidden": 8, "device": "cpu"})
    assert model.training_["sample"] == {"method": "reservoir", "max_rows": 100, "rows": 100, "rows_read": 400}
    assert model.data_["rows"] == 100
    with pytest.raises(ValueError, match="max_rows"):
        fit_file(str(table_csv), tmp_path / "n.flow", max_rows=0)


def test_fit_max_rows_and_inspect(table_csv, tmp_path):
    bundle = tmp_path / "m.flow"
    result = run("fit", table_csv, "-o", bundle, "--columns", "small,large,plain", "--max-rows", 150, *FAST)
    assert result.returncode == 0, result.stderr
    assert "150 rows" in result.stderr
    report = run("inspect", bundle)
    assert report.returncode == 0, report.stderr
    assert "  sample        uniform reservoir sample, 150 of 400 rows (--max-rows)" in report.stdout.splitlines()
    described = json.loads(run("inspect", bundle, "--json").stdout)
    assert described["training"]["sample"] == {"method": "reservoir", "max_rows": 150, "rows": 150, "rows_read": 400}
    assert described["data"]["rows"] == 150

    all_rows = tmp_path / "all.flow"
    fitted = run("fit", table_csv, "-o", all_rows, "--columns", "small,large,plain", "--max-rows", 1000, *FAST)
    assert fitted.returncode == 0, fitted.stderr
    assert "  sample        all 400 rows, within --max-rows 1,000" in run("inspect", all_rows).stdout.splitlines()
    plain = tmp_path / "plain.flow"
    assert run("fit", table_csv, "-o", plain, "--columns", "small,large,plain", *FAST).returncode == 0
    assert "sample" not in json.loads(run("inspect", plain, "--json").stdout)["training"]
    assert "  sample " not in run("inspect", plain).stdout


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_max_rows_is_a_usage_error(table_csv, tmp_path, value):
    result = run("fit", table_csv, "-o", tmp_path / "m.flow", "--max-rows", value)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--max-rows" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "m.flow").exists()


# --------------------------------------------------------------------------------- memory
# Linux hands a child the peak RSS of the process it was forked from (kept across exec), and
# pytest is hundreds of MiB once torch is in: a small Python process starts the command and
# reads the command's own peak with os.wait4.
_MEASURE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(usage.ru_maxrss / 1024)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_mib(*command) -> float:
    """Peak RSS (MiB) of `command`; fails if the command fails."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, command)], capture_output=True, text=True,
                            env=ENV, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def test_peak_memory_does_not_grow_with_the_rows_streamed(tmp_path):
    rng = np.random.default_rng(0)
    tables = {}
    for rows in (200_000, 2_000_000):
        tables[rows] = tmp_path / f"rows{rows}.csv"
        columns = {name: rng.standard_normal(rows).round(4) for name in ("a", "b", "c")}
        pa_csv.write_csv(pa.table(columns), tables[rows])
    fit = {rows: peak_mib(sys.executable, "-m", "flowcli", "fit", path, "-o", tmp_path / f"m{rows}.flow",
                          "--max-rows", 10_000, "-q", *FAST)
           for rows, path in tables.items()}
    baseline = peak_mib(sys.executable, "-c", "import flowcli.table.io")
    loading = peak_mib(sys.executable, "-c", f"import flowcli.table.io; flowcli.table.io.read_table({str(tables[2_000_000])!r})")
    loading -= baseline
    growth = fit[2_000_000] - fit[200_000]
    print(f"peak RSS: fit --max-rows 10,000 on 200,000 rows {fit[200_000]:.0f} MiB, on 2,000,000 rows "
          f"{fit[2_000_000]:.0f} MiB; reading the 2,000,000 rows whole adds {loading:.0f} MiB")
    assert growth < 32, fit
    assert growth < loading / 3, (fit, loading)
