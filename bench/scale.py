"""Streaming figures: score and sample throughput on 1,000,000 × 16 rows, CSV and Parquet, each
beside a pyarrow floor, and the peak memory of scoring 100,000, 1,000,000 and 10,000,000 rows.

Run: make bench-scale (or .venv/bin/python bench/scale.py [--repeats 3] [--memory-rows 10000000]).
Every command runs as a child process; wall time and peak memory (max RSS) come from os.wait4.
A floor does the same I/O alone: for score, pyarrow reads the same file and writes one float
column as CSV; for sample, numpy draws as many normal values and pyarrow writes them. flowcli
and its floor run interleaved, so that both see the same load; the figures are medians over the
repeats, and each ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from docs_page import write_table
from measure import run

FLOWCLI = [sys.executable, "-m", "flowcli"]
COLUMNS = 16
MEMORY_ROWS = (100_000, 1_000_000)  # then --memory-rows
READ_FLOOR = """
import sys, pyarrow as pa, pyarrow.csv as csv, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1]) if sys.argv[1].endswith(".parquet") else csv.read_csv(sys.argv[1])
csv.write_csv(pa.table({"log_likelihood": table.column(0)}), sys.argv[2])
"""
WRITE_FLOOR = """
import sys, numpy as np, pyarrow as pa, pyarrow.csv as csv, pyarrow.parquet as pq
rows, columns, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x = np.random.default_rng(0).standard_normal((rows, columns))
table = pa.table({f"x{j}": x[:, j] for j in range(columns)})
pq.write_table(table, path) if path.endswith(".parquet") else csv.write_csv(table, path)
"""


def make_table(rows: int, seed: int = 0, integers: bool = False) -> pa.Table:
    """Sixteen correlated columns, one of them curved on another and one log-normal; with
    `integers`, each times 10 rounded to a whole number (counts, scored over their cells)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, COLUMNS)) @ np.random.default_rng(0).normal(size=(COLUMNS, COLUMNS)) / 3
    z[:, 1] = z[:, 0] ** 2 + 0.3 * z[:, 1]
    z[:, 2] = np.exp(z[:, 2] / 2)
    if integers:
        z = np.round(10 * z).astype(np.int64)
    return pa.table({f"x{j}": z[:, j] for j in range(COLUMNS)})


def write_csv(path: Path, rows: int, piece: int = 1_000_000) -> None:
    """A CSV of `rows` rows of `make_table`, written a million rows at a time."""
    with pa_csv.CSVWriter(path, make_table(1).schema) as writer:
        for start in range(0, rows, piece):
            writer.write_table(make_table(min(piece, rows - start), seed=start))


