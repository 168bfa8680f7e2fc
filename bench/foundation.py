"""Foundation figures: start-up, and a fit on 50,000 × 8 rows within 60 s.

Run: make bench (or .venv/bin/python bench/foundation.py [--fit-seconds 60]).
Every command runs as a child process; wall time and peak memory (max RSS) come from
os.wait4. Streaming throughput and memory are bench/scale.py's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from docs_page import write_table
from measure import run

FLOWCLI = [sys.executable, "-m", "flowcli"]


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """Eight correlated columns with skew, a curved dependence and a heavy tail."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 8)) @ rng.normal(size=(8, 8)) / 2
    z[:, 1] = z[:, 0] ** 2 + 0.3 * z[:, 1]
    z[:, 2] = np.exp(z[:, 2] / 2)
    z[:, 3] = rng.standard_t(4, rows) + z[:, 4]
    return pa.table({f"x{j}": z[:, j] * 10 ** (j - 4) for j in range(8)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "foundation.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        table = make_table(50_000)
        pa_csv.write_csv(table, folder / "fit.csv")
        pa_csv.write_csv(table.slice(0, 10), folder / "ten.csv")
        bundle = folder / "fit.flow"

        help_seconds = min(run([*FLOWCLI, "--help"])[0] for _ in range(5))
        fit_seconds, fit_rss = run([*FLOWCLI, "fit", str(folder / "fit.csv"), "--max-time", str(args.fit_seconds), "--quiet"])
        described = json.loads(subprocess.run([*FLOWCLI, "inspect", str(bundle), "--json"], capture_output=True, check=True).stdout)
        ten_row_seconds = min(run([*FLOWCLI, "score", str(bundle), str(folder / "ten.csv")])[0] for _ in range(5))

    training = described["training"]
    results = {
        "help_seconds_min": help_seconds,
        "score_10_rows_seconds_min": ten_row_seconds,
        "fit": {
            "rows": 50_000, "columns": 8, "max_time": args.fit_seconds, "wall_seconds": fit_seconds,
            "peak_rss_mib": fit_rss, "epochs": training["epochs"], "stopped": training["stopped"],
            "best_val_nll": training["best_val_nll"], "parameters": described["architecture"]["parameters"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    f = results["fit"]
    rows = [
        (f"measure (2-core machine, bench/foundation.py, {datetime.date.today()})", "result"),
        ("---", "---"),
        ("`flowcli --help` (min of 5)", f"{results['help_seconds_min']:.3f} s"),
        ("`flowcli score` on 10 rows (min of 5)", f"{results['score_10_rows_seconds_min']:.2f} s"),
        (f"fit 50,000 × 8, `--max-time {args.fit_seconds:g}`",
         f"{f['epochs']} epochs (stopped by {f['stopped']}), best validation NLL {f['best_val_nll']:.3f} nats/row, "
         f"{f['wall_seconds']:.0f} s, peak {f['peak_rss_mib']:.0f} MiB"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    write_table("index", "bench/foundation.py", table)


if __name__ == "__main__":
    main()
