"""CSV files as people export them: the dialect is sniffed (delimiter, quote, header, decimal
mark, line endings, BOM and UTF-16/32), options say what sniffing cannot know, and each
re-export of the same rows scores exactly as the clean CSV does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowcli import TabularFlow
from flowcli.errors import DataError
from flowcli.table.dialect import CsvOptions
from flowcli.table.io import read_table

ROWS = 300


def wine(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A wine-quality-like table: names with spaces, decimals, an integer and a category."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "fixed acidity": rng.normal(7, 1, rows).round(2),
        "volatile acidity": rng.gamma(2, 0.2, rows).round(3) + 0.01,
        "quality": rng.integers(3, 9, rows),
        "color": rng.choice(["red", "white", "rosé"], rows),
    })


EXPORTS = {  # file name: pandas' to_csv arguments
    "semicolon.csv": dict(sep=";"),
    "decimal_comma.csv": dict(sep=";", decimal=","),
    "tabs.tsv": dict(sep="\t"),
    "pipes.txt": dict(sep="|"),
    "crlf.csv": dict(lineterminator="\r\n"),
    "bom.csv": dict(encoding="utf-8-sig"),
    "utf16.csv": dict(encoding="utf-16"),
    "utf16_tabs.csv": dict(encoding="utf-16", sep="\t"),
    "utf32.csv": dict(encoding="utf-32"),
    "quoted.csv": dict(quoting=1),  # every field quoted
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    paths = {"clean.csv": folder / "clean.csv"}
    wine().to_csv(paths["clean.csv"], index=False)
    for name, arguments in EXPORTS.items():
        paths[name] = folder / name
        wine().to_csv(paths[name], index=False, **arguments)
    return paths


@pytest.fixture(scope="module")
def model(exports) -> TabularFlow:
    return TabularFlow(epochs=3, layers=2, hidden=8, seed=0, device="cpu").fit(read_table(str(exports["clean.csv"])))


def flowcli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowcli", *args], input=input, capture_output=True)


@pytest.mark.parametrize("name", EXPORTS)
def test_every_export_reads_as_the_clean_csv_and_scores_the_same(exports, model, name):
    clean = read_table(str(exports["clean.csv"])).replace_schema_metadata(None)
    table = read_table(str(exports[name]))
    assert table.replace_schema_metadata(None).equals(clean), name
    np.testing.assert_allclose(model.score_samples(table), model.score_samples(clean), rtol=0, atol=1e-6)


def test_the_cli_scores_each_export_exactly_as_the_clean_csv(exports, model, tmp_path):
    bundle = tmp_path / "wine.flow"
    model.save(bundle)
    expected = flowcli("score", str(bundle), str(exports["clean.csv"]))
    assert expected.returncode == 0, expected.stderr
    for name in EXPORTS:
        result = flowcli("score", str(bundle), str(exports[name]))
        assert (result.returncode, result.stderr) == (0, b""), name
        np.testing.assert_allclose(np.loadtxt(result.stdout.splitlines()[1:]), np.loadtxt(expected.stdout.splitlines()[1:]),
                                   rtol=0, atol=1e-6, err_msg=name)
    piped = flowcli("score", str(bundle), "-", input=exports["utf16_tabs.csv"].read_bytes())  # stdin is sniffed too
    assert piped.returncode == 0 and piped.stdout == expected.stdout


def test_a_fit_on_each_export_finds_the_same_columns_and_inspect_shows_the_dialect(exports, tmp_path):
    for name in ("clean.csv", *EXPORTS):
        bundle = tmp_path / (name + ".flow")
        result = flowcli("fit", str(exports[name]), "-o", str(bundle), "--epochs", "2", "-q")
        assert result.returncode == 0, result.stderr
        description = json.loads(flowcli("inspect", str(bundle), "--json").stdout)
        assert [(c["name"], c["kind"]) for c in description["columns"]] == [
            ("fixed acidity", "continuous"), ("volatile acidity", "continuous"), ("quality", "categorical"), ("color", "categorical")]
        dialect = description["data"]["csv_dialect"]
        report = flowcli("inspect", str(bundle)).stdout.decode()
        if name == "decimal_comma.csv":
            assert (dialect["delimiter"], dialect["decimal"]) == (";", ",")
            assert "delimiter ';'" in report and "decimal ','" in report
        if name == "utf16_tabs.csv":
            assert (dialect["delimiter"], dialect["encoding"]) == ("\t", "utf-16")


def test_options_say_what_sniffing_cannot_know(exports, tmp_path):
    comma = tmp_path / "comma_decimals.csv"  # ',' both delimits and marks decimals: quoted cells
    wine().to_csv(comma, index=False, decimal=",")
    forced = read_table(str(comma), csv=CsvOptions(decimal=","))
    assert forced.column("fixed acidity").to_pylist() == wine()["fixed acidity"].tolist()
    assert read_table(str(comma)).schema.field("fixed acidity").type == "string"  # ambiguous: not guessed
    semicolons = read_table(str(exports["semicolon.csv"]), csv=CsvOptions(delimiter=";"))
    assert semicolons.num_columns == 4
    latin = tmp_path / "latin1.csv"
    wine().to_csv(latin, index=False, encoding="latin-1")
    with pytest.raises(DataError, match="--encoding"):
        read_table(str(latin))
    assert read_table(str(latin), csv=CsvOptions(encoding="latin-1")).column("color").to_pylist() == wine()["color"].tolist()


def test_no_header_names_columns_as_the_reader_does_at_fit_and_at_score(tmp_path):
    headless = tmp_path / "adult.csv"
    wine().to_csv(headless, index=False, header=False)
    warned = flowcli("fit", str(headless), "-o", str(tmp_path / "warned.flow"), "--epochs", "1")
    assert b"--no-header" in warned.stderr and b"looks like data" in warned.stderr
    bundle = tmp_path / "adult.flow"
    fitted = flowcli("fit", str(headless), "--no-header", "-o", str(bundle), "--epochs", "2")
    assert fitted.returncode == 0 and b"looks like data" not in fitted.stderr
    description = json.loads(flowcli("inspect", str(bundle), "--json").stdout)
    assert [c["name"] for c in description["columns"]] == ["f0", "f1", "f2", "f3"]
    assert description["data"]["rows"] == ROWS  # the first row is data, not names
    scored = flowcli("score", str(bundle), str(headless))  # the bundle remembers: no header
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.splitlines()) == ROWS + 1


@pytest.mark.parametrize("args, content, message", [
    (["--delimiter", ";;"], None, b"--delimiter"),
    (["--encoding", "no-such-codec"], None, b"--encoding"),
    (["--decimal", "x"], None, b"--decimal"),
    ([], b"\x7fELF\x02\x01\x01\x00\x00\x00\x00" * 50, b"binary"),
    ([], b"a,b\n1,2\n3,4,5\n" + b"6,7\n" * 20, b"row 2 has 3 fields"),
    ([], b"", b"empty"),
    ([], b"a,b\n", b"no data rows"),
    ([], b'a,b\n1,"2\n' + b"3,4\n" * 20, b"quoted field never ends"),
    ([], "caf\xe9,b\n1,2\n".encode("latin-1") * 20, b"--encoding"),
    (["--delimiter", ","], b"a;b;c\n" + b"1;2;3\n" * 20, b"--delimiter ';'"),
])
def test_bad_input_is_one_error_line_and_leaves_nothing(tmp_path, args, content, message):
    data = tmp_path / "data.csv"
    data.write_bytes(wine().to_csv(index=False).encode() if content is None else content)
    output = tmp_path / "out.flow"
    result = flowcli("fit", str(data), "-o", str(output), "--epochs", "1", *args)
    assert result.returncode in (1, 2) and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message.decode() in lines[0], lines
    assert not output.exists()
