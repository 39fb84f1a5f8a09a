"""harvest.qa's faster paths give what the plain definitions give."""

from __future__ import annotations

import math

import numpy as np

from harvest.qa import _constant_windows, _phase_peak, _upsampled_dft, blank_windows


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
