"""Ctrl-C during fit: the first keeps the best model so far and exits 130; a second aborts cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcli import TabularFlow


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """Enough rows that an epoch takes a while, so the interrupt lands mid-training."""
    path = tmp_path_factory.mktemp("interrupt") / "big.csv"
    z = np.random.default_rng(0).standard_normal((60_000, 6))
    pd.DataFrame(z @ np.triu(np.ones((6, 6))), columns=[f"c{j}" for j in range(6)]).to_csv(path, index=False)
    return path


def start_fit(data: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flowcli", "fit", str(data), "-o", str(output), "--epochs", "1000", "--hidden", "128"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_until_training(process: subprocess.Popen, seconds: float = 8.0) -> None:
    """Give torch time to load and training time to start."""
    time.sleep(seconds)
    assert process.poll() is None, process.communicate()


def test_first_interrupt_writes_the_best_model_and_exits_130(big_csv, tmp_path):
    output = tmp_path / "model.flow"
    process = start_fit(big_csv, output)
    wait_until_training(process)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - interrupted < 5, "fit took too long to stop"
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert any(line.startswith("interrupted: wrote") and "stopped by interrupt" in line for line in stderr.splitlines()), stderr
    model = TabularFlow.load(output)
    assert model.training_["stopped"] == "interrupt"
    assert np.isfinite(model.score_samples(pd.read_csv(big_csv, nrows=100))).all()


def test_second_interrupt_aborts_without_writing(big_csv, tmp_path):
    """Two presses 30 ms apart. Whether the second lands before the bundle is written is a race,
    so each try must end in one of the two clean outcomes, and at least one try must abort."""
    aborted = 0
    for attempt in range(3):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        output = folder / "model.flow"
        process = start_fit(big_csv, output)
        wait_until_training(process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.03)  # two signals sent together would arrive as one
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        if errors:
            assert errors == ["error: interrupted; no output file was written"], stderr
            assert list(folder.iterdir()) == []  # no bundle, no temporary file
            aborted += 1
        else:
            assert TabularFlow.load(output).training_["stopped"] == "interrupt"
        if aborted:
            break
    assert aborted, "the second Ctrl-C never aborted the fit"
