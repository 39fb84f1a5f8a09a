"""Degrader modes raw and statistical: composition, seeding, threads."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from degradation.errors import DegradationError
from degradation.harmonize.gamma import SEN2NAIP_GAMMA, apply_gamma
from degradation.pipeline import ALL_MODES, Degrader, counts_to_reflectance, sample_seed
from degradation.pretrained import load_sen2naip
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
        Degrader("sharpened")
    with pytest.raises(DegradationError, match="needs a VAE"):
        Degrader("variational")
    with pytest.raises(DegradationError, match="needs a U-Net"):
        Degrader("all")
    with pytest.raises(DegradationError, match="percentile"):
        Degrader(percentile=100.0)
    with pytest.raises(DegradationError, match="bands"):
        Degrader()(np.zeros((3, 16, 16), np.float32), 0)
    with pytest.raises(DegradationError, match="random source"):
        Degrader()(np.zeros((4, 16, 16), np.float32), None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sen2naip_degrader() -> Degrader:
    return Degrader.from_model(load_sen2naip(), mode="all")


def _scene(size: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 4, size // 8, size // 8, generator=g)
    up = F.interpolate(coarse, size=(size, size), mode="bilinear")[0]
    return (0.4 * up + 0.1 * torch.rand(4, size, size, generator=g)).float()


def test_deterministic_mode_is_unet_then_psf_then_matrix_noise(
    sen2naip_degrader: Degrader,
) -> None:
    deg = replace(sen2naip_degrader, mode="deterministic")
    hr = _scene()
    out = deg(hr, np.random.default_rng(3))
    assert deg.unet is not None and deg.noise_matrix is not None
    expected_hr = deg.unet(hr)
    torch.testing.assert_close(out.hr, expected_hr, atol=1e-5, rtol=0)
    clean = deg.psf(out.hr)
    assert isinstance(clean, torch.Tensor) and isinstance(out.lr, torch.Tensor)
    noise = out.lr - clean
    # The matrix's noise values: -0.0101 .. 0.0099 in steps of 0.0002.
    assert float(noise.abs().max()) <= 0.0102 and float(noise.std()) > 1e-4
    assert out.mode == "deterministic" and out.modes == ("deterministic",) and out.gamma is None


def test_variational_mode_matches_to_the_predicted_histogram(sen2naip_degrader: Degrader) -> None:
    deg = replace(sen2naip_degrader, mode="variational", noise_matrix=None, noise_std=0.0)
    hr = _scene()
    out = deg(hr, 0)
    assert deg.vae is not None
    torch.testing.assert_close(out.hr, deg.vae(hr), atol=0, rtol=0)
    torch.testing.assert_close(out.lr, deg.psf(out.hr), atol=0, rtol=0)


def test_all_mode_picks_one_mode_per_sample_from_the_generator(
    sen2naip_degrader: Degrader,
) -> None:
    hr = torch.stack([_scene(64, s) for s in range(6)])
    out = sen2naip_degrader(hr, np.random.default_rng(0))
    assert len(out.modes) == 6 and set(out.modes) <= set(ALL_MODES)
    again = sen2naip_degrader(hr, np.random.default_rng(0))
    assert again.modes == out.modes and torch.equal(again.lr, out.lr)  # type: ignore[arg-type]
    seen = {sen2naip_degrader(hr[0], np.random.default_rng(s)).mode for s in range(12)}
    assert seen == set(ALL_MODES)
    # Each sample is what its own mode gives (same generator consumption per sample).
    for i, m in enumerate(out.modes):
        single = replace(sen2naip_degrader, mode=m, noise_matrix=None, noise_std=0.0)
        ref = single(hr[i], 0)
        if m != "statistical":
            torch.testing.assert_close(out.hr[i], ref.hr, atol=1e-5, rtol=0)  # type: ignore[index]
    if out.gamma is not None:
        stat = [i for i, m in enumerate(out.modes) if m == "statistical"]
        assert np.isfinite(out.gamma[stat]).all()
        assert np.isnan(np.delete(out.gamma, stat, axis=0)).all()


def test_picklable_and_worker_independent_in_a_dataloader(sen2naip_degrader: Degrader) -> None:
    copy = pickle.loads(pickle.dumps(sen2naip_degrader))
    hr = _scene(64, 1)
    a, b = sen2naip_degrader(hr, 5), copy(hr, 5)
    assert a.modes == b.modes
    torch.testing.assert_close(a.lr, b.lr, atol=1e-5, rtol=0)

    class Chips(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            out = sen2naip_degrader(_scene(64, i), sample_seed(7, i))
            return out.hr, out.lr  # type: ignore[return-value]

    def run(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(Chips(), batch_size=2, num_workers=workers)
        return [lr for _, lr in loader]

    for x, y in zip(run(0), run(2), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert sample_seed(7, 1) != sample_seed(7, 2) != sample_seed(8, 1)


def _counts(size: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 6000, size=(4, size, size)).astype(np.uint16)


@pytest.mark.parametrize("percentile", [50.0, None])
def test_degrade_image_is_the_call_for_float_and_uint16_images(percentile: float | None) -> None:
    psf = GaussianPSF((3.0, 2.9, 2.9, 3.4), kernel_size=13)
    deg = Degrader("statistical", psf=psf, percentile=percentile)
    counts = _counts()
    counts[0, :5, :5] = 65535  # the nodata code reads as reflectance 0
    decoded = counts_to_reflectance(counts, 1e-4, nodata=65535)
    assert decoded.dtype == np.float32 and float(decoded[0, 0, 0]) == 0.0
    ref = deg(decoded, np.random.default_rng(4))
    for image, kwargs in ((decoded, {}), (counts, {"scale": 1e-4, "nodata": 65535})):
        out = deg.degrade_image(image, np.random.default_rng(4), **kwargs)  # type: ignore[arg-type]
        assert isinstance(out.hr, np.ndarray) and isinstance(out.lr, np.ndarray)
        # HR_h: the same operations (a table lookup of them for the uint16 image), bitwise.
        np.testing.assert_array_equal(out.hr, np.asarray(ref.hr))
        # LR: the PSF as block products, equal to float32 rounding; the same noise draws.
        np.testing.assert_allclose(out.lr, np.asarray(ref.lr), atol=2e-6, rtol=0)
        np.testing.assert_array_equal(out.gamma, ref.gamma)  # type: ignore[arg-type]
        assert out.mode == ref.mode == "statistical" and out.modes == ref.modes


def test_degrade_image_uint8_and_the_other_modes(sen2naip_degrader: Degrader) -> None:
    dn = np.random.default_rng(1).integers(0, 256, size=(4, 64, 64)).astype(np.uint8)
    decoded = counts_to_reflectance(dn, 1 / 255)
    seen = set()
    for mode in ("raw", "statistical", "deterministic", "variational", "all"):
        deg = replace(sen2naip_degrader, mode=mode, noise_matrix=None)
        # Seeds 0, 1 and 11 make "all" choose variational, deterministic and statistical.
        for seed in (0, 1, 11) if mode == "all" else (0,):
            ref = deg(decoded, np.random.default_rng(seed))
            out = deg.degrade_image(dn, np.random.default_rng(seed), scale=1 / 255)
            assert out.mode == ref.mode and out.modes == ref.modes
            np.testing.assert_allclose(np.asarray(out.hr), np.asarray(ref.hr), atol=1e-6, rtol=0)
            np.testing.assert_allclose(np.asarray(out.lr), np.asarray(ref.lr), atol=2e-6, rtol=0)
            if mode == "all":
                seen.add(out.mode)
    assert seen == set(ALL_MODES)


def test_degrade_image_errors() -> None:
    with pytest.raises(DegradationError, match="scale="):
        Degrader().degrade_image(_counts(16), 0)
    with pytest.raises(DegradationError, match="one numpy image"):
        Degrader().degrade_image(_hr(), 0)  # type: ignore[arg-type]
