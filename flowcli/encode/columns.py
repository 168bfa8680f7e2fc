"""Column encoders: each maps one table column to flow features and back, with its log-weight.

A column becomes `width` real features. The caller supplies noise, uniform on (0, 1), one
value per feature and row:

- Discrete values are dequantized. A level k of frequency f_k maps to g = Φ⁻¹(F_k + f_k·w),
  where F_k is the mass of the levels before it, so a flow that leaves g standard normal gives
  P(k) = f_k exactly. Integers are dequantized as x + w before their continuous transform.
- A missing value is imputed as g = Φ⁻¹(w) and weighted by 1/φ(g), which integrates it out.
  Columns that had missing values at fit also carry an indicator, a two-level discrete feature,
  so the missingness pattern has a probability too.

`encode` returns log|det ∂u/∂x| minus the log-density of the noise it used (the log-weight),
so that log p_flow(u) + log_weight, averaged over noise draws by log-mean-exp, estimates the
log-likelihood of the row: a density for continuous values times a probability for discrete
ones and for the missingness pattern. With no discrete or missing values it is exact.
"""


from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowcli.encode.categorical import CategoricalColumn
from flowcli.encode.dequantize import integrated_out
from flowcli.encode.numeric import NumericColumn

__all__ = ["CategoricalColumn", "NumericColumn", "auxiliary_features", "encoder_from_json", "fit_encoder"]


def auxiliary_features(noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise (N, A) in (0, 1) → standard-normal auxiliary features (N, A) and their log-weights (N,).

    A flow of one feature is a single affine map, so a one-column table gets one auxiliary
    feature that is integrated out like a missing value: p(x) = E_a[p(x, a) / φ(a)].
    """
    a, log_weight = integrated_out(noise)
    return a, log_weight.sum(axis=1)


def encoder_from_json(data: dict) -> NumericColumn | CategoricalColumn:
    kind = data.get("kind")
    if kind in ("continuous", "integer", "datetime"):
        return NumericColumn.from_json(data)
    if kind in ("categorical", "boolean"):
        return CategoricalColumn.from_json(data)
    raise ValueError(f"column kind {kind!r} is not supported by this flowcli version")


def fit_encoder(values: pa.ChunkedArray, name: str, kind: str, source: str) -> NumericColumn | CategoricalColumn:
    """Learn the encoder of one column of kind `kind` from its values at fit."""
    if kind in ("categorical", "boolean"):
        return CategoricalColumn.fit(values, name, kind, source)
    return NumericColumn.fit(values, name, kind, source)
