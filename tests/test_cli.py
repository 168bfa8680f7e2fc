"""The `flowcli` command, end to end: the real program in a subprocess, as a user runs it.

Each test checks the exit status, stdout and stderr separately: stdout carries data only,
stderr carries one `error:` line (exit 1) for a problem the user can fix, and usage errors
exit 2. Training is kept to two epochs of a tiny flow; scoring, sampling and inspecting
reuse the session's `bundle_path`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import gaussian_table

import flowcli
from flowcli import TabularFlow
from flowcli.bundle import FORMAT_VERSION

MODEL_COLUMNS = ["small", "large", "plain"]  # what `bundle_path` models (conftest)
FAST = ["--epochs", "2", "--layers", "2", "--hidden", "8", "--device", "cpu"]
COMMANDS = ["fit", "score", "sample", "inspect", "evaluate"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("flowcli")
# Small problems on a busy machine: one thread each, and a plain non-terminal environment.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
ENV.pop("FORCE_COLOR", None)


# --------------------------------------------------------------------------------- helpers
def run(*args, input: bytes | str | None = None, cwd: Path | None = None, script: bool = False):
    """Run `python -m flowcli ARGS` (or the console script) and return the CompletedProcess.

    stdout stays bytes (it is data: CSV or Parquet); stderr is decoded to text (messages).
    """
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "flowcli"]
    if isinstance(input, str):
        input = input.encode()
    result = subprocess.run(
        [*command, *map(str, args)],
        input=input if input is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )
    result.stderr = result.stderr.decode("utf-8", errors="replace")
    return result


def assert_user_error(result, *fragments: str) -> str:
    """Exit 1, nothing on stdout, exactly one `error: ` line on stderr holding every fragment."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == b"", result.stdout[:500]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_usage_error(result, *fragments: str) -> None:
    """Exit 2, nothing on stdout, a usage message (no traceback) on stderr."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == b"", result.stdout[:500]
    assert result.stderr.strip()
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def assert_ok(result, *, stderr_empty: bool = True) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, (result.returncode, result.stderr)
    if stderr_empty:
        assert result.stderr == "", result.stderr


def read_csv_output(data: bytes) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of CSV bytes, as the csv module parses them."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows, "no CSV header"
    return rows[0], rows[1:]


def scores_of(data: bytes) -> np.ndarray:
    header, rows = read_csv_output(data)
    assert header == ["log_likelihood"]
    return np.array([float(row[0]) for row in rows])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden and temporary ones included) with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def numeric_csv(rows: int, columns: str = "a,b,c", seed: int = 0, edit=None) -> str:
    """CSV text of random numbers; `edit(row_index, cells)` may change cells of a data row."""
    rng = np.random.default_rng(seed)
    names = columns.split(",")
    lines = [columns]
    for i in range(rows):
        cells = [repr(float(v)) for v in rng.standard_normal(len(names))]
        if edit is not None:
            edit(i, cells)
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def set_cells(changes: dict[tuple[int, int], str]):
    """An `edit` for numeric_csv: {(0-based data row, column index): text}."""

    def edit(i, cells):
        for (row, column), text in changes.items():
            if row == i:
                cells[column] = text

    return edit


def load_columns(bundle: Path) -> list[str]:
    return TabularFlow.load(bundle).columns_


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def table_frame(table_csv) -> pd.DataFrame:
    return pd.read_csv(table_csv)


@pytest.fixture(scope="module")
def table_parquet(tmp_path_factory, table_frame) -> Path:
    path = tmp_path_factory.mktemp("parquet") / "table.parquet"
    table_frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def expected_scores(bundle_path, table_frame) -> np.ndarray:
    """The scores of `table_csv` computed in-process, to check the CLI's values and order."""
    return TabularFlow.load(bundle_path).score_samples(table_frame)


@pytest.fixture(scope="module")
def default_fit(tmp_path_factory, table_csv):
    """One `flowcli fit data/table.csv` run from another folder, with no -o."""
    root = tmp_path_factory.mktemp("default_fit")
    (root / "data").mkdir()
    (root / "elsewhere").mkdir()
    data = root / "data" / "table.csv"
    shutil.copy(table_csv, data)
    result = run("fit", data, *FAST, cwd=root / "elsewhere")
    return result, root


