"""Bad input through the real `flowcli` program: one clear `error:` line, and no harm done.

A table of cases, one test function. Every case runs `python -m flowcli ...` in a fresh
folder that holds all of its inputs, and checks all of these together:

* the exit status: 1 for a problem with the input, 2 for a usage error;
* stderr has exactly one line starting with `error: `, naming the file, column, row or
  flag involved (each case lists the fragments it must hold), no traceback, and nothing
  else but `warning: ` lines;
* stdout is empty;
* the folder is unchanged: no output file, no `.*.part` temporary, every input the same bytes.

The few inputs that must work (a UTF-8 BOM, unicode column names) are separate tests at the
end. Helpers here (`run`, `Case`, `fingerprint`) are shared with test_kill.py.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch  # conftest imports it already; here only to ask whether CUDA is present

FAST = ("--epochs", "2", "--layers", "2", "--hidden", "8", "--device", "cpu")
MODEL_COLUMNS = ["small", "large", "plain"]  # what conftest's `bundle_path` models
# One thread per child (the machine is small and busy), a plain non-terminal environment.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
ENV.pop("FORCE_COLOR", None)
# Root ignores folder modes; without CAP_DAC_OVERRIDE in its bounding set it obeys them again.
DROP_ROOT_POWERS = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


# --------------------------------------------------------------------------------- shared helpers
@dataclass
class Result:
    """What one run of the program did. `code` is negative when a signal ended it."""

    code: int
    stdout: bytes
    stderr: str
    seconds: float
    peak_memory_mb: float  # the child's peak resident memory (VmHWM), sampled while it ran
    timed_out: bool


class PeakMemory(threading.Thread):
    """Samples /proc/PID/status VmHWM (the high-water mark of resident memory) until stopped.

    The mark only grows, so the last sample before exit holds nearly all of the peak. (The
    rusage of a reaped child is no use here: it starts from the forking parent's memory.)
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                for line in self.status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            self.done.wait(0.02)


def run(
    *args,
    cwd: Path,
    timeout: float = 120,
    fsize_limit: int | None = None,
    prefix: Sequence[str] = (),
    stdin: bytes = b"",
) -> Result:
    """Run `python -m flowcli ARGS` in `cwd`; kill it after `timeout` seconds.

    stdout and stderr go to temporary files, so no full pipe can stall the child.
    `fsize_limit` caps the size of any file the child writes (RLIMIT_FSIZE): a full disk, as
    the writer sees it (Python ignores SIGXFSZ, so the write fails with EFBIG).
    """
    command = [*prefix, sys.executable, "-m", "flowcli", *map(str, args)]

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as source:
        source.write(stdin)
        source.seek(0)
        start = time.monotonic()
        process = subprocess.Popen(
            command, cwd=cwd, env=ENV, stdin=source, stdout=out, stderr=err,
            preexec_fn=limit_file_size if fsize_limit is not None else None,
        )
        memory = PeakMemory(process.pid)
        memory.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
        finally:
            memory.done.set()
            memory.join()
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return Result(
            code=process.returncode,
            stdout=out.read(),
            stderr=err.read().decode("utf-8", errors="replace"),
            seconds=seconds,
            peak_memory_mb=memory.peak_kib / 1024,
            timed_out=timed_out,
        )


def fingerprint(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (hidden ones included): a file's SHA-256, else its kind.

    FIFOs and devices are never opened (that would block or consume them), only named.
    """
    prints = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        name = str(path.relative_to(folder))
        if stat.S_ISREG(mode):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            prints[name] = digest.hexdigest()
        else:
            prints[name] = "folder" if stat.S_ISDIR(mode) else "fifo" if stat.S_ISFIFO(mode) else f"mode {mode:o}"
    return prints


def part_files(folder: Path) -> list[str]:
    """The names of flowcli's temporary files anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.part"))


def error_line(stderr: str) -> str:
    """The one `error: ` line of stderr; every other line may only be a `warning: `."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, f"expected exactly one 'error: ' line, got:\n{stderr}"
    noise = [line for line in lines if not line.startswith(("error: ", "warning: "))]
    assert not noise, f"stray lines on stderr:\n{stderr}"
    return errors[0]


@functools.cache
def can_drop_root_powers() -> bool:
    """True when this process is root and setpriv can run a child without DAC override."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*DROP_ROOT_POWERS, "true"], capture_output=True)
    return probe.returncode == 0


# --------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Sources:
    """The session's table and bundle, copied into each case's folder by its setup."""

    table: Path
    bundle: Path


Setup = Callable[[Path, Sources], None]
Fragment = str | tuple[str, ...]  # a tuple: any one of these will do


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, the command line, and what the error must say.

    `setup(tmp, sources)` writes the inputs into `tmp`; `argv` names them relative to `tmp`
    (the working folder), so the fragments can check the names as the user typed them.
    """

    id: str
    setup: Setup
    argv: tuple[str, ...]
    code: int | tuple[int, ...]  # 1: input problem, 2: usage error; a tuple: any of them
    fragments: tuple[Fragment, ...]
    timeout: float = 60  # seconds; the program is killed, and the case fails, after this
    max_seconds: float | None = None  # a limit on the run time, when speed is part of the contract
    fsize_limit: int | None = None  # bytes; simulate a full disk for the writer
    max_memory_mb: float | None = None
    absent: tuple[str, ...] = ()  # text the error line must not hold
    unwritable: bool = False  # run without root's power to ignore folder modes
    marks: tuple = ()

    def param(self):
        marks = list(self.marks)
        if self.unwritable and os.geteuid() == 0 and not can_drop_root_powers():
            marks.append(pytest.mark.skip(reason="running as root, which ignores folder modes, and setpriv cannot drop that power"))
        return pytest.param(self, id=self.id, marks=marks)


def steps(*setups: Setup) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        for each in setups:
            each(tmp, src)

    return setup


def nothing(tmp: Path, src: Sources) -> None:
    pass


def table(name: str = "data.csv") -> Setup:
    """The session's 400-row table ('id', 'small', 'large', 'plain') as `name`."""

    def setup(tmp: Path, src: Sources) -> None:
        shutil.copy(src.table, tmp / name)

    return setup


def model(name: str = "model.flow") -> Setup:
    """The session's bundle (fit on 'small', 'large', 'plain') as `name`."""

    def setup(tmp: Path, src: Sources) -> None:
        shutil.copy(src.bundle, tmp / name)

    return setup


def text(name: str, content: str) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        (tmp / name).write_text(content, encoding="utf-8")

    return setup


def raw(name: str, content: bytes) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        (tmp / name).write_bytes(content)

    return setup


def folder(name: str, mode: int | None = None) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        (tmp / name).mkdir()
        if mode is not None:
            (tmp / name).chmod(mode)

    return setup


def fifo(name: str) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        os.mkfifo(tmp / name)

    return setup


def edited_table(name: str, *edits: Callable[[pd.DataFrame], None]) -> Setup:
    """The session's table with each `edit(frame)` applied (cells are objects: any text fits)."""

    def setup(tmp: Path, src: Sources) -> None:
        frame = pd.read_csv(src.table).astype(object)
        for edit in edits:
            edit(frame)
        frame.to_csv(tmp / name, index=False)

    return setup


def set_cells(column: str, rows: Sequence[int], value) -> Callable[[pd.DataFrame], None]:
    """An edit: `value` into 0-based data `rows` of `column` (data row r is 'row r+1')."""

    def edit(frame: pd.DataFrame) -> None:
        for row in rows:
            frame.loc[row, column] = value

    return edit


def numbers_csv(rows: int, columns: str = "a,b,c", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = [columns] + [",".join(repr(float(v)) for v in rng.standard_normal(len(columns.split(",")))) for _ in range(rows)]
    return "\n".join(lines) + "\n"


def parquet(name: str, make: Callable[[], pa.Table]) -> Setup:
    def setup(tmp: Path, src: Sources) -> None:
        pq.write_table(make(), tmp / name)

    return setup


def nested_only() -> pa.Table:
    """A text column and a list column: nothing a flow can model."""
    return pa.table({
        "id": [f"r{i}" for i in range(50)],
        "vals": pa.array([[float(i), float(i) / 2] for i in range(50)], pa.list_(pa.float64())),
    })


def numbers_and_list() -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table({
        "a": rng.standard_normal(50),
        "b": rng.standard_normal(50),
        "vals": pa.array([[float(i)] * 3 for i in range(50)], pa.list_(pa.float64())),
    })


def garbage(name: str) -> Setup:
    """Random bytes (NULs, invalid UTF-8, stray newlines) under a .csv name."""
    return raw(name, np.random.default_rng(7).bytes(64 << 10))


def one_huge_line(name: str, megabytes: int = 100) -> Setup:
    """A header, then one data line of `megabytes` MB (numbers and commas), written in 1 MB blocks."""

    def setup(tmp: Path, src: Sources) -> None:
        block = b"0.5," * (1 << 18)  # 1 MiB
        with open(tmp / name, "wb") as handle:
            handle.write(b"a,b,c\n")
            for _ in range(megabytes):
                handle.write(block)
            handle.write(b"0.5\n")

    return setup


def bundle_with_short_weights(name: str, *, fix_checksum: bool) -> Setup:
    """The session's bundle with weights.safetensors cut in half, inside an intact zip.

    With `fix_checksum` the manifest's checksum is rewritten to match the cut weights, so
    the damage reaches the tensor parser instead of stopping at the checksum.
    """

    def setup(tmp: Path, src: Sources) -> None:
        with zipfile.ZipFile(src.bundle) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            weights = archive.read("weights.safetensors")
        weights = weights[: len(weights) // 2]
        if fix_checksum:
            manifest["checksums"]["weights.safetensors"] = "sha256:" + hashlib.sha256(weights).hexdigest()
        with zipfile.ZipFile(tmp / name, "w") as archive:
            archive.writestr("manifest.json", json.dumps(manifest))
            archive.writestr("weights.safetensors", weights)

    return setup


BOM = "\ufeff"
WORDS = "name,colour\n" + "".join(f"n{i},c{i}\n" for i in range(30))
SEMICOLONS = numbers_csv(50).replace(",", ";")
DUPLICATES = numbers_csv(50, "a,b,a")


def with_line(csv_text: str, data_row: int, line: str) -> str:
    """`csv_text` with `line` inserted as 1-based data row `data_row`."""
    lines = csv_text.splitlines()
    lines.insert(data_row, line)
    return "\n".join(lines) + "\n"


RAGGED = with_line(numbers_csv(50), 8, "1.0,2.0,3.0,4.0,5.0")  # data row 8 has five fields
EMPTY_COLUMN = "a,b,e\n" + "".join(f"{i},{i * i % 7},\n" for i in range(50))
OTHER_COLUMNS = numbers_csv(50, "x,y,z")


def _duplicate_small(tmp: Path, src: Sources) -> None:
    """The session's table with a second column named 'small' (score input)."""
    header, *rows = src.table.read_text().splitlines()
    lines = [header + ",small"] + [row + ",1.0" for row in rows]
    (tmp / "dup.csv").write_text("\n".join(lines) + "\n")


CASES = [
    # ---- the file itself
    Case("fit-missing-file", nothing, ("fit", "missing.csv", "-o", "out.flow", *FAST), 1, ("missing.csv", "no such file")),
    Case("score-missing-file", model(), ("score", "model.flow", "missing.csv", "-o", "out.csv"), 1, ("missing.csv", "no such file")),
    Case("score-missing-model", table(), ("score", "nomodel.flow", "data.csv", "-o", "out.csv"), 1, ("nomodel.flow",)),
    Case("fit-empty-file", text("empty.csv", ""), ("fit", "empty.csv", "-o", "out.flow", *FAST), 1, ("empty.csv", "empty")),
    Case("score-empty-file", steps(model(), text("empty.csv", "")), ("score", "model.flow", "empty.csv", "-o", "out.csv"), 1,
         ("empty.csv", "empty")),
    Case("fit-binary-garbage-as-csv", garbage("garbage.csv"), ("fit", "garbage.csv", "-o", "out.flow", *FAST), 1, ("garbage.csv",)),
    Case("score-binary-garbage-as-csv", steps(model(), garbage("garbage.csv")),
         ("score", "model.flow", "garbage.csv", "-o", "out.csv"), 1, ("garbage.csv",)),
    # Semicolons are sniffed; forced to commas, one column holds whole lines: the error must
    # name it, so the wrong delimiter shows, and the option that mends it.
    Case("fit-semicolon-file-read-with-commas", text("semi.csv", SEMICOLONS),
         ("fit", "semi.csv", "-o", "out.flow", "--delimiter", ",", *FAST), 1, ("semi.csv", "'a;b;c'", "--delimiter ';'")),
    Case("fit-duplicate-column-names", text("dup.csv", DUPLICATES), ("fit", "dup.csv", "-o", "out.flow", *FAST), 1,
         ("dup.csv", "'a'", "more than once")),
    Case("score-duplicate-model-column", steps(model(), _duplicate_small),
         ("score", "model.flow", "dup.csv", "-o", "out.csv"), 1, ("dup.csv", "'small'")),
    # One 100 MB line must fail at once, in bounded memory, and in the user's terms: not
    # pyarrow's "straddling object ... (try to increase block size?)", an option flowcli lacks.
    Case("fit-one-100MB-line", one_huge_line("wide.csv"), ("fit", "wide.csv", "-o", "out.flow", *FAST), 1, ("wide.csv",),
         timeout=90, max_seconds=60, max_memory_mb=500, absent=("block size", "straddl")),
    Case("score-one-100MB-line", steps(model(), one_huge_line("wide.csv")), ("score", "model.flow", "wide.csv", "-o", "out.csv"), 1,
         ("wide.csv",), timeout=90, max_seconds=60, max_memory_mb=500, absent=("block size", "straddl")),
    Case("fit-ragged-row", text("ragged.csv", RAGGED), ("fit", "ragged.csv", "-o", "out.flow", *FAST), 1,
         ("ragged.csv", "row 8 has 5 fields where the header has 3")),
    Case("score-ragged-row", steps(model(), text("ragged.csv", with_line(numbers_csv(50, "small,large,plain"), 30, "1,2,3,4,5"))),
         ("score", "model.flow", "ragged.csv", "-o", "out.csv"), 1, ("ragged.csv", "row 30 has 5 fields where the header has 3")),
    Case("fit-header-only", text("header.csv", "a,b,c\n"), ("fit", "header.csv", "-o", "out.flow", *FAST), 1,
         ("header.csv", "no data rows")),
    Case("fit-too-few-rows", text("few.csv", numbers_csv(9)), ("fit", "few.csv", "-o", "out.flow", *FAST), 1,
         ("few.csv", "9 rows", "at least 10")),
    # ---- what the cells hold
    Case("fit-no-column-to-model", text("words.csv", WORDS), ("fit", "words.csv", "-o", "out.flow", *FAST), 1,
         ("words.csv", "'name'", "'colour'")),
    Case("fit-parquet-nested-column-only", parquet("nested.parquet", nested_only), ("fit", "nested.parquet", "-o", "out.flow", *FAST), 1,
         ("nested.parquet", "'vals'", "list")),
    Case("fit-parquet-list-column-in-columns", parquet("mixed.parquet", numbers_and_list),
         ("fit", "mixed.parquet", "--columns", "a,vals", "-o", "out.flow", *FAST), 1, ("mixed.parquet", "'vals'", "--columns")),
    # NaN is a missing value (modelled); infinity is no value at all: name its column and row.
    Case("fit-nan-and-inf-cells", edited_table("holes.csv", set_cells("small", [4], "nan"), set_cells("plain", [9], "inf")),
         ("fit", "holes.csv", "-o", "out.flow", *FAST), 1, ("holes.csv", "'plain'", "row 10", "infinite")),
    Case("score-inf-cells", steps(model(), edited_table("holes.csv", set_cells("large", [6, 8], "-inf"))),
         ("score", "model.flow", "holes.csv", "-o", "out.csv"), 1, ("holes.csv", "'large'", "row 7", "infinite")),
    Case("fit-word-in-numeric-column", edited_table("word.csv", set_cells("plain", [2], "oops")),
         ("fit", "word.csv", "-o", "out.flow", *FAST), 1, ("word.csv", "'plain'", "'oops'", "row 3")),
    Case("score-word-in-numeric-column", steps(model(), edited_table("word.csv", set_cells("large", [250], "12 kg"))),
         ("score", "model.flow", "word.csv", "-o", "out.csv"), 1, ("word.csv", "'large'", "'12 kg'", "row 251")),
    Case("fit-all-empty-column-in-columns", text("blank.csv", EMPTY_COLUMN),
         ("fit", "blank.csv", "--columns", "a,e", "-o", "out.flow", *FAST), 1, ("blank.csv", "'e'", ("empty", "missing"))),
    Case("score-model-and-data-differ", steps(model(), text("other.csv", OTHER_COLUMNS)),
         ("score", "model.flow", "other.csv", "-o", "out.csv"), 1, ("other.csv", "'small'", "'large'", "'plain'")),
    Case("score-truncated-weights", steps(table(), bundle_with_short_weights("model.flow", fix_checksum=False)),
         ("score", "model.flow", "data.csv", "-o", "out.csv"), 1, ("model.flow", "checksum")),
    Case("score-truncated-weights-forged-checksum", steps(table(), bundle_with_short_weights("model.flow", fix_checksum=True)),
         ("score", "model.flow", "data.csv", "-o", "out.csv"), 1, ("model.flow", "weights")),
    Case("inspect-a-csv-file", table(), ("inspect", "data.csv"), 1, ("data.csv", "not a flowcli bundle")),
    # ---- options
    Case("fit-columns-missing-column", table(), ("fit", "data.csv", "--columns", "small,nope", "-o", "out.flow", *FAST), 1,
         ("data.csv", "'nope'")),
    Case("fit-columns-text-column", table(), ("fit", "data.csv", "--columns", "small,id", "-o", "out.flow", *FAST), 1,
         ("data.csv", "'id'", "--columns")),
    Case("fit-format-xml", table(), ("fit", "data.csv", "--format", "xml", "-o", "out.flow", *FAST), 2, ("--format", "xml")),
    Case("score-format-xml", steps(model(), table()), ("score", "model.flow", "data.csv", "--format", "xml", "-o", "out.csv"), 2,
         ("--format", "xml")),
    Case("fit-val-fraction-2", table(), ("fit", "data.csv", "--val-fraction", "2", "-o", "out.flow", *FAST), 2, ("--val-fraction",)),
    Case("fit-epochs-0", table(), ("fit", "data.csv", "-o", "out.flow", *FAST, "--epochs", "0"), 2, ("--epochs",)),
    Case("fit-device-tpu", table(), ("fit", "data.csv", "-o", "out.flow", *FAST, "--device", "tpu"), 2, ("--device", "tpu")),
    Case("fit-device-cuda-without-cuda", table(), ("fit", "data.csv", "-o", "out.flow", *FAST, "--device", "cuda"), 1,
         ("--device cuda", "CUDA"), marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),)),
    Case("sample-n-0", model(), ("sample", "model.flow", "-n", "0", "-o", "out.csv"), 2, (("-n", "--num-samples"),)),
    Case("sample-n-minus-5", model(), ("sample", "model.flow", "-n", "-5", "-o", "out.csv"), 2, (("-n", "--num-samples"),)),
    # 10**13 rows of three float64 columns are hundreds of terabytes: refuse at once, as a
    # usage bound (2) or against the destination's free space (1); never start writing.
    Case("sample-n-10e13", model(), ("sample", "model.flow", "-n", str(10**13), "-o", "out.parquet"), (1, 2),
         (("-n", "--num-samples", "10000000000000", "10,000,000,000,000"),), timeout=5),
    # ---- outputs
    Case("fit-output-exists", steps(table(), raw("out.flow", b"an older bundle")),
         ("fit", "data.csv", "-o", "out.flow", *FAST), 1, ("out.flow", "already exists", "--force")),
    Case("score-output-exists", steps(model(), table(), raw("out.csv", b"log_likelihood\n1.0\n")),
         ("score", "model.flow", "data.csv", "-o", "out.csv"), 1, ("out.csv", "already exists", "--force")),
    Case("sample-output-exists", steps(model(), raw("out.parquet", b"keep me")),
         ("sample", "model.flow", "-n", "5", "-o", "out.parquet"), 1, ("out.parquet", "already exists", "--force")),
    Case("fit-output-is-the-input", table(), ("fit", "data.csv", "-o", "data.csv", "--force", *FAST), 1,
         ("data.csv", "overwrite the input")),
    Case("score-output-is-the-input", steps(model(), table()), ("score", "model.flow", "data.csv", "-o", "data.csv", "--force"), 1,
         ("data.csv", "overwrite the input")),
    # A bundle need not be named .flow; named .csv, it could be mistaken for an output.
    Case("score-output-is-the-model", steps(model("model.csv"), table()),
         ("score", "model.csv", "data.csv", "-o", "model.csv", "--force"), 1, ("model.csv", "overwrite the input")),
    Case("score-output-under-missing-folder", steps(model(), table()),
         ("score", "model.flow", "data.csv", "-o", "nowhere/out.csv"), 1, ("nowhere", "does not exist")),
    Case("fit-output-under-missing-folder", table(), ("fit", "data.csv", "-o", "nowhere/deeper/out.flow", *FAST), 1,
         ("nowhere/deeper", "does not exist")),
    Case("sample-output-is-a-folder", steps(model(), folder("outdir.csv")),
         ("sample", "model.flow", "-n", "5", "-o", "outdir.csv", "--force"), 1, ("outdir.csv", "folder")),
    Case("score-output-unknown-suffix", steps(model(), table()), ("score", "model.flow", "data.csv", "-o", "out.txt"), 1,
         ("out.txt", "format")),
    # The advice for an output must be one the user can follow: sample has no --format, and
    # score's --format names the INPUT's format (`score ... -o out.txt --format csv` fails the same way).
    Case("sample-output-unknown-suffix-advice", model(), ("sample", "model.flow", "-n", "5", "-o", "out.txt"), 1,
         ("out.txt", ".csv"), absent=("--format",)),
    Case("score-output-in-unwritable-folder", steps(model(), table(), folder("locked", 0o500)),
         ("score", "model.flow", "data.csv", "-o", "locked/out.csv"), 1, ("locked",), unwritable=True),
    Case("sample-output-in-unwritable-folder", steps(model(), folder("locked", 0o500)),
         ("sample", "model.flow", "-n", "5", "-o", "locked/out.csv"), 1, ("locked",), unwritable=True),
    # A character device: the output format comes from the suffix, so /dev/full is refused
    # before anything is opened. Never with --force: as root, a rename over /dev/full would
    # replace the device (the FIFO case below shows that risk safely).
    Case("score-output-dev-full", steps(model(), table()), ("score", "model.flow", "data.csv", "-o", "/dev/full"), 1,
         ("/dev/full",)),
    # --force replaces files; a FIFO (like /dev/null or /dev/full) is not a file to replace.
    Case("score-output-fifo-with-force", steps(model(), table(), fifo("pipe.csv")),
         ("score", "model.flow", "data.csv", "-o", "pipe.csv", "--force"), 1, ("pipe.csv",)),
    # A full disk, as the writer sees it: RLIMIT_FSIZE makes writes past 4 KiB fail (EFBIG).
    Case("score-disk-full", steps(model(), table()), ("score", "model.flow", "data.csv", "-o", "out.csv"), 1, ("out.csv",),
         fsize_limit=4096),
    Case("sample-disk-full", model(), ("sample", "model.flow", "-n", "100000", "-o", "out.parquet"), 1, ("out.parquet",),
         fsize_limit=64 << 10),
]




@pytest.fixture(scope="module")
def sources(table_csv, bundle_path) -> Sources:
    return Sources(table_csv, bundle_path)


def _tidy(tmp: Path) -> None:
    """Restore folder modes and drop big files, so pytest's kept temporary folders stay small."""
    for path in tmp.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    for path in tmp.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > (1 << 20):
            path.unlink()


def test_case_ids_are_unique():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, sources: Sources):
    case.setup(tmp_path, sources)
    before = fingerprint(tmp_path)
    prefix = DROP_ROOT_POWERS if case.unwritable and os.geteuid() == 0 else ()
    try:
        result = run(*case.argv, cwd=tmp_path, timeout=case.timeout, fsize_limit=case.fsize_limit, prefix=prefix)
        temporaries = part_files(tmp_path)
        after = fingerprint(tmp_path)
    finally:
        _tidy(tmp_path)

    problems = contract_problems(case, result, before, after, temporaries)
    assert not problems, f"{case.id}: exit {result.code}, stderr:\n{result.stderr[-3000:]}\n- " + "\n- ".join(problems)


def contract_problems(case: Case, result: Result, before: dict, after: dict, temporaries: list[str]) -> list[str]:
    """Every way `result` breaks the bad-input contract (all are checked, so a report is whole)."""
    problems = []
    if result.timed_out:
        problems.append(f"still running after {case.timeout} s, then killed")
    if "Traceback" in result.stderr:
        problems.append("a traceback on stderr")
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    if result.code not in codes:
        problems.append(f"exit status {result.code}, expected {' or '.join(map(str, codes))}")
    if result.stdout:
        problems.append(f"stdout is not empty: {result.stdout[:200]!r}")
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} 'error: ' lines on stderr, expected exactly one")
    if [line for line in lines if not line.startswith(("error: ", "warning: "))]:
        problems.append("stderr holds lines other than 'error: ' and 'warning: '")
    line = errors[0] if errors else ""
    for fragment in case.fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        if not any(option in line for option in options):
            problems.append(f"the error line lacks {' or '.join(map(repr, options))}")
    for text in case.absent:
        if text in line:
            problems.append(f"the error line holds {text!r}")
    if temporaries:
        problems.append(f"temporary files left behind: {temporaries}")
    created = sorted(set(after) - set(before) - set(temporaries))
    if created:
        problems.append(f"files created: {created}")
    changed = sorted(name for name in before if after.get(name) != before[name])
    if changed:
        problems.append(f"inputs changed or removed: {changed}")
    if case.max_seconds is not None and result.seconds >= case.max_seconds:
        problems.append(f"took {result.seconds:.1f} s, more than {case.max_seconds} s")
    if case.max_memory_mb is not None and not 0 < result.peak_memory_mb < case.max_memory_mb:
        problems.append(f"peak memory {result.peak_memory_mb:.0f} MB, limit {case.max_memory_mb} MB")
    return problems


