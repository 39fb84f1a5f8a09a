"""SEN2NAIP's Table 2: each method's Sentinel-2-like LR against the real LR of each pair.

The metric functions are the caller's (``harvest`` passes those of :mod:`harvest.metrics`):
this package never imports harvest, and the table should score with the same code as the rest
of the project's evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from degradation.errors import DegradationError
from degradation.fit.pairs import PairChip
from degradation.pipeline import Degrader, sample_seed
from degradation.pretrained import DegradationModel

#: The rows of Table 2, in order.
TABLE2_METHODS = ("raw", "statistical", "deterministic", "variational")

#: A column of Table 2: ``metric(prediction, reference)`` on one pair's [C, h, w] arrays.
Metric = Callable[[np.ndarray, np.ndarray], float]


def table2(
    model: DegradationModel,
    chips: Sequence[PairChip],
    metrics: Mapping[str, Metric],
    *,
    methods: Sequence[str] = TABLE2_METHODS,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each method's S2-like LR of every chip's HR, scored against the chip's LR.

    Every metric is computed per chip (prediction as float64) and averaged over the chips.
    Methods whose network the model lacks are left out. The Degrader adds noise (the model's
    noise matrix) with a per-chip seed (:func:`degradation.pipeline.sample_seed`).

    Args:
        model: the model to evaluate.
        chips: the pairs to score on.
        metrics: the columns, name -> metric, in the order of the table.
        methods: the rows (Degrader modes).
        seed: the run seed of the noise draws.

    Returns:
        ``{method: {column: mean over chips}}``.

    Raises:
        DegradationError: no chips or no metrics.
    """
    if not chips or not metrics:
        raise DegradationError("Table 2 needs at least one pair and one metric; give both")
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        if method == "deterministic" and model.unet is None:
            continue
        if method == "variational" and model.vae is None:
            continue
        degrader = Degrader.from_model(model, mode=method)
        rows = []
        for i, c in enumerate(chips):
            pred = np.asarray(degrader(c.hr, sample_seed(seed, i)).lr, dtype=np.float64)
            rows.append([metric(pred, c.lr) for metric in metrics.values()])
        mean = np.mean(np.array(rows), axis=0)
        out[method] = dict(zip(metrics, map(float, mean), strict=True))
    return out