# --------------------------------------------------------------------------------- version and help
@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
def test_version(script):
    result = run("--version", script=script)
    assert_ok(result)
    assert result.stdout.decode() == f"flowcli {flowcli.__version__}\n"


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_top_level_help(flag, script):
    result = run(flag, script=script)
    assert_ok(result)
    text = result.stdout.decode()
    assert "Usage:" in text
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_shows_an_example(command):
    result = run(command, "-h")
    assert_ok(result)
    text = result.stdout.decode()
    assert f"flowcli {command}" in text
    assert "Example:" in text


def test_unknown_command_is_a_usage_error():
    assert_usage_error(run("bogus"), "bogus")


# --------------------------------------------------------------------------------- fit
def test_fit_writes_data_flow_next_to_the_data(default_fit):
    result, root = default_fit
    assert_ok(result, stderr_empty=False)
    assert (root / "data" / "table.flow").is_file()
    assert list((root / "elsewhere").iterdir()) == []  # not in the working folder
    assert sorted(p.name for p in (root / "data").iterdir()) == ["table.csv", "table.flow"]  # no temporaries
    assert load_columns(root / "data" / "table.flow") == MODEL_COLUMNS


def test_fit_writes_nothing_on_stdout(default_fit):
    result, _ = default_fit
    assert result.returncode == 0
    assert result.stdout == b""


def test_fit_warns_on_stderr_about_the_left_out_text_column(default_fit):
    result, _ = default_fit
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert "'id'" in warnings[0]
    assert "wrote" in result.stderr and "table.flow" in result.stderr
    assert "error" not in result.stderr.lower()


def test_fit_output_option_and_quiet(tmp_path, table_csv):
    data = tmp_path / "table.csv"
    shutil.copy(table_csv, data)
    (tmp_path / "out").mkdir()
    result = run("fit", data, "-o", tmp_path / "out" / "model.flow", "--quiet", *FAST)
    assert_ok(result)  # --quiet: stderr is empty, warnings and summary included
    assert result.stdout == b""
    assert (tmp_path / "out" / "model.flow").is_file()
    assert not (tmp_path / "table.flow").exists()
    assert load_columns(tmp_path / "out" / "model.flow") == MODEL_COLUMNS


def test_fit_refuses_to_overwrite_without_force_and_replaces_with_it(tmp_path, table_csv):
    output = tmp_path / "model.flow"
    output.write_bytes(b"precious, not a bundle")
    refused = run("fit", table_csv, "-o", output, *FAST)
    assert_user_error(refused, "model.flow", "--force")
    assert output.read_bytes() == b"precious, not a bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.flow"]

    replaced = run("fit", table_csv, "-o", output, "--force", *FAST)
    assert_ok(replaced, stderr_empty=False)
    assert replaced.stdout == b""
    assert load_columns(output) == MODEL_COLUMNS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.flow"]


def test_fit_from_stdin_with_output(tmp_path, table_csv):
    output = tmp_path / "stdin.flow"
    result = run("fit", "-", "-o", output, "-q", *FAST, input=table_csv.read_bytes())
    assert_ok(result)
    assert result.stdout == b""
    assert load_columns(output) == MODEL_COLUMNS


def test_fit_from_stdin_without_output_is_a_usage_error(tmp_path, table_csv):
    result = run("fit", "-", *FAST, input=table_csv.read_bytes(), cwd=tmp_path)
    assert_usage_error(result, "-o")
    assert list(tmp_path.iterdir()) == []


def test_fit_parquet_from_stdin(tmp_path, table_parquet):
    output = tmp_path / "parquet.flow"
    result = run("fit", "-", "--format", "parquet", "-o", output, *FAST, input=table_parquet.read_bytes())
    assert_ok(result, stderr_empty=False)
    assert result.stdout == b""
    assert "'id'" in result.stderr  # the text column is left out here too
    assert load_columns(output) == MODEL_COLUMNS


def test_fit_columns_option_models_just_those(tmp_path, table_csv):
    output = tmp_path / "two.flow"
    result = run("fit", table_csv, "--columns", "small,plain", "-o", output, *FAST)
    assert_ok(result, stderr_empty=False)
    assert result.stdout == b""
    assert "warning" not in result.stderr  # nothing was left out on the user's behalf
    assert load_columns(output) == ["small", "plain"]


