"""CSV reading: what sniffing costs, and streaming `score` throughput on plain CSV against a
baseline checkout (the commit before sniffing, or any other), run interleaved.

Run: .venv/bin/python bench/csv_read.py --baseline /path/to/older/checkout [--rows 1000000] [--repeats 3]
(make one with `git worktree add /tmp/base <commit>`). Sniffing is timed in process on the first
block of each export of one table (as tests/test_csv_dialects.py makes them), the maximum over
the exports reported. Throughput: `score` on a CSV of --rows × 16 columns as child processes
(bench/measure.py), flowcli and the baseline alternating; medians over the repeats, and the
median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table
from measure import run
from scale import write_csv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flowcli import TabularFlow  # noqa: E402
from flowcli.table.dialect import SNIFF_BYTES, CsvOptions, sniff  # noqa: E402
from flowcli.table.io import read_table  # noqa: E402

EXPORTS = {"comma": {}, "semicolon, decimal comma": dict(sep=";", decimal=","), "tab": dict(sep="\t"),
           "pipe": dict(sep="|"), "CRLF": dict(lineterminator="\r\n"), "UTF-8 BOM": dict(encoding="utf-8-sig"),
           "UTF-16": dict(encoding="utf-16"), "all quoted": dict(quoting=1)}


def sniff_milliseconds(folder: Path, rows: int = 5_000) -> dict[str, float]:
    """The median of 20 sniffs of each export's first block, in milliseconds."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"price": rng.lognormal(3, 1, rows).round(2), "rating": rng.integers(1, 11, rows),
                          "region": rng.choice(["north", "south", "east", "west"], rows), "score": rng.normal(size=rows)})
    times = {}
    for name, arguments in EXPORTS.items():
        path = folder / "export.csv"
        table.to_csv(path, index=False, **arguments)
        block = path.read_bytes()[:SNIFF_BYTES]
        runs = []
        for _ in range(20):
            start = time.perf_counter()
            sniff(block, CsvOptions(), str(path), whole=len(block) < SNIFF_BYTES)
            runs.append(1000 * (time.perf_counter() - start))
        times[name] = statistics.median(runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of flowcli to compare against")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true", help="print the table, leave docs/benchmarks/csv.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sniffs = sniff_milliseconds(folder)
        data = folder / "rows.csv"
        write_csv(data, args.rows)
        bundle = folder / "model.flow"
        TabularFlow(epochs=1, seed=0).fit(read_table(str(data)).slice(0, 20_000)).save(bundle)
        command = ["-m", "flowcli", "score", str(bundle), str(data), "-o", str(folder / "out.csv"), "--force", "-q"]
        seconds = {"flowcli": [], "baseline": []}
        os.chdir(folder)  # `python -m` puts the working folder first on sys.path: neither tree may be there
        for _ in range(args.repeats):
            for name, tree in (("baseline", args.baseline), ("flowcli", ROOT)):
                os.environ["PYTHONPATH"] = str(tree)  # the child imports this tree's flowcli
                seconds[name].append(run([sys.executable, *command])[0])
        os.environ.pop("PYTHONPATH")
        os.chdir(ROOT)
    ratios = [new / old for new, old in zip(seconds["flowcli"], seconds["baseline"])]
    lines = ["| export | sniff, ms (median of 20) |", "|---|---|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in sniffs.items()]
    lines += ["", f"`score` of {args.rows:,} × 16 rows of plain CSV, {args.repeats} interleaved repeats:", "",
              "| tree | median seconds | rows per second |", "|---|---|---|"]
    for name in ("baseline", "flowcli"):
        median = statistics.median(seconds[name])
        lines.append(f"| {name} | {median:.2f} | {args.rows / median:,.0f} |")
    lines += ["", f"flowcli / baseline time: median ratio {statistics.median(ratios):.3f} "
              f"(per repeat: {', '.join(f'{r:.3f}' for r in ratios)})."]
    table = "\n".join(lines)
    print(table)
    if not args.no_docs:
        write_table("csv", "bench/csv_read.py", table)


if __name__ == "__main__":
    main()
