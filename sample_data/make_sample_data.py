"""Make sample_data/households.{csv,parquet}: a small, real-looking table of daily household energy use.

Run from the repository root: python sample_data/make_sample_data.py
The columns depend on each other non-linearly (heating falls with temperature, electricity
grows with occupants and floor area), and `meter_id` is an identifier that fit leaves out.
"""

from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 5_000
FOLDER = Path(__file__).parent


def make_table(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = rng.integers(0, 365, rows)
    outdoor_temp_c = 11 + 9 * np.sin(2 * np.pi * (day - 110) / 365) + rng.normal(0, 3, rows)
    humidity_pct = np.clip(78 - 1.1 * outdoor_temp_c + rng.normal(0, 8, rows), 15, 100)
    wind_speed_ms = rng.gamma(2.0, 1.8, rows)
    occupants = rng.choice([1, 2, 3, 4, 5, 6], rows, p=[0.28, 0.34, 0.15, 0.14, 0.06, 0.03])
    floor_area_m2 = np.exp(rng.normal(4.45 + 0.08 * occupants, 0.3))
    insulation = rng.uniform(0.6, 1.4, rows)
    heating_kwh = (
        np.maximum(0, 17 - outdoor_temp_c) * floor_area_m2 / 60 * insulation * (1 + 0.04 * wind_speed_ms)
        + rng.gamma(1.5, 0.6, rows)
    )
    electricity_kwh = np.exp(rng.normal(np.log(3 + 1.6 * occupants + 0.015 * floor_area_m2), 0.18))
    return pd.DataFrame({
        "meter_id": [f"M{100000 + i}" for i in rng.permutation(rows)],
        "outdoor_temp_c": outdoor_temp_c.round(1),
        "humidity_pct": humidity_pct.round(1),
        "wind_speed_ms": wind_speed_ms.round(2),
        "occupants": occupants,
        "floor_area_m2": floor_area_m2.round(1),
        "heating_kwh": heating_kwh.round(2),
        "electricity_kwh": electricity_kwh.round(2),
    })


if __name__ == "__main__":
    table = make_table()
    table.to_csv(FOLDER / "households.csv", index=False)
    table.to_parquet(FOLDER / "households.parquet", index=False)
    print(f"wrote {len(table)} rows to {FOLDER}/households.csv and .parquet")