def test_fit_keeps_a_constant_column_as_one_certain_level(tmp_path):
    data = tmp_path / "constant.csv"
    data.write_text(numeric_csv(60, "a,b,k", edit=set_cells({(i, 2): "5" for i in range(60)})))
    result = run("fit", data, *FAST)
    assert_ok(result, stderr_empty=False)
    assert result.stdout == b""
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "'k' is constant" in warnings[0] and "certain" in warnings[0], result.stderr
    assert load_columns(tmp_path / "constant.flow") == ["a", "b", "k"]
    sampled = run("sample", tmp_path / "constant.flow", "-n", "20", "--seed", "0")
    assert set(pd.read_csv(io.BytesIO(sampled.stdout))["k"]) == {5}


# --------------------------------------------------------------------------------- score
def test_score_writes_one_row_per_input_row_in_order(bundle_path, table_csv, expected_scores):
    result = run("score", bundle_path, table_csv)
    assert_ok(result)
    assert result.stdout.split(b"\n", 1)[0] == b"log_likelihood"  # a plain header, no quotes
    scores = scores_of(result.stdout)
    assert len(scores) == 400
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-12, atol=0)
    assert np.isfinite(scores).all()


def test_score_reads_stdin(bundle_path, table_csv):
    from_file = run("score", bundle_path, table_csv)
    from_stdin = run("score", bundle_path, "-", input=table_csv.read_bytes())
    assert_ok(from_stdin)
    assert from_stdin.stdout == from_file.stdout


def test_score_reads_parquet(bundle_path, table_parquet, expected_scores):
    result = run("score", bundle_path, table_parquet)
    assert_ok(result)
    np.testing.assert_allclose(scores_of(result.stdout), expected_scores, rtol=1e-12, atol=0)


def test_score_parquet_from_stdin(bundle_path, table_parquet, expected_scores):
    result = run("score", bundle_path, "-", "--format", "parquet", input=table_parquet.read_bytes())
    assert_ok(result)
    np.testing.assert_allclose(scores_of(result.stdout), expected_scores, rtol=1e-12, atol=0)


def test_score_output_csv(tmp_path, bundle_path, table_csv):
    output = tmp_path / "scores.csv"
    result = run("score", bundle_path, table_csv, "-o", output)
    assert_ok(result)
    assert result.stdout == b""
    assert output.read_bytes() == run("score", bundle_path, table_csv).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_score_output_parquet(tmp_path, bundle_path, table_csv, expected_scores):
    output = tmp_path / "scores.parquet"
    result = run("score", bundle_path, table_csv, "-o", output)
    assert_ok(result)
    assert result.stdout == b""
    table = pq.read_table(output)
    assert table.schema.names == ["log_likelihood"]
    assert table.schema.field("log_likelihood").type == pa.float64()
    np.testing.assert_allclose(table.column(0).to_numpy(), expected_scores, rtol=1e-12, atol=0)


def test_score_refuses_existing_output_without_force(tmp_path, bundle_path, table_csv):
    output = tmp_path / "scores.csv"
    output.write_text("keep me\n")
    assert_user_error(run("score", bundle_path, table_csv, "-o", output), "already exists", "--force")
    assert output.read_text() == "keep me\n"
    assert_ok(run("score", bundle_path, table_csv, "-o", output, "--force"))
    assert len(scores_of(output.read_bytes())) == 400


def test_score_with_input_puts_input_columns_first(bundle_path, table_csv, table_frame, expected_scores):
    result = run("score", bundle_path, table_csv, "--with-input")
    assert_ok(result)
    frame = pd.read_csv(io.BytesIO(result.stdout))
    assert list(frame.columns) == ["id", "small", "large", "plain", "log_likelihood"]
    pd.testing.assert_frame_equal(frame[list(table_frame.columns)], table_frame)
    np.testing.assert_allclose(frame["log_likelihood"].to_numpy(), expected_scores, rtol=1e-12, atol=0)


