"""Categorical treatments compared: flowcli's normal-CDF intervals against equal-width intervals.

Run: make bench-categorical (or .venv-bench/bin/python bench/categorical.py --budget 30); it
needs the tables of bench/fidelity.py.

Both treatments dequantize a discrete column into one flow feature, and both give an exact
lower bound of the log-probability of its level. flowcli's gives level k the slice of the
feature whose standard-normal probability is the level's frequency f_k at fit, so an identity
flow already scores each level log f_k; the other slices [-2, 2] into K equal widths, as
uniform dequantization of ordinal codes does, and leaves the frequencies to the flow. Every
discrete level set is switched (categories, booleans, missingness indicators), in this process
only. Each table's training split (80 %) is fit with the same budget; reported are the held-out
negative log-likelihood (nats per row, its mean and its median, as a few held-out rows far
outside the training range can dominate the mean; rows with a level never seen at fit are left
out, the same for both), the detection AUC of as many sampled rows against the held-out ones (0.5 is
perfect), and the mean total-variation distance between sampled and real level frequencies
over the columns flowcli models as categorical or boolean.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from docs_page import write_table
from fidelity import ROWS, detection_auc, level_shares, load_tables

from flowcli import TabularFlow
from flowcli.encode.dequantize import Levels

SPAN = 4.0  # equal-width slices cover [-2, 2]


@contextlib.contextmanager
def equal_width_levels() -> Iterator[None]:
    """Levels whose slices have equal widths on the feature, whatever the frequencies."""
    encode, decode = Levels.encode, Levels.decode

    def encode_equal(self: Levels, index: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = SPAN / len(self.probabilities)
        seen = index >= 0
        g = -SPAN / 2 + (np.where(seen, index, 0) + w) * width
        return g, np.where(seen, math.log(width), -np.inf)

    def decode_equal(self: Levels, g: np.ndarray) -> np.ndarray:
        width = SPAN / len(self.probabilities)
        return np.clip(np.floor((g + SPAN / 2) / width), 0, len(self.probabilities) - 1).astype(np.int64)

    Levels.encode, Levels.decode = encode_equal, decode_equal
    try:
        yield
    finally:
        Levels.encode, Levels.decode = encode, decode


TREATMENTS = {"normal-CDF intervals (flowcli)": contextlib.nullcontext, "equal-width intervals": equal_width_levels}


def level_distance(real: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str]) -> float:
    """Mean over `columns` of the total-variation distance between real and sampled level frequencies."""
    gaps = [0.5 * level_shares(real[name]).sub(level_shares(synthetic[name]), fill_value=0).abs().sum() for name in columns]
    return float(np.mean(gaps)) if gaps else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of fitting for each treatment and table")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "categorical.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    results = []
    for name, table in load_tables().items():
        table = table.sample(min(ROWS, len(table)), random_state=0).reset_index(drop=True)
        train, test = table.iloc[: int(0.8 * len(table))].reset_index(drop=True), table.iloc[int(0.8 * len(table)):]
        for treatment, switch in TREATMENTS.items():
            with switch(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = TabularFlow(max_time=args.budget, seed=0).fit(train)
                scores = model.score_samples(test)
                synthetic = model.sample(len(train), seed=0)
            finite = np.isfinite(scores)
            discrete = [column.name for column in model.preprocessor_.columns if column.kind in ("categorical", "boolean")]
            row = {"table": name, "treatment": treatment, "test_nll": float(-scores[finite].mean()),
                   "test_nll_median": float(-np.median(scores[finite])),
                   "rows_left_out": int((~finite).sum()), "detection_auc": detection_auc(test, synthetic.iloc[: len(test)]),
                   "level_distance": level_distance(train, synthetic, discrete), "epochs": model.training_["epochs"]}
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results, args.budget)
    print(table)
    write_table("categorical", "bench/categorical.py", table)


def markdown(results: list[dict], budget: float) -> str:
    lines = [f"| table | treatment ({budget:g} s each, {datetime.date.today()}) | held-out NLL: mean | median | detection AUC | level TV distance | epochs |",
             "|---|---|---|---|---|---|---|"]
    for row in results:
        lines.append(f"| {row['table']} | {row['treatment']} | {row['test_nll']:,.3f} | {row['test_nll_median']:.3f} | {row['detection_auc']:.3f} | "
                     f"{row['level_distance']:.3f} | {row['epochs']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
