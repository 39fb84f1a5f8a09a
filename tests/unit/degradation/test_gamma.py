"""Statistical gamma harmonisation: convention, per-pair fit, the normal model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.harmonize.gamma import (
    SEN2NAIP_GAMMA,
    SEN2NAIP_GAMMA_MEAN,
    GammaModel,
    apply_gamma,
    apply_gamma_table,
    fit_gamma,
    gamma_table,
)
from degradation.psf import GaussianPSF, blur, blur_downsample


def test_power_law_convention() -> None:
    x = np.full((2, 2, 2), 0.5, dtype=np.float32)
    x[1] = 0.25
    out = apply_gamma(x, (1 / 3, 0.5))
    np.testing.assert_allclose(np.asarray(out)[0], 0.5**3, rtol=1e-6)  # x ** (1 / gamma)
    np.testing.assert_allclose(np.asarray(out)[1], 0.25**2, rtol=1e-6)
    neg = apply_gamma(np.array([[[-0.1]]], dtype=np.float32), 0.4)
    assert np.asarray(neg)[0, 0, 0] == 0.0
    t = torch.rand(3, 4, 5, 5)
    t[0, 0, 0, 0] = 0.0
    t.requires_grad_(True)
    y = apply_gamma(t, np.full((3, 4), 0.5))
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, t.detach() ** 2)
    y.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()
    torch.testing.assert_close(t.grad, 2 * t.detach())
    with pytest.raises(DegradationError, match="> 0"):
        apply_gamma(x, 0.0)


def _hr(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = blur(rng.beta(2, 3, (4, 256, 256)).astype(np.float32), 1.5)
    assert isinstance(out, np.ndarray)
    return out


def test_recovers_known_gammas_through_blur_and_noise() -> None:
    hr = _hr(0)
    truth = np.array([0.30, 0.35, 0.40, 0.50])
    rng = np.random.default_rng(1)
    lr = blur_downsample(apply_gamma(hr, truth), (3.0, 2.9, 2.9, 3.4))
    lr = lr + rng.normal(0, 0.003, (4, 64, 64)).astype(np.float32)
    # Default reduction (antialiased bilinear) is not the true PSF: still within 0.02.
    np.testing.assert_allclose(fit_gamma(hr, lr), truth, atol=0.02)
    # With the true PSF the fit is nearly exact.
    exact = fit_gamma(hr, lr, reduce=GaussianPSF((3.0, 2.9, 2.9, 3.4)))
    np.testing.assert_allclose(exact, truth, atol=0.003)


def test_batched_fit_returns_one_gamma_per_pair_and_band() -> None:
    hr = np.stack([_hr(2), _hr(3)])
    truth = np.array([[0.3, 0.32, 0.36, 0.45], [0.4, 0.38, 0.33, 0.6]])
    lr = apply_gamma(hr, truth)
    got = fit_gamma(hr, lr)
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, truth, atol=1e-3)


def test_percentile_is_per_band_marginal() -> None:
    np.testing.assert_allclose(SEN2NAIP_GAMMA.percentile(50), SEN2NAIP_GAMMA_MEAN, atol=1e-12)
    sd = np.sqrt(np.diag(np.asarray(SEN2NAIP_GAMMA.cov)))
    p84 = SEN2NAIP_GAMMA.percentile(84.1344746)  # mean + 1 sd
    np.testing.assert_allclose(p84, np.asarray(SEN2NAIP_GAMMA_MEAN) + sd, atol=1e-6)
    # Bands differ: the percentile is not collapsed to one scalar.
    assert np.unique(np.round(p84, 6)).size == 4
    with pytest.raises(DegradationError, match="between 0 and 100"):
        SEN2NAIP_GAMMA.percentile(100)


def test_normal_model_fit_and_seeded_sampling() -> None:
    draws = SEN2NAIP_GAMMA.sample(np.random.default_rng(0), 40_000)
    model = GammaModel.from_samples(draws)
    assert model.n_pairs == 40_000
    np.testing.assert_allclose(model.mean, SEN2NAIP_GAMMA.mean, atol=0.002)
    np.testing.assert_allclose(model.cov, SEN2NAIP_GAMMA.cov, atol=4e-4)
    again = SEN2NAIP_GAMMA.sample(np.random.default_rng(0), 40_000)
    np.testing.assert_array_equal(draws, again)
    with pytest.raises(DegradationError, match="symmetric"):
        GammaModel(mean=(0.3, 0.3), cov=((1.0, 0.5), (0.0, 1.0)))


@pytest.mark.parametrize(("dtype", "scale"), [(np.uint16, 1e-4), (np.uint8, 1 / 255)])
def test_table_lookup_is_apply_gamma_on_the_decoded_image(dtype: type, scale: float) -> None:
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    counts = rng.integers(0, top + 1, size=(4, 67, 53)).astype(dtype)
    counts[:, 0, :3] = (0, 1, top)  # the ends of the table
    levels = np.arange(top + 1, dtype=np.float32) * np.float32(scale)
    gamma = SEN2NAIP_GAMMA.percentile(50)
    out = apply_gamma_table(counts, gamma_table(gamma, levels))
    decoded = counts.astype(np.float32) * np.float32(scale)
    # Same operations on the same float values: bitwise what apply_gamma gives.
    np.testing.assert_array_equal(out, apply_gamma(decoded, gamma))
    assert out.dtype == np.float32 and out.shape == counts.shape


def test_table_errors() -> None:
    table = gamma_table(0.4, np.arange(256, dtype=np.float32) / 255, bands=2)
    assert table.shape == (2, 256)
    with pytest.raises(DegradationError, match="does not cover"):
        apply_gamma_table(np.zeros((2, 4, 4), np.uint16), table)
    with pytest.raises(DegradationError, match="does not cover"):
        apply_gamma_table(np.zeros((3, 4, 4), np.uint8), table)
    with pytest.raises(DegradationError, match="uint8 or uint16"):
        apply_gamma_table(np.zeros((2, 4, 4), np.int32), table)
    with pytest.raises(DegradationError, match="1-D"):
        gamma_table(0.4, np.zeros((2, 3), np.float32))
    with pytest.raises(DegradationError, match="> 0"):
        gamma_table(-1.0, np.zeros(3, np.float32))