def test_score_with_input_to_parquet_keeps_types(tmp_path, bundle_path, table_parquet, expected_scores):
    output = tmp_path / "scored.parquet"
    assert_ok(run("score", bundle_path, table_parquet, "--with-input", "-o", output))
    table = pq.read_table(output)
    assert table.schema.names == ["id", "small", "large", "plain", "log_likelihood"]
    assert pa.types.is_string(table.schema.field("id").type) or pa.types.is_large_string(table.schema.field("id").type)
    for name in ["small", "large", "plain", "log_likelihood"]:
        assert table.schema.field(name).type == pa.float64(), name
    np.testing.assert_allclose(table.column("log_likelihood").to_numpy(), expected_scores, rtol=1e-12, atol=0)


def test_score_ignores_column_order_and_extra_columns(tmp_path, bundle_path, table_csv, table_frame):
    shuffled = table_frame[["plain", "id", "large", "small"]].assign(extra=np.arange(len(table_frame)) * 1.5)
    data = tmp_path / "shuffled.csv"
    shuffled.to_csv(data, index=False)
    original = run("score", bundle_path, table_csv)
    reordered = run("score", bundle_path, data)
    assert_ok(reordered)
    assert reordered.stdout == original.stdout


def test_score_into_head_through_a_shell_pipeline(tmp_path, bundle_path):
    """Output far larger than a pipe buffer, cut short by `head`: no traceback, just the header."""
    data = tmp_path / "big.csv"
    gaussian_table(rows=20_000, seed=1).to_csv(data, index=False)
    command = f"{shlex.quote(sys.executable)} -m flowcli score {shlex.quote(str(bundle_path))} {shlex.quote(str(data))} | head -n 1"
    result = subprocess.run(command, shell=True, capture_output=True, env=ENV, timeout=300)
    stderr = result.stderr.decode("utf-8", errors="replace")
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert result.returncode == 0  # the status of `head`
    assert next(csv.reader(io.StringIO(result.stdout.decode()))) == ["log_likelihood"]
    assert result.stdout.decode().count("\n") == 1


# --------------------------------------------------------------------------------- sample
def test_sample_writes_n_rows_with_the_model_columns(bundle_path):
    result = run("sample", bundle_path, "-n", "7", "--seed", "0")
    assert_ok(result)
    assert result.stdout.split(b"\n", 1)[0] == b"small,large,plain"
    header, rows = read_csv_output(result.stdout)
    assert header == MODEL_COLUMNS
    assert len(rows) == 7
    assert np.isfinite(np.array(rows, dtype=float)).all()


def test_sample_seed_fixes_the_rows(bundle_path):
    first = run("sample", bundle_path, "-n", "7", "--seed", "3")
    second = run("sample", bundle_path, "-n", "7", "--seed", "3")
    other = run("sample", bundle_path, "-n", "7", "--seed", "4")
    for result in (first, second, other):
        assert_ok(result)
    assert first.stdout == second.stdout
    assert first.stdout != other.stdout