def paired(flowcli: list[str], floor: list[str], repeats: int) -> dict:
    """Medians of flowcli's and the floor's seconds and peaks, and of the per-repeat ratio."""
    runs = [(run(flowcli), run(floor)) for _ in range(repeats)]  # interleaved
    return {
        "flowcli_seconds": statistics.median(f[0] for f, _ in runs),
        "flowcli_peak_mib": statistics.median(f[1] for f, _ in runs),
        "floor_seconds": statistics.median(g[0] for _, g in runs),
        "ratio": statistics.median(f[0] / g[0] for f, g in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory-rows", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "scale.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        table = make_table(args.rows)
        pa_csv.write_csv(table.slice(0, 20_000), folder / "fit.csv")
        pa_csv.write_csv(table, folder / "rows.csv")
        pq.write_table(table, folder / "rows.parquet")
        integers = make_table(args.rows, integers=True)
        pq.write_table(integers, folder / "integers.parquet")
        pq.write_table(integers.slice(0, 20_000), folder / "fit-integers.parquet")
        bundle, out = folder / "fit.flow", str(folder / "out")
        for name, fitted in (("fit.csv", bundle), ("fit-integers.parquet", folder / "integers.flow")):  # default architecture
            run([*FLOWCLI, "fit", str(folder / name), "-o", str(fitted), "--max-time", "20", "--quiet"])

        results = {"rows": args.rows, "columns": COLUMNS}
        for fmt in ("csv", "parquet"):
            data = str(folder / f"rows.{fmt}")
            results[f"score {fmt}"] = paired([*FLOWCLI, "score", str(bundle), data, "-o", out + ".csv", "--force"],
                                             [sys.executable, "-c", READ_FLOOR, data, out + ".csv"], args.repeats)
        data = str(folder / "integers.parquet")
        results["score integers"] = paired([*FLOWCLI, "score", str(folder / "integers.flow"), data, "-o", out + ".csv", "--force"],
                                           [sys.executable, "-c", READ_FLOOR, data, out + ".csv"], args.repeats)
        for fmt in ("csv", "parquet"):
            target = f"{out}.{fmt}"
            results[f"sample {fmt}"] = paired(
                [*FLOWCLI, "sample", str(bundle), "-n", str(args.rows), "--seed", "0", "-o", target, "--force"],
                [sys.executable, "-c", WRITE_FLOOR, str(args.rows), str(COLUMNS), target], args.repeats)

        memory = {}
        for rows in MEMORY_ROWS + (args.memory_rows,):
            data = folder / f"memory{rows}.csv"
            write_csv(data, rows)
            seconds, peak = run([*FLOWCLI, "score", str(bundle), str(data), "-o", out + ".csv", "--force"])
            memory[rows] = {"seconds": seconds, "peak_mib": peak}
            data.unlink()
        results["score memory"] = memory

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, args)
    print(table)
    write_table("scale", "bench/scale.py", table)
    write_table("README", "bench/scale.py", readme_rates(results))


def readme_rates(results: dict) -> str:
    """The README's sentence on scoring and sampling rates."""
    def rate(task: str) -> str:
        return f"{results['rows'] / results[task]['flowcli_seconds']:,.0f}"

    return (f"On two cores, `score` reads a Parquet table of {results['columns']} continuous columns at "
            f"{rate('score parquet')} rows a second and of {results['columns']} integer columns at "
            f"{rate('score integers')} (integers, categories and missing values are averaged over eight noise "
            f"points per row), and `sample` writes {rate('sample parquet')} rows a second to Parquet "
            "([scale](docs/benchmarks/scale.md)).")


def markdown_table(results: dict, args: argparse.Namespace) -> str:
    rows = [
        (f"{args.rows:,} × {COLUMNS} rows (2-core machine, bench/scale.py, {datetime.date.today()}, "
         f"median of {args.repeats})", "flowcli", "floor", "flowcli / floor"),
        ("---", "---", "---", "---"),
    ]
    for task in ("score csv", "score parquet", "score integers", "sample csv", "sample parquet"):
        figures = results[task]
        verb, fmt = task.split()
        what = (f"`{verb}` {'from' if verb == 'score' else 'to'} {'CSV' if fmt == 'csv' else 'Parquet'}" if fmt != "integers"
                else f"`score` from Parquet, {COLUMNS} integer columns")
        rows.append((what, f"{figures['flowcli_seconds']:.2f} s ({args.rows / figures['flowcli_seconds']:,.0f} rows/s), "
                           f"peak {figures['flowcli_peak_mib']:.0f} MiB",
                     f"{figures['floor_seconds']:.2f} s", f"{figures['ratio']:.1f}×"))
    memory = results["score memory"]
    peaks = [memory[rows]["peak_mib"] for rows in MEMORY_ROWS + (args.memory_rows,)]
    rows.append((f"`score` CSV peak memory at {' / '.join(f'{n:,}' for n in MEMORY_ROWS + (args.memory_rows,))} rows",
                 " / ".join(f"{peak:.0f}" for peak in peaks) + f" MiB ({args.memory_rows / memory[args.memory_rows]['seconds']:,.0f} rows/s "
                 f"at {args.memory_rows:,})", "", ""))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


if __name__ == "__main__":
    main()
