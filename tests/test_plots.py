"""inspect --plot: a real PNG, from the bundle's own summary or from a table, and a clear error
when matplotlib is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowcli import TabularFlow
from flowcli.errors import FlowcliError

PNG = b"\x89PNG\r\n\x1a\n"


def inspect(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flowcli", "inspect", *map(str, args)], cwd=cwd, capture_output=True)


def test_plot_from_the_bundle_alone(bundle_path, tmp_path):
    result = inspect(bundle_path, "--plot", tmp_path / "diag.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert b"flowcli bundle" in result.stdout  # the report still goes to stdout
    image = (tmp_path / "diag.png").read_bytes()
    assert image.startswith(PNG) and len(image) > 20_000


def test_plot_with_real_data_and_no_overwrite_without_force(bundle_path, table_csv, tmp_path):
    assert inspect(bundle_path, "--plot", tmp_path / "diag.png", "--data", table_csv, cwd=tmp_path).returncode == 0
    assert (tmp_path / "diag.png").read_bytes().startswith(PNG)
    again = inspect(bundle_path, "--plot", tmp_path / "diag.png", cwd=tmp_path)
    assert again.returncode == 1 and b"--force" in again.stderr


def test_data_without_plot_is_a_usage_error(bundle_path, table_csv, tmp_path):
    assert inspect(bundle_path, "--data", table_csv, cwd=tmp_path).returncode == 2


def test_missing_matplotlib_is_a_clear_error(bundle_path, tmp_path, monkeypatch):
    from flowcli.cli.plots import plot_diagnostics

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(FlowcliError, match=r"pip install 'flowcli\[plot\]'"):
        plot_diagnostics(TabularFlow.load(bundle_path), tmp_path / "diag.png")
    assert not (tmp_path / "diag.png").exists()
