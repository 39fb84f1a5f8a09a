"""Fitting degradation models on LR/HR pairs (no file I/O: pairs come in as arrays).

Modules:
    psf: ``fit_sigma``, the per-band PSF sigma minimising MAE against observed LR.
    pairs: ``PairChip``, the pure record every fit takes (arrays, scene id, shift estimate), and
        ``registration_shifts`` (per scene, per chip or none).
    registered: ``RegisteredPSF`` (blur, then bilinear sampling at shifted positions) and
        ``fit_pairs``: gamma per chip, sigma and shift per scene, noise, alternated.
    networks: ``train_networks``, the U-Net and the histogram VAE trained on pairs (CPU).
    evaluate: SEN2NAIP's Table 2 of a model on pairs, with the caller's metric functions.
"""

from degradation.fit.evaluate import (
    NOISE_MODELS,
    STATISTICAL_PERCENTILES,
    TABLE2_METHODS,
    Metric,
    table2,
)
from degradation.fit.networks import TRAINABLE, train_networks
from degradation.fit.pairs import SHIFT_MODES, PairChip, registration_shifts
from degradation.fit.psf import SigmaFit, fit_sigma
from degradation.fit.registered import FitResult, RegisteredPSF, SceneFit, fit_pairs

__all__ = [
    "SHIFT_MODES",
    "TABLE2_METHODS",
    "TRAINABLE",
    "FitResult",
    "Metric",
    "PairChip",
    "RegisteredPSF",
    "SceneFit",
    "SigmaFit",
    "fit_pairs",
    "fit_sigma",
    "registration_shifts",
    "table2",
    "NOISE_MODELS",
    "STATISTICAL_PERCENTILES",
    "train_networks",
]
