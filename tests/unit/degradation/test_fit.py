"""fit_sigma recovers known PSF sigmas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.fit import fit_sigma
from degradation.psf import blur, blur_downsample


def _hr(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = blur(rng.random((4, size, size), dtype=np.float32), 0.7)
    assert isinstance(out, np.ndarray)
    return out


def test_recovers_known_sigmas_with_noise() -> None:
    hr = _hr(1)
    truth = np.array([2.0, 2.6, 3.1, 3.7])
    rng = np.random.default_rng(2)
    lr = blur_downsample(hr, truth) + rng.normal(0, 0.003, (4, 64, 64)).astype(np.float32)
    fit = fit_sigma(hr, lr)
    np.testing.assert_allclose(fit.sigma_px, truth, atol=0.05)
    assert fit.evaluations < 40 and all(m < 0.004 for m in fit.mae)


def test_recovers_published_kernel_13_sigmas_on_a_batch() -> None:
    hr = torch.from_numpy(np.stack([_hr(3, 128), _hr(4, 128)]))
    truth = (3.0, 2.9, 2.9, 3.4)
    lr = blur_downsample(hr, truth, kernel_size=13)
    fit = fit_sigma(hr, lr, kernel_size=13)
    np.testing.assert_allclose(fit.sigma_px, truth, atol=0.01)


def test_the_golden_search_goes_below_the_grid_spacing() -> None:
    hr = _hr(5, 128)
    lr = blur_downsample(hr, 1.2345)
    fit = fit_sigma(hr, lr, grid_points=5)  # grid spacing 1.4 px
    np.testing.assert_allclose(fit.sigma_px, 1.2345, atol=0.005)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(DegradationError, match="crop"):
        fit_sigma(np.zeros((4, 64, 64), np.float32), np.zeros((4, 15, 16), np.float32))
