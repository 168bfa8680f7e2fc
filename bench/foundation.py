"""Foundation figures: start-up, fit on 50,000 × 8 within 60 s, and scoring 1,000,000 × 8 from CSV.

Run: make bench (or .venv/bin/python bench/foundation.py [--repeats 3] [--fit-seconds 60]).
Every command runs as a child process; wall time and peak memory (max RSS) come from
os.wait4. Scoring is reported beside an I/O floor, pyarrow alone reading the same CSV and
writing one float column, measured in the same run; figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from readme_table import replace_in_readme

FLOWCLI = [sys.executable, "-m", "flowcli"]
FLOOR = """
import sys, pyarrow as pa, pyarrow.csv as csv
table = csv.read_csv(sys.argv[1])
csv.write_csv(pa.table({"log_likelihood": table.column(0)}), sys.argv[2])
"""


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """Eight correlated columns with skew, a curved dependence and a heavy tail."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 8)) @ rng.normal(size=(8, 8)) / 2
    z[:, 1] = z[:, 0] ** 2 + 0.3 * z[:, 1]
    z[:, 2] = np.exp(z[:, 2] / 2)
    z[:, 3] = rng.standard_t(4, rows) + z[:, 4]
    return pa.table({f"x{j}": z[:, j] * 10 ** (j - 4) for j in range(8)})


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one child process; fails loudly if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-seconds", type=float, default=60.0)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "foundation.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        big = make_table(args.score_rows)
        pa_csv.write_csv(big.slice(0, 50_000), folder / "fit.csv")
        pa_csv.write_csv(big.slice(0, 10), folder / "ten.csv")
        pa_csv.write_csv(big, folder / "score.csv")
        bundle = folder / "fit.flow"

        help_seconds = min(run([*FLOWCLI, "--help"])[0] for _ in range(5))
        fit_seconds, fit_rss = run([*FLOWCLI, "fit", str(folder / "fit.csv"), "--max-time", str(args.fit_seconds), "--quiet"])
        described = json.loads(subprocess.run([*FLOWCLI, "inspect", str(bundle), "--json"], capture_output=True, check=True).stdout)
        ten_row_seconds = min(run([*FLOWCLI, "score", str(bundle), str(folder / "ten.csv")])[0] for _ in range(5))

        score, floor = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            score.append(run([*FLOWCLI, "score", str(bundle), str(folder / "score.csv"), "-o", str(folder / "s.csv"), "--force"]))
            floor.append(run([sys.executable, "-c", FLOOR, str(folder / "score.csv"), str(folder / "floor.csv")]))

    training = described["training"]
    results = {
        "help_seconds_min": help_seconds,
        "score_10_rows_seconds_min": ten_row_seconds,
        "fit": {
            "rows": 50_000, "columns": 8, "max_time": args.fit_seconds, "wall_seconds": fit_seconds,
            "peak_rss_mib": fit_rss, "epochs": training["epochs"], "stopped": training["stopped"],
            "best_val_nll": training["best_val_nll"], "parameters": described["architecture"]["parameters"],
        },
        "score": {
            "rows": args.score_rows, "columns": 8, "repeats": args.repeats,
            "flowcli_seconds_median": statistics.median(s for s, _ in score),
            "flowcli_peak_rss_mib_median": statistics.median(m for _, m in score),
            "floor_seconds_median": statistics.median(s for s, _ in floor),
            "floor_peak_rss_mib_median": statistics.median(m for _, m in floor),
            "ratio_to_floor_median": statistics.median(s / f for (s, _), (f, _) in zip(score, floor)),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, args)
    print(table)
    replace_in_readme("bench/foundation.py", table)


def markdown_table(results: dict, args: argparse.Namespace) -> str:
    s, f = results["score"], results["fit"]
    rows = [
        (f"measure (2-core machine, bench/foundation.py, {datetime.date.today()})", "result"),
        ("---", "---"),
        ("`flowcli --help` (min of 5)", f"{results['help_seconds_min']:.3f} s"),
        ("`flowcli score` on 10 rows (min of 5)", f"{results['score_10_rows_seconds_min']:.2f} s"),
        (f"fit 50,000 × 8, `--max-time {args.fit_seconds:g}`",
         f"{f['epochs']} epochs (stopped by {f['stopped']}), best validation NLL {f['best_val_nll']:.3f} nats/row, peak {f['peak_rss_mib']:.0f} MiB"),
        (f"score {args.score_rows:,} × 8 CSV (median of {args.repeats})",
         f"{s['flowcli_seconds_median']:.2f} s, peak {s['flowcli_peak_rss_mib_median']:.0f} MiB"),
        ("pyarrow floor: read + write one column", f"{s['floor_seconds_median']:.2f} s, peak {s['floor_peak_rss_mib_median']:.0f} MiB"),
        ("score / floor (median ratio)", f"{s['ratio_to_floor_median']:.1f}×"),
    ]
    return "\n".join(f"| {a} | {b} |" for a, b in rows)


if __name__ == "__main__":
    main()
