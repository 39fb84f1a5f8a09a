"""Degrader modes raw and statistical: composition, seeding, threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from degradation.errors import DegradationError
from degradation.harmonize.gamma import SEN2NAIP_GAMMA, apply_gamma
from degradation.pipeline import Degrader
from degradation.psf import GaussianPSF


def _hr(batch: int = 2, size: int = 96) -> torch.Tensor:
    return torch.rand(batch, 4, size, size, generator=torch.Generator().manual_seed(0)) * 0.6


def test_raw_is_antialiased_bilinear_without_noise() -> None:
    hr = _hr()
    out = Degrader("raw")(hr, 0)
    assert out.gamma is None and out.hr is hr
    ref = F.interpolate(hr, scale_factor=0.25, mode="bilinear", antialias=True)
    torch.testing.assert_close(out.lr, ref, atol=1e-6, rtol=0)


def test_statistical_p50_is_gamma_then_psf_then_noise() -> None:
    hr = _hr()
    psf = GaussianPSF((3.0, 2.9, 2.9, 3.4), kernel_size=13)
    clean = Degrader("statistical", psf=psf, noise_std=0.0)(hr, 1)
    np.testing.assert_allclose(clean.gamma, np.tile(SEN2NAIP_GAMMA.mean, (2, 1)))
    expected_hr = apply_gamma(hr, SEN2NAIP_GAMMA.percentile(50))
    assert isinstance(expected_hr, torch.Tensor)
    torch.testing.assert_close(clean.hr, expected_hr)
    torch.testing.assert_close(clean.lr, psf(expected_hr))
    noisy = Degrader("statistical", psf=psf)(hr, 1)
    assert isinstance(noisy.lr, torch.Tensor) and isinstance(clean.lr, torch.Tensor)
    resid = noisy.lr - clean.lr
    scale = clean.lr.square().mean(dim=1, keepdim=True).sqrt()
    assert abs(float((resid / scale).std()) - 0.012) < 0.001


def test_seeded_sampling_is_reproducible_and_per_sample() -> None:
    hr = _hr()
    deg = Degrader("statistical", percentile=None)
    a = deg(hr, np.random.default_rng(5))
    b = deg(hr, np.random.default_rng(5))
    c = deg(hr, np.random.default_rng(6))
    assert isinstance(a.lr, torch.Tensor) and isinstance(b.lr, torch.Tensor)
    assert torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr)
    assert not torch.equal(a.lr, c.lr)
    assert a.gamma is not None and a.gamma.shape == (2, 4)
    assert not np.allclose(a.gamma[0], a.gamma[1])  # one draw per sample
    t1 = deg(hr, torch.Generator().manual_seed(3))
    t2 = deg(hr, torch.Generator().manual_seed(3))
    assert torch.equal(t1.lr, t2.lr)


def test_same_output_on_one_and_two_threads_and_numpy_io() -> None:
    hr = _hr(1, 128)
    deg = Degrader("statistical", percentile=None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = deg(hr, 11)
        torch.set_num_threads(2)
        two = deg(hr, 11)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.lr, two.lr)  # type: ignore[arg-type]
    out = deg(hr[0].numpy(), 11)
    assert isinstance(out.lr, np.ndarray) and out.lr.shape == (4, 32, 32)
    np.testing.assert_array_equal(out.lr, np.asarray(one.lr)[0])


def test_bad_configuration() -> None:
    with pytest.raises(DegradationError, match="mode"):
        Degrader("variational")
    with pytest.raises(DegradationError, match="percentile"):
        Degrader(percentile=100.0)
    with pytest.raises(DegradationError, match="bands"):
        Degrader()(np.zeros((3, 16, 16), np.float32), 0)
    with pytest.raises(DegradationError, match="random source"):
        Degrader()(np.zeros((4, 16, 16), np.float32), None)  # type: ignore[arg-type]
