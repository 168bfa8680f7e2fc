"""Streaming and threads: errors found by row deep in long inputs, results that do not depend on
the thread count, and the threading helpers' contracts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flowcli import TabularFlow
from flowcli.parallel.threads import map_rows, read_ahead
from flowcli.table.values import as_numpy, from_numpy, missing_mask

ROWS = 200_000  # about 7 MB of CSV: several 1 MiB pieces
BAD_ROW = 150_001  # 1-based data row, far past the first piece


def run(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowcli", *map(str, args)], input=input, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory, table_csv):
    """ROWS rows with the columns of `table_csv`; the word 'oops' in column 'plain' of BAD_ROW."""
    frame = pd.read_csv(table_csv)
    frame = frame.sample(ROWS, replace=True, random_state=0, ignore_index=True).astype({"plain": object})
    frame.loc[BAD_ROW - 1, "plain"] = "oops"
    path = tmp_path_factory.mktemp("long") / "long.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_word_deep_in_a_long_csv_names_its_row_and_leaves_nothing_at_o(long_csv, bundle_path, tmp_path):
    result = run("score", bundle_path, long_csv, "-o", tmp_path / "scores.csv")
    assert result.returncode == 1
    assert result.stderr.decode().count("error:") == 1
    assert f"row {BAD_ROW}" in result.stderr.decode() and "'oops'" in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_a_word_deep_in_stdin_names_its_row_and_stdout_is_marked_partial(long_csv, bundle_path):
    result = run("score", bundle_path, "-", input=long_csv.read_bytes())
    error = result.stderr.decode()
    assert result.returncode == 1 and f"row {BAD_ROW}" in error and "partial output" in error
    written = result.stdout.decode().splitlines()
    assert written[0] == "log_likelihood"
    held = int(error.split("stdout holds only the ")[1].split(" rows")[0].replace(",", ""))
    assert 0 < held < BAD_ROW and len(written) - 1 == held  # what stderr says stdout holds, it holds


def test_cells_of_blanks_past_the_first_piece_are_missing_values(table_csv, bundle_path, tmp_path):
    frame = pd.read_csv(table_csv).sample(ROWS, replace=True, random_state=1, ignore_index=True).astype({"plain": object})
    frame.loc[ROWS - 10, "plain"] = "   "
    path = tmp_path / "blanks.csv"
    frame.to_csv(path, index=False)
    result = run("score", bundle_path, path)
    assert result.returncode == 0, result.stderr.decode()
    scores = np.loadtxt(result.stdout.decode().splitlines()[1:])
    assert len(scores) == ROWS and np.isfinite(scores).all()


@pytest.fixture(scope="module")
def model(bundle_path):
    return TabularFlow.load(bundle_path)


def test_scores_and_samples_do_not_depend_on_the_thread_count(model, table_csv, monkeypatch):
    rows = pd.read_csv(table_csv).sample(50_000, replace=True, random_state=2)
    results = {}
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("FLOWCLI_THREADS", threads)
        results[threads] = model.score_samples(rows), model.sample(30_000, seed=4)
    for threads in ("2", "3"):
        np.testing.assert_array_equal(results[threads][0], results["1"][0])
        pd.testing.assert_frame_equal(results[threads][1], results["1"][1])


def test_map_rows_covers_every_row_once_in_order():
    pieces = map_rows(lambda start, stop: np.arange(start, stop), 100_003, chunk_rows=1_000)
    np.testing.assert_array_equal(np.concatenate(pieces), np.arange(100_003))
    assert map_rows(lambda start, stop: 1 / 0, 0) == []


def test_map_rows_raises_the_earliest_chunks_error(monkeypatch):
    monkeypatch.setenv("FLOWCLI_THREADS", "4")

    def work(start: int, stop: int) -> int:
        if start in (3_000, 1_000):
            time.sleep(0.05 if start == 1_000 else 0)  # the later chunk fails first in time
            raise ValueError(f"chunk at {start}")
        return start

    with pytest.raises(ValueError, match="chunk at 1000"):
        map_rows(work, 10_000, chunk_rows=1_000)


def test_map_rows_in_a_worker_thread_runs_in_that_thread(monkeypatch):
    """A Dask worker's thread, say: parallel callers must not multiply their threads by ours."""
    monkeypatch.setenv("FLOWCLI_THREADS", "4")
    with ThreadPoolExecutor(1) as pool:
        caller, used = pool.submit(
            lambda: (threading.get_ident(), set(map_rows(lambda a, b: threading.get_ident(), 50_000, chunk_rows=1_000)))
        ).result()
    assert used == {caller}
    assert len(set(map_rows(lambda a, b: (time.sleep(0.01), threading.get_ident())[1], 8, chunk_rows=1))) > 1


def test_read_ahead_raises_in_place_and_stops_when_closed():
    def items():
        yield from range(5)
        raise RuntimeError("the sixth item")

    seen = []
    with pytest.raises(RuntimeError, match="sixth"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == list(range(5))

    endless = read_ahead(iter(range(10**12)), depth=2)
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()
    deadline = time.monotonic() + 5
    while any(thread.name == "flowcli-read-ahead" for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(thread.name == "flowcli-read-ahead" for thread in threading.enumerate())


@pytest.mark.parametrize("values", [
    pa.array([1.5, None, 3.0, None, 5.0]),
    pa.array([1.5, None, 3.0, None, 5.0]).slice(1, 3),  # an offset into the validity bits
    pa.chunked_array([pa.array([1, 2, None], pa.int32()), pa.array([None, 7], pa.int32())]),
    pa.array([], pa.float64()),
    pa.array([2.0, 4.0]),
])
def test_arrow_and_numpy_agree_without_pandas(values):
    expected = values.to_pandas().to_numpy(dtype=float, na_value=np.nan)
    x, missing = as_numpy(values, missing=np.nan), missing_mask(values)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(missing, np.isnan(expected))
    assert from_numpy(x.astype(float), missing).equals(pa.array(expected, pa.float64(), from_pandas=True))


def test_scoring_a_numeric_csv_loads_neither_pandas_nor_scipy(bundle_path, table_csv):
    """Each costs a tenth of a second of every `flowcli score`, and neither is needed here."""
    probe = (
        "import sys; from flowcli.cli.app import main; sys.argv = ['flowcli', 'score', sys.argv[1], sys.argv[2]]\n"
        "try: main()\nexcept SystemExit: pass\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'pandas', 'scipy', 'torch'}), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(bundle_path), str(table_csv)], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