# --------------------------------------------------------------------------------- must work
def assert_ok(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 0, (result.code, result.stderr)
    assert not [line for line in result.stderr.splitlines() if line.startswith("error")], result.stderr


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path, sources: Sources):
    """Excel's 'CSV UTF-8' starts with a BOM; the first column must still be called 'small'."""
    frame = pd.read_csv(sources.table)[["small", "large", "plain", "id"]]  # a numeric column first
    (tmp_path / "bom.csv").write_bytes(BOM.encode() + frame.to_csv(index=False).encode())
    before = (tmp_path / "bom.csv").read_bytes()

    assert_ok(run("fit", "bom.csv", "--columns", "small,large,plain", "-o", "bom.flow", "-q", *FAST, cwd=tmp_path))
    fitted = run("inspect", "bom.flow", "--json", cwd=tmp_path)
    assert_ok(fitted)
    assert [c["name"] for c in json.loads(fitted.stdout)["columns"]] == MODEL_COLUMNS

    assert_ok(run("score", "bom.flow", "bom.csv", "--with-input", "-o", "scores.csv", cwd=tmp_path))
    header = (tmp_path / "scores.csv").read_bytes().split(b"\n", 1)[0].decode()
    assert header == "small,large,plain,id,log_likelihood", repr(header)
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert len(scores) == 400 and np.isfinite(scores["log_likelihood"]).all()

    # The session's model (fit without a BOM) scores the BOM file too: 'small' is found.
    assert_ok(run("score", sources.bundle, "bom.csv", "-o", "scores2.csv", cwd=tmp_path))
    assert len(pd.read_csv(tmp_path / "scores2.csv")) == 400
    assert (tmp_path / "bom.csv").read_bytes() == before


