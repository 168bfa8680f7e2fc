"""Killing flowcli mid-way never leaves a broken file at the destination.

For `fit -o out.flow --force`, `score -o out.csv --force` and `sample -o out.parquet --force`
an OLD valid file waits at the destination; the program is SIGKILLed after a random delay
(seeded, spread from 0.2 s to past a measured full run), and the destination must then hold
exactly the old bytes or a complete, valid new file. A SIGKILLed process cannot tidy up, so
`.*.part` temporaries may remain, but only as hidden files beside the destination.

SIGINT is different: the program can clean up, so it must exit 130 with one `error:` line,
leave the old file untouched and no temporary behind.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import gaussian_table
from test_bad_input import ENV, FAST, MODEL_COLUMNS, error_line, fingerprint, part_files, run

from flowcli import TabularFlow

SEED = 20240611
KILLS = 5  # per command
SCORE_ROWS = 200_000
SAMPLE_ROWS = 300_000


@dataclass(frozen=True)
class Inputs:
    table: Path  # 400 rows, for fit
    big: Path  # SCORE_ROWS rows, for score
    bundle: Path


@dataclass(frozen=True)
class Target:
    """One command that replaces a file, with how to make an old file and judge a new one."""

    id: str
    destination: str
    argv: Callable[[Inputs], list]
    write_old: Callable[[Path, Inputs], None]
    check_new: Callable[[Path, Inputs], None]  # raises AssertionError unless complete and valid


def _old_bundle(path: Path, inputs: Inputs) -> None:
    shutil.copy(inputs.bundle, path)


def _new_bundle(path: Path, inputs: Inputs) -> None:
    model = TabularFlow.load(path)  # checks the zip, the manifest, the checksum and the shapes
    assert model.columns_ == MODEL_COLUMNS
    assert np.isfinite(model.score_samples(pd.read_csv(inputs.table))).all()


def _old_scores(path: Path, inputs: Inputs) -> None:
    scores = TabularFlow.load(inputs.bundle).score_samples(pd.read_csv(inputs.table))
    pd.DataFrame({"log_likelihood": scores}).to_csv(path, index=False)


def _new_scores(path: Path, inputs: Inputs) -> None:
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["log_likelihood"]
    assert len(frame) == SCORE_ROWS
    assert np.isfinite(frame["log_likelihood"].to_numpy()).all()


def _old_samples(path: Path, inputs: Inputs) -> None:
    pq.write_table(pa.Table.from_pandas(TabularFlow.load(inputs.bundle).sample(1000, seed=1)), path)


def _new_samples(path: Path, inputs: Inputs) -> None:
    samples = pq.read_table(path)
    assert samples.num_rows == SAMPLE_ROWS
    assert samples.column_names == MODEL_COLUMNS


TARGETS = {
    target.id: target
    for target in [
        Target("fit", "out.flow", lambda i: ["fit", i.table, "-o", "out.flow", "--force", "-q", *FAST],
               _old_bundle, _new_bundle),
        Target("score", "out.csv", lambda i: ["score", i.bundle, i.big, "-o", "out.csv", "--force"],
               _old_scores, _new_scores),
        Target("sample", "out.parquet", lambda i: ["sample", i.bundle, "-n", SAMPLE_ROWS, "--seed", "3", "-o", "out.parquet", "--force"],
               _old_samples, _new_samples),
    ]
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, table_csv, bundle_path) -> Inputs:
    big = tmp_path_factory.mktemp("kill_inputs") / "big.csv"
    pa_csv.write_csv(pa.Table.from_pandas(gaussian_table(SCORE_ROWS, seed=1), preserve_index=False), big)
    yield Inputs(table_csv, big, bundle_path)
    big.unlink()  # 13 MB; pytest keeps the last few temporary folders


def start(args: list, cwd: Path, stderr) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flowcli", *map(str, args)],
        cwd=cwd, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        preexec_fn=default_sigint,
    )


def default_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a shell that starts the tests in the background (`&`)
    has them, and so every child, ignore SIGINT, which Python then leaves ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spread_delays(rng: random.Random, longest: float, count: int = KILLS, shortest: float = 0.2) -> list[float]:
    """`count` delays, one drawn uniformly from each of `count` equal slices of [shortest, longest]."""
    width = (longest - shortest) / count
    return [rng.uniform(shortest + i * width, shortest + (i + 1) * width) for i in range(count)]


def assert_only_hidden_temporaries_beside(folder: Path, destination: str) -> list[str]:
    """Everything in `folder` but the destination is a hidden `.DEST.*.part` temporary."""
    pattern = re.compile(rf"\.{re.escape(destination)}\.[^/]+\.part")
    others = sorted(p.name for p in folder.iterdir() if p.name != destination)
    strays = [name for name in others if not pattern.fullmatch(name)]
    assert not strays, f"unexpected files beside {destination}: {strays}"
    return others


@pytest.mark.parametrize("target_id", list(TARGETS))
def test_sigkill_leaves_the_old_file_or_a_complete_new_one(target_id: str, tmp_path: Path, inputs: Inputs):
    target = TARGETS[target_id]
    # One full run, timed: the delays below reach past it, and a finished run must pass check_new.
    reference = tmp_path / "reference"
    reference.mkdir()
    target.write_old(reference / target.destination, inputs)
    full = run(*target.argv(inputs), cwd=reference, timeout=120)
    assert full.code == 0, full.stderr
    target.check_new(reference / target.destination, inputs)
    assert not part_files(reference)

    rng = random.Random(f"{SEED}:{target_id}")
    delays = spread_delays(rng, longest=max(1.3 * full.seconds, 0.6))
    outcomes = []
    for attempt, delay in enumerate(delays):
        folder = tmp_path / f"kill{attempt}"
        folder.mkdir()
        destination = folder / target.destination
        target.write_old(destination, inputs)
        old = destination.read_bytes()
        with tempfile.TemporaryFile() as stderr:
            process = start(target.argv(inputs), folder, stderr)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            stderr.seek(0)
            messages = stderr.read().decode(errors="replace")
        killed = process.returncode == -signal.SIGKILL
        where = f"{target_id}: attempt {attempt}, killed after {delay:.2f} s (full run {full.seconds:.2f} s)"

        leftovers = assert_only_hidden_temporaries_beside(folder, target.destination)
        assert destination.is_file(), f"{where}: the destination is gone"
        if destination.read_bytes() == old:
            outcome = "old"
        else:
            try:
                target.check_new(destination, inputs)
            except Exception as error:  # anything unreadable or incomplete is the failure here
                raise AssertionError(f"{where}: neither the old file nor a complete new one ({error!r})") from error
            outcome = "new"
        if not killed:  # it finished first: then it must have succeeded, cleanly
            assert process.returncode == 0, f"{where}: exit {process.returncode}: {messages}"
            assert outcome == "new" and not leftovers, (where, outcome, leftovers)
        outcomes.append((round(delay, 2), "killed" if killed else "finished", outcome, len(leftovers)))
        shutil.rmtree(folder)  # the outputs are megabytes; keep the kept temporary folders small
    print(f"{target_id}: full run {full.seconds:.2f} s; (delay, fate, destination, temporaries): {outcomes}")


def _wait_until_writing(process: subprocess.Popen, folder: Path, destination: str, limit: float = 60) -> bool:
    """Poll until the program's temporary file holds bytes (it is mid-write), or it exits first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        for temporary in folder.glob(f".{destination}.*.part"):
            try:
                if temporary.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("target_id", ["score", "sample"])
