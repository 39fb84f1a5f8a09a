"""Histogram matching against scikit-image, histograms against torch.histc."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.exposure import match_histograms as skimage_match

from degradation.errors import DegradationError
from degradation.harmonize.histogram import band_histograms, match_histograms, match_to_histogram


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.gamma(2.0, 0.1, (4, 120, 110)).astype(np.float32)
    ref = (rng.random((4, 30, 27)) ** 2).astype(np.float32)
    return src, ref


def test_equals_skimage_on_float_data() -> None:
    src, ref = _pair(0)
    out = match_histograms(src, ref)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == src.shape
    np.testing.assert_allclose(out, skimage_match(src, ref, channel_axis=0), atol=1e-7)


def test_equals_skimage_with_ties_and_negative_values() -> None:
    src, ref = _pair(1)
    src = np.round(src * 40) / 40 - 0.1  # many ties, some negatives
    ref = np.round(ref * 25) / 25
    out = match_histograms(src, ref)
    np.testing.assert_allclose(out, skimage_match(src, ref, channel_axis=0), atol=1e-7)
    # Tied source values map to one value.
    band = src[0].ravel()
    mapped = np.asarray(out)[0].ravel()
    for v in np.unique(band)[:5]:
        assert np.unique(mapped[band == v]).size == 1


def test_batched_torch_input_matches_per_item_and_single_thread() -> None:
    a, ra = _pair(2)
    b, rb = _pair(3)
    src = torch.from_numpy(np.stack([a, b]))
    out = match_histograms(src, torch.from_numpy(np.stack([ra, rb])))
    assert isinstance(out, torch.Tensor) and out.shape == src.shape
    np.testing.assert_allclose(out[1].numpy(), skimage_match(b, rb, channel_axis=0), atol=1e-7)
    single = match_histograms(src, torch.from_numpy(np.stack([ra, rb])), workers=1)
    assert torch.equal(out, single)
    # One reference for the whole batch.
    shared = match_histograms(src, torch.from_numpy(ra))
    np.testing.assert_allclose(shared[1].numpy(), skimage_match(b, ra, channel_axis=0), atol=1e-7)


def test_band_histograms_equal_torch_histc() -> None:
    x = torch.rand(2, 4, 50, 60, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    x[0, 0, 0, 0] = 1.0  # the upper edge counts in the last bin
    h = band_histograms(x, normalize=False)
    assert isinstance(h, torch.Tensor) and h.shape == (2, 4, 120)
    for b in range(2):
        for c in range(4):
            torch.testing.assert_close(h[b, c], torch.histc(x[b, c], bins=120, min=0, max=1))
    hn = band_histograms(x[0].numpy())
    assert isinstance(hn, np.ndarray) and hn.shape == (4, 120)
    np.testing.assert_allclose(hn, h[0].numpy() / (50 * 60), rtol=1e-6)


def test_match_to_histogram_reproduces_the_target_histogram() -> None:
    src, ref = _pair(4)
    target = band_histograms(ref)
    assert isinstance(target, np.ndarray)
    target[:, 10:20] = 0  # empty bins must stay empty
    out = match_to_histogram(src, target)
    got = band_histograms(np.asarray(out))
    assert isinstance(got, np.ndarray)
    expected = target / target.sum(axis=1, keepdims=True)
    # Every bin within one pixel's worth of rounding per bin edge.
    assert np.abs(got - expected).max() < 3 / src[0].size + 1e-6
    assert got[:, 10:20].sum() == 0
    # Monotonic: the ordering of pixels is kept.
    order = np.argsort(src[0].ravel(), kind="stable")
    assert np.all(np.diff(np.asarray(out)[0].ravel()[order]) >= 0)


def test_bad_inputs() -> None:
    src, ref = _pair(5)
    with pytest.raises(DegradationError, match="bands"):
        match_histograms(src, ref[:3])
    bad = src.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DegradationError, match="NaN"):
        match_histograms(bad, ref)
    with pytest.raises(DegradationError, match="positive sum"):
        match_to_histogram(src, np.zeros((4, 120)))


def test_integer_codes_take_the_lookup_table_path_with_the_same_result() -> None:
    rng = np.random.default_rng(6)
    codes = rng.binomial(255, 0.3, (4, 90, 80)).astype(np.uint8)
    _, ref = _pair(6)
    out = match_histograms(codes, ref)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    expected = skimage_match(codes.astype(np.float32), ref, channel_axis=0)
    np.testing.assert_allclose(out, expected, atol=1e-7)
    as_torch = match_histograms(torch.from_numpy(codes.astype(np.int32)).to(torch.uint8), ref)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), out)
    wide = match_histograms(codes.astype(np.uint16) * 200, ref)
    np.testing.assert_allclose(wide, expected, atol=1e-7)
    # Same codes as floats through the sorted path: identical.
    np.testing.assert_allclose(match_histograms(codes.astype(np.float32), ref), out, atol=1e-7)


def test_float64_source_is_matched_exactly() -> None:
    src, ref = _pair(7)
    src64 = src.astype(np.float64) + 1e-12 * np.arange(src.size).reshape(src.shape)
    out = match_histograms(src64, ref)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, skimage_match(src64, ref, channel_axis=0), atol=1e-12)
