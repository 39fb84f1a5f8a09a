"""Simple noise model (scaling, seeding, threads) and the noise estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.noise import estimate_noise_std, simple_noise
from degradation.psf import blur


def test_pixel_rms_scaling_has_the_requested_std() -> None:
    x = np.random.default_rng(0).uniform(0.05, 0.4, (4, 200, 200)).astype(np.float32)
    n = np.asarray(simple_noise(x, np.random.default_rng(1), std=0.012, scaling="pixel_rms"))
    scale = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=0, keepdims=True))
    z = n / scale
    assert abs(z.mean()) < 2e-4 and abs(z.std() - 0.012) / 0.012 < 0.01


def test_band_rms_scaling_uses_one_scale_per_band() -> None:
    x = torch.rand(2, 4, 100, 100, generator=torch.Generator().manual_seed(0))
    x[:, 3] *= 0.1
    n = simple_noise(x, torch.Generator().manual_seed(2), std=0.025, scaling="band_rms")
    assert isinstance(n, torch.Tensor)
    rms = x.square().mean(dim=(2, 3)).sqrt()
    ratio = n.std(dim=(2, 3)) / rms
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.025), rtol=0.03, atol=0)


def test_seeded_and_thread_independent() -> None:
    x = torch.rand(1, 4, 300, 300, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = simple_noise(x, torch.Generator().manual_seed(7))
        a_np = simple_noise(x, np.random.default_rng(7))
        torch.set_num_threads(2)
        b = simple_noise(x, torch.Generator().manual_seed(7))
        b_np = simple_noise(x, np.random.default_rng(7))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b)
    assert torch.equal(a_np, b_np)  # a numpy stream seeds the same draws on any thread count
    assert not torch.equal(a, a_np)
    c = simple_noise(x, torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)
    np.testing.assert_array_equal(simple_noise(x.numpy(), 3), simple_noise(x.numpy(), 3))


def test_an_explicit_random_source_is_required() -> None:
    with pytest.raises(DegradationError, match="random source"):
        simple_noise(np.zeros((1, 4, 4), np.float32), None)  # type: ignore[arg-type]
    with pytest.raises(DegradationError, match="scaling"):
        simple_noise(np.zeros((1, 4, 4), np.float32), 0, scaling="per_pixel")


@pytest.mark.parametrize("true_std", [0.005, 0.01, 0.03])
def test_estimator_recovers_a_known_std_within_20_percent(true_std: float) -> None:
    rng = np.random.default_rng(4)
    smooth = blur(rng.random((4, 256, 256), dtype=np.float32), 6.0)
    smooth = np.asarray(smooth) * 2.0  # a textured but smooth scene
    yy, xx = np.mgrid[0:256, 0:256]
    smooth[:, :, 128:] += 0.2  # a sharp edge
    smooth += (0.1 * np.sin(xx / 17.0) * np.cos(yy / 23.0)).astype(np.float32)
    noisy = smooth + rng.normal(0, true_std, smooth.shape).astype(np.float32)
    est = estimate_noise_std(noisy)
    assert est.shape == (4,)
    np.testing.assert_allclose(est, true_std, rtol=0.2)
    batched = estimate_noise_std(torch.from_numpy(np.stack([noisy, noisy])))
    assert batched.shape == (2, 4)
