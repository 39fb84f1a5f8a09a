"""harvest.qa's faster paths give what the plain definitions give."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.exposure import match_histograms as skimage_match

from harvest.qa import (
    _combined_band,
    _constant_windows,
    _hann2d,
    _match_band,
    _phase_peak,
    _upsampled_dft,
    blank_windows,
    phase_correlation,
    spectral_angle_deg,
    spectral_qa,
)


def _brute_constant(band: np.ndarray, k: int) -> np.ndarray:
    h, w = band.shape
    out = np.zeros((h - k + 1, w - k + 1), dtype=bool)
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            win = band[i : i + k, j : j + k]
            out[i, j] = bool(np.all(win == win[0, 0]))
    return out


def test_constant_windows_match_the_definition() -> None:
    rng = np.random.default_rng(3)
    for trial in range(12):
        band = rng.integers(0, 2 if trial % 2 else 50, size=(30, 34)).astype(np.float32)
        if trial % 3 == 0:
            band[4:25, 6:30] = 0.25  # a constant patch: the full (not the pre-filter) path
            band[10, 12] = np.nan  # NaN never equals itself
        for k in (1, 2, 3, 7, 19):
            np.testing.assert_array_equal(_constant_windows(band, k), _brute_constant(band, k))


def test_blank_all_bands_stops_early_with_the_same_answer() -> None:
    rng = np.random.default_rng(4)
    img = rng.random((3, 40, 40))
    img[1:, 5:30, 5:30] = 0.5  # constant in bands 1, 2 only: not blank under all_bands
    assert not blank_windows(img, 19, "all_bands").any()
    assert blank_windows(img, 19, "any_band").sum() == (30 - 5 - 19 + 1) ** 2


def test_two_step_peak_equals_one_fine_search() -> None:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:64, 0:64]
    for _ in range(6):
        dy, dx = rng.uniform(-3.0, 3.0, 2)
        a = np.exp(-((y - 32 - dy) ** 2 + (x - 30 - dx) ** 2) / 18.0) + 0.01 * rng.random((64, 64))
        b = np.exp(-((y - 32) ** 2 + (x - 30) ** 2) / 18.0)
        got = _phase_peak(a, b, 100, 0.5)
        # One search of the 1.5 px neighbourhood every 1/100 px (the former refinement).
        spec = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
        mag = np.abs(spec)
        spec /= np.maximum(mag, 1e-12 * mag.max()) ** 0.5
        corr = np.fft.ifft2(spec).real
        peak = np.array(np.unravel_index(int(np.argmax(corr)), corr.shape), dtype=np.float64)
        peak = np.where(peak > 32, peak - 64, peak)
        size = math.ceil(100 * 1.5)
        c = size // 2
        fine = _upsampled_dft(spec, size, 100, (c - peak[0] * 100, c - peak[1] * 100)).real
        i, j = np.unravel_index(int(np.argmax(fine)), fine.shape)
        want = (peak[0] + (i - c) / 100, peak[1] + (j - c) / 100)
        assert abs(got[0] - want[0]) < 1e-9 and abs(got[1] - want[1]) < 1e-9


def test_constant_windows_without_a_constant_row_segment() -> None:
    # Many equal horizontal pairs (past the count pre-filter) but no run of 18: no window.
    band = np.tile(np.repeat(np.arange(10, dtype=np.float32), 10), (30, 1))[:, :60]
    band[:, ::7] += 0.5
    np.testing.assert_array_equal(_constant_windows(band, 19), _brute_constant(band, 19))


def test_match_band_equals_skimage() -> None:
    rng = np.random.default_rng(6)
    for trial in range(8):
        n = 121 * 121 if trial % 2 else 997
        src = rng.normal(0.2, 0.05, n)
        ref = rng.gamma(2.0, 0.05, n + 13 * trial)
        if trial % 4 < 2:  # ties, as 8-bit NAIP / 10000-step reflectance have
            src = np.round(src * 255) / 255
            ref = np.round(ref * 1e4) / 1e4
        got = _match_band(src, ref)
        want = skimage_match(src, ref)
        np.testing.assert_array_equal(got, want)


def test_spectral_qa_equals_skimage_matching_and_the_angle() -> None:
    rng = np.random.default_rng(7)
    lr = rng.random((4, 40, 41)).astype(np.float32)
    hr = (0.5 * lr + 0.1 * rng.random((4, 40, 41))).astype(np.float32)
    for valid in (None, rng.random((40, 41)) > 0.2):
        ok = np.ones((40, 41), dtype=bool) if valid is None else valid
        src = hr[:, ok].astype(np.float64)
        ref = lr[:, ok].astype(np.float64)
        matched = np.stack([skimage_match(s, r) for s, r in zip(src, ref, strict=True)])
        want = spectral_angle_deg(ref[:, None, :], matched[:, None, :])
        assert spectral_qa(lr, hr, valid) == want


def _phase_reference(fa: np.ndarray, fb: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """The estimate-and-undo rounds of phase_correlation without any reuse between rounds."""
    hann = _hann2d(ok.shape)
    dy = dx = 0.0
    moved, moved_ok = fa, ok
    for _ in range(8):
        core = ndimage.binary_erosion(moved_ok & ok, iterations=2, border_value=1)
        weight = hann * ndimage.gaussian_filter(core.astype(np.float64), 2.0)
        sy, sx = _phase_peak(moved * weight, fb * weight, 100, 0.5)
        dy, dx = dy + sy, dx + sx
        if math.hypot(sy, sx) < 0.005:
            break
        moved = ndimage.shift(fa, (-dy, -dx), order=3, mode="nearest")
        moved_ok = ndimage.shift(ok.astype(np.float64), (-dy, -dx), order=1, cval=0.0) > 0.999
    return dy, dx


def test_phase_rounds_reusing_the_hr_spectrum_equal_fresh_rounds() -> None:
    rng = np.random.default_rng(8)
    base = ndimage.gaussian_filter(rng.random((4, 90, 90)), (0, 1.5, 1.5))
    for trial in range(4):
        dy, dx = rng.uniform(-1.5, 1.5, 2)
        hr = base[:, 10:80, 12:82]
        lr = ndimage.shift(base, (0, dy, dx), order=3, mode="nearest")[:, 10:80, 12:82]
        ok = np.ones((70, 70), dtype=bool)
        if trial % 2:
            ok[5:20, 30:45] = False  # a masked hole: the mask edge moves with the rounds
        got = phase_correlation(lr, hr, ok)
        want = _phase_reference(_combined_band(lr, ok, None), _combined_band(hr, ok, None), ok)
        assert (got.dy_px, got.dx_px) == want
