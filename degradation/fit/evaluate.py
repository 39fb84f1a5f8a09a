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

#: The statistical rows of Table 2: the gamma model's per-band percentiles, as in the paper.
STATISTICAL_PERCENTILES = (10, 25, 50, 75, 90)
#: The rows of Table 2, in order. ``statistical_pNN``: the statistical method with every
#: band's gamma at the NN-th percentile of the model; ``statistical`` alone is the Degrader's
#: default (p50).
TABLE2_METHODS = (
    "raw",
    *(f"statistical_p{p}" for p in STATISTICAL_PERCENTILES),
    "deterministic",
    "variational",
)
#: Noise of the S2-like images: ``simple`` (Gaussian, the paper's dataloaders) or ``matrix``
#: (the model's reflectance-to-noise matrix).
NOISE_MODELS = ("simple", "matrix")

#: A column of Table 2: ``metric(prediction, reference)`` on one pair's [C, h, w] arrays.
Metric = Callable[[np.ndarray, np.ndarray], float]


def table2(
    model: DegradationModel,
    chips: Sequence[PairChip],
    metrics: Mapping[str, Metric],
    *,
    methods: Sequence[str] = TABLE2_METHODS,
    seed: int = 0,
    noise: str = "simple",
) -> dict[str, dict[str, float]]:
    """Each method's S2-like LR of every chip's HR, scored against the chip's LR.

    Every metric is computed per chip (prediction as float64) and averaged over the chips.
    Methods whose network the model lacks are left out. The Degrader adds noise with a
    per-chip seed (:func:`degradation.pipeline.sample_seed`): the simple Gaussian model by
    default, as the paper's dataloaders, or the model's noise matrix.

    Args:
        model: the model to evaluate.
        chips: the pairs to score on.
        metrics: the columns, name -> metric, in the order of the table.
        methods: the rows: Degrader modes, or ``statistical_pNN`` for the statistical method
            at the NN-th gamma percentile.
        seed: the run seed of the noise draws.
        noise: ``simple`` or ``matrix`` (:data:`NOISE_MODELS`).

    Returns:
        ``{method: {column: mean over chips}}``.

    Raises:
        DegradationError: no chips or no metrics, an unknown row or noise model.
    """
    if not chips or not metrics:
        raise DegradationError("Table 2 needs at least one pair and one metric; give both")
    if noise not in NOISE_MODELS:
        raise DegradationError(f"noise must be one of {NOISE_MODELS}, got {noise!r}")
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        if method == "deterministic" and model.unet is None:
            continue
        if method == "variational" and model.vae is None:
            continue
        overrides: dict[str, object] = {}
        mode = method
        if method.startswith("statistical_p"):
            try:
                overrides["percentile"] = float(method.removeprefix("statistical_p"))
            except ValueError:
                raise DegradationError(f"unknown Table 2 row {method!r}") from None
            mode = "statistical"
        if noise == "simple":
            overrides["noise_matrix"] = None
        degrader = Degrader.from_model(model, mode=mode, **overrides)
        rows = []
        for i, c in enumerate(chips):
            pred = np.asarray(degrader(c.hr, sample_seed(seed, i)).lr, dtype=np.float64)
            rows.append([metric(pred, c.lr) for metric in metrics.values()])
        mean = np.mean(np.array(rows), axis=0)
        out[method] = dict(zip(metrics, map(float, mean), strict=True))
    return out
