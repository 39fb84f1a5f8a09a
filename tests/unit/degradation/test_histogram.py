"""Histogram matching against scikit-image, histograms against torch.histc."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.exposure import match_histograms as skimage_match

from degradation.errors import DegradationError
from degradation.harmonize import histogram
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


def _dn_image(seed: int, shape: tuple[int, ...] = (4, 300, 280)) -> np.ndarray:
    """Reflectance stored as integer DN / 10000 (few distinct values, a long bright tail)."""
    rng = np.random.default_rng(seed)
    dn = np.clip(rng.gamma(3.0, 400.0, shape), 0, 9000).astype(np.uint16)
    tail = dn.reshape(-1)[::997]
    tail[:] = 9500 + np.arange(tail.size) % 400  # rare values, mostly not in the sample
    return dn.astype(np.float32) / np.float32(10000)


def _no_sort(*_: object) -> None:
    raise AssertionError("the sort path ran; the lookup-table path should have been used")


def test_few_distinct_float_values_take_the_table_path_and_equal_skimage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = _dn_image(10)
    _, ref = _pair(10)
    expected = skimage_match(src, ref, channel_axis=0)
    # Rare values (the bright tail) are missed by the sample and must still be exact.
    monkeypatch.setattr(histogram, "_SAMPLE", 16384)
    monkeypatch.setattr(histogram, "_match_sorted", _no_sort)
    out = match_histograms(src, ref)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    # Negative values and -0.0 (a table with an offset), float64, torch and batches.
    shifted = (src - np.float32(0.05)) * np.float32(-1.0)
    shifted[0, 0, :7] = -0.0
    np.testing.assert_array_equal(
        match_histograms(shifted, ref), skimage_match(shifted, ref, channel_axis=0)
    )
    src64 = src.astype(np.float64)
    np.testing.assert_array_equal(
        match_histograms(src64, ref), skimage_match(src64, ref, channel_axis=0)
    )
    batch = torch.from_numpy(np.stack([src, _dn_image(11)]))
    got = match_histograms(batch, torch.from_numpy(ref))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got[0].numpy(), expected)
    assert torch.equal(got, match_histograms(batch, torch.from_numpy(ref), workers=1))


def test_table_path_falls_back_to_sorting_when_values_share_a_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = _dn_image(12)
    _, ref = _pair(12)
    # Values a hair above grid values, missed by the sample, land in the grid values' buckets.
    src[1].reshape(-1)[1::5001] += np.float32(1e-6)
    # Many distinct values in a band: the sample rejects the table at once.
    src[2] += np.random.default_rng(0).random(src[2].shape, dtype=np.float32) * 1e-3
    monkeypatch.setattr(histogram, "_SAMPLE", 16384)
    sorted_bands: list[int] = []
    real_sort = histogram._match_sorted

    def spy(flat: np.ndarray, *args: object) -> None:
        sorted_bands.append(int(np.argmax([np.shares_memory(flat, b) for b in src])))
        real_sort(flat, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(histogram, "_match_sorted", spy)
    out = match_histograms(src, ref, workers=1)
    assert sorted(sorted_bands) == [1, 2]
    np.testing.assert_array_equal(out, skimage_match(src, ref, channel_axis=0))


def test_sort_path_with_tie_groups_across_and_longer_than_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(histogram, "_SORT_CHUNK", 64)
    monkeypatch.setattr(histogram, "_match_few_values", lambda *_: False)
    src, ref = _pair(13)
    src = src.copy()
    src[0, :40] = 0.25  # a tie group of 4400 pixels, far longer than a chunk
    src[1] = np.round(src[1] * 300) / 300  # many short tie groups
    src[2, :3] = -0.0  # -0.0 equals 0.0
    src[2, 3:6] = 0.0
    src[3, ::2] -= 0.5
    expected = skimage_match(src, ref, channel_axis=0)
    np.testing.assert_array_equal(match_histograms(src, ref), expected)
    np.testing.assert_array_equal(match_histograms(src, ref, workers=1), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_source_values_are_rejected_on_every_path(bad: float) -> None:
    _, ref = _pair(14)
    for src in (_pair(14)[0], _dn_image(14)):
        src[2, 5, 5] = bad
        with pytest.raises(DegradationError, match="NaN or infinite"):
            match_histograms(src, ref)


def test_table_path_gives_up_when_the_sample_missed_most_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A band whose sampled pixels hold few values and the rest many others: sorted, exact."""
    src, ref = _pair(14)
    band = src[0].reshape(-1)
    step = max(1, band.size // 1024)
    monkeypatch.setattr(histogram, "_SAMPLE", 1024)
    grid = np.round(band * 50) / 50
    band[:] = band + np.float32(1e-4)  # off the grid: never in a sampled bucket's value
    band[::step] = grid[::step]  # every sampled pixel on the 1/50 grid
    calls: list[int] = []
    real_sort = histogram._match_sorted

    def spy(flat: np.ndarray, *args: object) -> None:
        calls.append(flat.size)
        real_sort(flat, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(histogram, "_match_sorted", spy)
    out = match_histograms(src[:1], ref[:1], workers=1)
    assert calls == [band.size]
    np.testing.assert_array_equal(out, skimage_match(src[:1], ref[:1], channel_axis=0))


def test_sorted_path_hits_reference_quantiles_exactly() -> None:
    """Source quantiles equal to reference quantiles (the interpolation's exact-hit branch),
    below the first and at the last: the compiled walk equals np.interp and scikit-image."""
    rng = np.random.default_rng(15)
    ref = rng.random((2, 40, 50)).astype(np.float32)
    src = ref.copy()
    src[1] = np.repeat(rng.random((2, 50)).astype(np.float32), 20, axis=0)  # 20-fold ties
    out = match_histograms(src, ref)
    np.testing.assert_array_equal(out, skimage_match(src, ref, channel_axis=0))
    np.testing.assert_array_equal(out[0], ref[0])  # matched to itself: unchanged


def test_match_to_histogram_sort_path_does_not_depend_on_chunking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, _ = _pair(16)
    src = src.copy()
    src[0, :30] = 0.25  # a tie group longer than the small chunks below
    hist = np.random.default_rng(16).random((4, 120))
    monkeypatch.setattr(histogram, "_match_few_values", lambda *_: False)
    whole = match_to_histogram(src, hist)
    monkeypatch.setattr(histogram, "_SORT_CHUNK", 64)
    np.testing.assert_array_equal(match_to_histogram(src, hist), whole)