def test_sample_output_parquet(tmp_path, bundle_path):
    output = tmp_path / "synthetic.parquet"
    result = run("sample", bundle_path, "-n", "7", "--seed", "1", "-o", output)
    assert_ok(result)
    assert result.stdout == b""
    table = pq.read_table(output)
    assert table.num_rows == 7
    assert table.schema.names == MODEL_COLUMNS
    assert all(field.type == pa.float64() for field in table.schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.parquet"]


@pytest.mark.parametrize("n", ["0", "-5"])
def test_sample_count_below_one_is_a_usage_error(tmp_path, bundle_path, n):
    result = run("sample", bundle_path, "-n", n, "-o", tmp_path / "out.csv")
    assert_usage_error(result, "-n")
    assert list(tmp_path.iterdir()) == []


def test_sample_without_count_is_a_usage_error(bundle_path):
    assert_usage_error(run("sample", bundle_path), "-n")


# --------------------------------------------------------------------------------- inspect
def test_inspect_report(bundle_path):
    import torch

    result = run("inspect", bundle_path)
    assert_ok(result)
    text = result.stdout.decode()
    assert "format version" in text
    assert f"flowcli {flowcli.__version__}" in text
    assert f"torch {torch.__version__}" in text
    for name in MODEL_COLUMNS:
        assert name in text
    for word in ("parameters", "best val NLL", "fingerprint", "normal base"):
        assert word in text
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert too_long == []


def test_inspect_json(bundle_path):
    result = run("inspect", bundle_path, "--json")
    assert_ok(result)
    description = json.loads(result.stdout)
    assert isinstance(description, dict)
    assert {"format_version", "versions", "columns", "architecture", "training", "data"} <= set(description)
    assert description["format_version"] == FORMAT_VERSION
    assert description["versions"]["flowcli"] == flowcli.__version__
    assert [column["name"] for column in description["columns"]] == MODEL_COLUMNS
    assert "degrees_of_freedom" not in description["architecture"]  # a normal base, the default


# --------------------------------------------------------------------------------- bad input
# Each case builds its files in `tmp` and returns (arguments, fragments the error must hold).
# Outputs always go into `tmp`, so "no output file created" is: `tmp` is unchanged.
def _fit_case(name: str, text: str | None, *extra: str, fragments=()):
    def build(tmp: Path, bundle: Path, table_csv: Path):
        data = tmp / name
        if text is not None:
            data.write_text(text)
        return ["fit", data, *extra, *FAST], (name, *fragments)

    return build


def _score_case(build_data, *fragments: str, extra=("-o", "scores.csv")):
    def build(tmp: Path, bundle: Path, table_csv: Path):
        data = build_data(tmp, table_csv)
        paths = {"scores.csv": tmp / "scores.csv", "DATA": data}  # DATA: the input itself
        args = [paths.get(a, a) for a in extra]
        return ["score", bundle, data, *args], (data.name, *fragments)

    return build


def _without_column(suffix: str):
    def build(tmp: Path, table_csv: Path) -> Path:
        path = tmp / f"lacks_large{suffix}"
        frame = pd.read_csv(table_csv).drop(columns=["large"])
        frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
        return path

    return build


def _edited_table(name: str, edit):
    def build(tmp: Path, table_csv: Path) -> Path:
        frame = pd.read_csv(table_csv).astype(object)
        edit(frame)
        path = tmp / name
        frame.to_csv(path, index=False)
        return path

    return build


def _copy_of_table(tmp: Path, table_csv: Path) -> Path:
    path = tmp / "data.csv"
    shutil.copy(table_csv, path)
    return path


def _missing_file(tmp: Path, table_csv: Path) -> Path:
    return tmp / "missing.csv"


def _set(column: str, rows: list[int], value):
    def edit(frame):
        for row in rows:
            frame.loc[row, column] = value

    return edit


def _output_is_input(tmp, bundle, table_csv):
    data = _copy_of_table(tmp, table_csv)
    return ["fit", data, "-o", data, "--force", *FAST], ("overwrite the input",)


def _existing_score_output(tmp, bundle, table_csv):
    (tmp / "scores.csv").write_text("keep me\n")
    return ["score", bundle, table_csv, "-o", tmp / "scores.csv"], ("already exists", "--force")


def _existing_sample_output(tmp, bundle, table_csv):
    (tmp / "samples.parquet").write_bytes(b"keep me")
    return ["sample", bundle, "-n", "5", "-o", tmp / "samples.parquet"], ("already exists", "--force")


BAD_INPUT = {
    # fit: the default output would be tmp/NAME.flow
    "fit-missing-file": _fit_case("missing.csv", None, fragments=("no such file",)),
    "fit-empty-file": _fit_case("empty.csv", "", fragments=("empty",)),
    "fit-header-only": _fit_case("header_only.csv", "a,b,c\n"),
    "fit-no-numeric-column": _fit_case(
        "words.csv", "name,colour\n" + "".join(f"n{i},c{i}\n" for i in range(30)), fragments=("no column that can be modeled", "'name'")
    ),
    "fit-word-in-numeric-column": _fit_case(
        "word.csv", numeric_csv(50, edit=set_cells({(2, 1): "oops"})), fragments=("'b'", "'oops'", "row 3")
    ),
    "fit-infinity": _fit_case(
        "holes.csv",
        numeric_csv(50, edit=set_cells({(4, 0): "", (4, 1): "nan", (7, 1): "NaN", (9, 2): "inf"})),
        fragments=("'c'", "infinite", "row 10"),
    ),
    "fit-unknown-column-in-columns": _fit_case("plain.csv", numeric_csv(50), "--columns", "a,nope", fragments=("'nope'",)),
    "fit-too-few-rows": _fit_case("few.csv", numeric_csv(9), fragments=("9 rows", "at least 10")),
    "fit-unknown-format": _fit_case("table.xlsx", numeric_csv(50), fragments=("format",)),
    "fit-output-is-input": _output_is_input,
    # score: output to tmp/scores.csv
    "score-missing-file": _score_case(_missing_file, "no such file"),
    "score-lacks-column-csv": _score_case(_without_column(".csv"), "'large'"),
    "score-lacks-column-parquet": _score_case(_without_column(".parquet"), "'large'"),
    "score-word-in-numeric-column": _score_case(_edited_table("word.csv", _set("plain", [2], "oops")), "'plain'", "'oops'", "row 3"),
    "score-infinity": _score_case(_edited_table("holes.csv", _set("small", [3, 5], float("inf"))), "row 4", "'small'"),
    "score-output-is-input": _score_case(_copy_of_table, "overwrite the input", extra=("-o", "DATA", "--force")),
    "score-output-exists": _existing_score_output,
    "sample-output-exists": _existing_sample_output,
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_error_line(case, tmp_path, bundle_path, table_csv):
    args, fragments = BAD_INPUT[case](tmp_path, bundle_path, table_csv)
    before = snapshot(tmp_path)
    assert_user_error(run(*args, cwd=tmp_path), *map(str, fragments))
    assert snapshot(tmp_path) == before  # no output, no temporary, no input changed


def _random_bytes(path: Path, bundle: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(600))


def _text_file(path: Path, bundle: Path) -> None:
    path.write_text("this is a text file, not a model\n")


def _foreign_zip(path: Path, bundle: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
        archive.writestr("weights.bin", b"\x00" * 64)


def _truncated_bundle(path: Path, bundle: Path) -> None:
    data = bundle.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_bundle(path: Path, bundle: Path) -> None:
    pass


NOT_A_BUNDLE = {
    "random-bytes": _random_bytes,
    "text-file": _text_file,
    "zip-with-other-contents": _foreign_zip,
    "truncated-bundle": _truncated_bundle,
    "missing-file": _missing_bundle,
}


@pytest.mark.parametrize("kind", list(NOT_A_BUNDLE), ids=list(NOT_A_BUNDLE))
@pytest.mark.parametrize("command", ["score", "sample", "inspect"])
def test_model_that_is_not_a_bundle(command, kind, tmp_path, bundle_path, table_csv):
    model = tmp_path / "model.flow"
    NOT_A_BUNDLE[kind](model, bundle_path)
    args = {
        "score": ["score", model, table_csv, "-o", tmp_path / "scores.csv"],
        "sample": ["sample", model, "-n", "5", "-o", tmp_path / "samples.csv"],
        "inspect": ["inspect", model],
    }[command]
    before = snapshot(tmp_path)
    assert_user_error(run(*args), "model.flow")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------- known bugs
def test_score_stdin_word_error_names_column_and_row(bundle_path, table_csv):
    frame = pd.read_csv(table_csv).astype(object)
    frame.loc[2, "plain"] = "oops"
    result = run("score", bundle_path, "-", input=frame.to_csv(index=False))
    assert_user_error(result, "'plain'", "'oops'", "row 3")


def test_score_word_error_row_skips_empty_cells(tmp_path, bundle_path, table_csv):
    frame = pd.read_csv(table_csv).astype(object)
    frame.loc[1, "plain"] = None  # an empty cell in data row 2
    frame.loc[4, "plain"] = "oops"  # the word, in data row 5
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    assert_user_error(run("score", bundle_path, data), "'plain'", "'oops'", "row 5")


def test_fit_word_error_skips_empty_cells(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(numeric_csv(50, edit=set_cells({(1, 1): "", (4, 1): "oops"})))
    assert_user_error(run("fit", data, *FAST), "'b'", "'oops'", "row 5")
    assert not (tmp_path / "data.flow").exists()


def test_score_failure_writes_nothing_on_stdout(tmp_path, bundle_path, table_csv):
    frame = pd.read_csv(table_csv)
    frame.loc[3, "small"] = float("inf")
    data = tmp_path / "holes.csv"
    frame.to_csv(data, index=False)
    assert_user_error(run("score", bundle_path, data), "row 4", "'small'")


def test_binary_file_read_as_csv_gives_a_printable_error(bundle_path, table_parquet):
    line = assert_user_error(run("score", bundle_path, table_parquet, "--format", "csv"), "table.parquet")
    assert line.isprintable(), repr(line)
