"""Drawing flow features from a fitted flow: latent draws from its base, mapped back through the
flow in row chunks, kept near the range seen at fit. `TabularFlow.sample_batches` decodes them."""

from __future__ import annotations

import numpy as np

from flowcli.encode.preprocess import Preprocessor
from flowcli.flow.numpy_flow import NumpyRealNVP

MAX_REDRAWS = 10  # draws of the sampled rows that fall far outside the range seen at fit, the first included


def draw_features(flow: NumpyRealNVP, preprocessor: Preprocessor, rng: np.random.Generator, rows: int) -> np.ndarray:
    """`rows` flow features (rows, W) from the model restricted to near the range seen at fit.

    Rows far past it are drawn again rather than clipped: a heavy-tailed base now and then
    reaches far past the data, and clipping piled those rows on the range's edges (0.7 % of a
    Shuttle column's samples, against 0.004 % of its values; 0.04 % when drawn again). After
    MAX_REDRAWS draws the rest are kept, and decoding clips them. Rows kept come out in the order
    drawn. A light-tailed base, normal or a Gaussian mixture, clips every row (a normal base, as all
    bundles before format 4 had, so that a seed gives what it gave).
    """
    if flow.base.light_tailed:
        return flow.features(flow.sample_latent(rng, rows))
    parts, needed = [], rows
    for _ in range(MAX_REDRAWS):
        x = flow.features(flow.sample_latent(rng, needed))
        near = preprocessor.near_range(x)
        parts.append(x[near])
        needed -= int(near.sum())
        if not needed:
            break
    else:
        parts.append(x[~near])
    return np.concatenate(parts)