def test_sigint_mid_write_exits_130_and_keeps_the_old_file(target_id: str, tmp_path: Path, inputs: Inputs):
    target = TARGETS[target_id]
    for attempt in range(3):  # the write lasts a fraction of a second: retry if it was missed
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        destination = folder / target.destination
        target.write_old(destination, inputs)
        before = fingerprint(folder)
        with tempfile.TemporaryFile() as stderr:
            process = start(target.argv(inputs), folder, stderr)
            try:
                caught = _wait_until_writing(process, folder, target.destination)
                if caught:
                    process.send_signal(signal.SIGINT)
                process.wait(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            stderr.seek(0)
            messages = stderr.read().decode(errors="replace")
        if not caught:
            shutil.rmtree(folder)
            continue
        assert "Traceback" not in messages, messages
        assert process.returncode == 130, (process.returncode, messages)
        assert "interrupted" in error_line(messages)
        after = fingerprint(folder)
        assert after == before, f"the old file changed, or a temporary was left behind: {before} -> {after}"
        return
    pytest.fail(f"{target_id} finished three times before its temporary file was seen; no mid-write SIGINT happened")


# Ctrl-C the instant the temporary file exists. Polling from outside hits this window only on
# a loaded machine (an empty `.out.csv.*.part` stays behind); a SIGINT the program sends itself
# right after tempfile.mkstemp returns hits it every time.
INTERRUPT_AFTER_MKSTEMP = """
import os, signal, sys, tempfile
real_mkstemp = tempfile.mkstemp
def mkstemp(*args, **kwargs):
    result = real_mkstemp(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    return result
tempfile.mkstemp = mkstemp
sys.argv = ["flowcli", *sys.argv[1:]]
from flowcli.cli.app import main
main()
"""


def test_sigint_right_after_the_temporary_is_created_leaves_nothing(tmp_path: Path, inputs: Inputs):
    target = TARGETS["score"]
    destination = tmp_path / target.destination
    target.write_old(destination, inputs)
    before = fingerprint(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPT_AFTER_MKSTEMP, *map(str, target.argv(inputs))],
        cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, preexec_fn=default_sigint,
    )
    messages = result.stderr.decode(errors="replace")
    assert "Traceback" not in messages, messages
    assert result.returncode == 130, (result.returncode, messages)
    assert "interrupted" in error_line(messages)
    assert fingerprint(tmp_path) == before, f"left behind: {sorted(set(fingerprint(tmp_path)) - set(before))}"
