"""The GPU checks of #4 and #5, as one prepared run for a session that is lent a GPU.

On the device machine (its python3 holds torch with CUDA, pyarrow and the rest):
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/gpu.py --out $OUT/gpu.json
It measures, on 1,000,000 × 16 rows: training samples per second with the default architecture
and a larger one (12 couplings of 2 × 256 units), each with a time-to-quality curve (validation
NLL against seconds); scoring 10,000,000 rows from Parquet to CSV end to end (numpy, on the
machine's cores); and `fit` under torchrun with one process on the GPU (DDP's smoke test).
Here, without a GPU, `--device cpu --rows 20000 --score-rows 100000 --seconds 5` checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from scale import make_table

from flowcli import TabularFlow
from flowcli.files import score_file

DDP_FIT = """
import sys
from pathlib import Path
from flowcli.files import fit_file
model = fit_file(sys.argv[1], Path(sys.argv[2]), force=True, hyperparameters={"device": sys.argv[3], "epochs": 2})
print(model.training_["device"], model.training_["epochs"], file=sys.stderr)
"""


def train(table, device: str, seconds: float, batch_size: int, **architecture) -> dict:
    """Samples per second and the time-to-quality curve of one fit."""
    curve = []
    model = TabularFlow(max_time=seconds, device=device, batch_size=batch_size, patience=10_000, seed=0, **architecture)
    model.fit(table, on_epoch=lambda report: curve.append((round(report.elapsed, 2), report.val_nll)))
    summary = model.training_
    return {
        "architecture": architecture or "default", "batch_size": batch_size, "epochs": summary["epochs"],
        "samples_per_second": summary["epochs"] * summary["rows_train"] / summary["wall_seconds"],
        "best_val_nll": summary["best_val_nll"], "curve_seconds_val_nll": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--score-rows", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget of each architecture")
    parser.add_argument("--batch-size", type=int, default=16_384)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "gpu.json")
    args = parser.parse_args()
    import torch

    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device, "rows": args.rows}
    table = make_table(args.rows)
    results["train"] = [
        train(table, args.device, args.seconds, args.batch_size),
        train(table, args.device, args.seconds, args.batch_size, layers=12, hidden=256),
    ]
    print(json.dumps(results["train"]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bundle = TabularFlow(epochs=1, device=args.device, seed=0).fit(table.slice(0, 50_000)).save(folder / "m.flow")
        with pq.ParquetWriter(folder / "rows.parquet", table.schema) as writer:
            for start in range(0, args.score_rows, args.rows):
                writer.write_table(make_table(min(args.rows, args.score_rows - start), seed=start))
        start = time.perf_counter()
        rows = score_file(bundle, str(folder / "rows.parquet"), str(folder / "scores.csv"))
        seconds = time.perf_counter() - start
        results["score"] = {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds}
        print(json.dumps(results["score"]), flush=True)
        pq.write_table(table.slice(0, 100_000), folder / "ddp.parquet")
        ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                              "--no-python", sys.executable, "-c", DDP_FIT,
                              str(folder / "ddp.parquet"), str(folder / "ddp.flow"), args.device],
                             capture_output=True, text=True, timeout=600)
        results["ddp_smoke"] = {"returncode": ddp.returncode, "stderr_tail": ddp.stderr[-2000:]}
        print(json.dumps(results["ddp_smoke"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