def test_unicode_column_names_survive_fit_score_and_sample(tmp_path: Path, sources: Sources):
    names = ["température", "Größe_µm", "値", "名前"]  # three numeric columns, one text
    base = pd.read_csv(sources.table)
    frame = pd.DataFrame({names[0]: base["small"], names[1]: base["large"], names[2]: base["plain"], names[3]: base["id"]})
    frame.to_csv(tmp_path / "ünïcode.csv", index=False)

    fitted = run("fit", "ünïcode.csv", "-o", "ü.flow", *FAST, cwd=tmp_path)
    assert_ok(fitted)
    assert "名前" in fitted.stderr  # the warning names the left-out text column intact

    scored = run("score", "ü.flow", "ünïcode.csv", "--with-input", "-o", "scores.csv", cwd=tmp_path)
    assert_ok(scored)
    header = (tmp_path / "scores.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == ",".join([*names, "log_likelihood"])
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 400

    sampled = run("sample", "ü.flow", "-n", "7", "--seed", "1", cwd=tmp_path)
    assert_ok(sampled)
    sample = pd.read_csv(io.BytesIO(sampled.stdout))
    assert list(sample.columns) == names[:3] and len(sample) == 7

    scored_parquet = run("score", "ü.flow", "ünïcode.csv", "--with-input", "-o", "scores.parquet", cwd=tmp_path)
    assert_ok(scored_parquet)
    assert pq.read_schema(tmp_path / "scores.parquet").names == [*names, "log_likelihood"]
