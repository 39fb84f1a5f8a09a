"""Variational method: the VAE, its histogram prediction, the matching targets, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.harmonize.histogram import band_histograms
from degradation.harmonize.vae import (
    HistogramVAE,
    VAEHarmonizer,
    input_histograms,
    predict_histogram,
    published_level_cdf,
    train_vae,
)


def _images(n: int = 64, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 4, size, size, generator=g) * torch.rand(n, 4, 1, 1, generator=g)


def test_train_vae_learns_a_histogram_mapping() -> None:
    imgs = _images()
    hx, hy = input_histograms(imgs), input_histograms(imgs ** (1 / 0.6))
    vae, log = train_vae(hx, hy, epochs=300, seed=0, hidden=128, latent=8)
    assert log.last_loss < 0.05 * log.first_loss
    pred = predict_histogram(vae, imgs)
    assert isinstance(pred, torch.Tensor)
    err = float((pred.cumsum(-1) - hy.cumsum(-1)).abs().mean())
    assert err < 0.4 * float((hx.cumsum(-1) - hy.cumsum(-1)).abs().mean())
    _, a = train_vae(hx, hy, epochs=2, seed=3, hidden=16, latent=2)
    _, b = train_vae(hx, hy, epochs=2, seed=3, hidden=16, latent=2)
    assert a.losses == b.losses


def test_uniform_target_gives_the_predicted_histogram() -> None:
    torch.manual_seed(0)  # only to fill random test weights
    vae = HistogramVAE(hidden=32, latent=4).eval()
    hr = _images(2, 200)[1] * 0.8
    pred = predict_histogram(vae, hr)
    assert isinstance(pred, torch.Tensor) and pred.shape == (4, 120)
    torch.testing.assert_close(pred.sum(dim=1), torch.ones(4))
    assert float(pred[pred > 0].min()) >= 0.0  # small fractions were dropped before normalising
    out = VAEHarmonizer(vae)(hr)
    assert isinstance(out, torch.Tensor) and out.shape == hr.shape
    got = band_histograms(out)
    assert isinstance(got, torch.Tensor)
    assert float((got - pred).abs().sum(dim=1).max()) < 0.01
    # Numpy in, numpy out; a sampled latent differs from the mean but is seeded.
    out_np = VAEHarmonizer(vae)(hr.numpy())
    assert isinstance(out_np, np.ndarray)
    a = predict_histogram(vae, hr, generator=torch.Generator().manual_seed(1))
    b = predict_histogram(vae, hr, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, pred)  # type: ignore[arg-type]


def test_published_level_cdf_matches_the_published_draw_loop() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((2, 120)) ** 4
    pred[pred < 0.05] = 0
    src = np.histogram(rng.random(5000) ** 2, bins=120, range=(0, 1))[0][None].repeat(2, 0)
    cdf = published_level_cdf(pred, src.astype(np.float64))
    # The published code: zero the predicted CDF where the source CDF exceeds it, then for each
    # bin j overwrite pixels whose uniform exceeds cdf'[j] with j / 120.
    s2 = np.cumsum(pred, axis=1)
    s2 /= s2[:, -1:]
    sc = np.cumsum(src, axis=1) / src.sum(axis=1, keepdims=True)
    s2[(sc - s2) > 0] = 0
    u = rng.random((2, 200_000))
    levels = np.zeros_like(u)
    for j in range(120):
        for c in range(2):
            levels[c][u[c] > s2[c, j]] = j
    for c in range(2):
        empirical = np.searchsorted(np.sort(levels[c]), np.arange(120), side="right") / u.shape[1]
        np.testing.assert_allclose(empirical, cdf[c], atol=0.005)


def test_state_dict_errors_and_band_mismatch() -> None:
    with pytest.raises(DegradationError, match="lack"):
        HistogramVAE.from_state_dict({"x": torch.zeros(1)})
    vae = HistogramVAE(n_bands=3, hidden=8, latent=2)
    with pytest.raises(DegradationError, match="bands"):
        predict_histogram(vae, torch.rand(4, 10, 10))
    with pytest.raises(DegradationError, match="target"):
        VAEHarmonizer(vae, target="random")
    with pytest.raises(DegradationError, match="inside"):
        input_histograms(torch.full((4, 5, 5), 2.0))


def test_the_vae_reads_the_histograms_of_the_hr_at_the_lr_grid() -> None:
    """As trained (degradation.fit.networks: HR downsampled with antialias): input_factor."""
    from degradation.harmonize.histogram import match_to_histogram
    from degradation.pipeline import Degrader
    from degradation.pretrained import load_model
    from degradation.resample import downsample

    torch.manual_seed(0)  # only to fill random test weights
    vae = HistogramVAE(hidden=32, latent=4).eval()
    # A noisy image: its 2.5 m histogram is wider than its 10 m one.
    hr = (_images(1, 160)[0] * 0.5 + 0.3 * torch.rand(4, 160, 160)).clamp(0, 1)
    low = downsample(hr[None], 4, antialias=True)[0]
    out = VAEHarmonizer(vae, input_factor=4)(hr)
    expected = match_to_histogram(hr, predict_histogram(vae, low))
    torch.testing.assert_close(out, expected)
    assert not torch.equal(out, VAEHarmonizer(vae)(hr))  # input_factor=1: the HR as given
    out_np = VAEHarmonizer(vae, input_factor=4)(hr.numpy())
    np.testing.assert_allclose(out_np, out.numpy(), atol=1e-6)
    with pytest.raises(DegradationError, match="input_factor"):
        VAEHarmonizer(vae, input_factor=0)
    # The Degrader of a model feeds its VAE at the model's LR grid.
    degrader = Degrader.from_model(load_model("sen2naip"), mode="variational")
    assert degrader.vae is not None and degrader.vae.input_factor == 4
