"""The Sentinel-HR series' pure core (:mod:`harvest.sentinel_hr`) and its date selection.

Guides thinned to a revisit, targets paired with S2 less than a day apart and not guides,
resampling with a Gaussian matched to the MTF (hand-computed amplitudes at Nyquist), the masked
least squares, and one target date made from a synthetic pair with a known shift and mapping.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import box

from harvest import sentinel_hr as shr
from harvest.backends.base import SceneRef
from harvest.errors import QaError
from harvest.sen2venus import mtf_downsample
from harvest.stages._sentinel_hr import make_target, select_dates

T0 = datetime(2020, 3, 1, 10, 30, tzinfo=UTC)


def _days(*offsets: float) -> list[datetime]:
    return [T0 + timedelta(days=d) for d in offsets]


def test_guides_are_thinned_greedily_from_the_first_date() -> None:
    dates = _days(0, 5, 12, 20, 21, 41, 45)
    assert shr.thin_guides(dates, 20) == [0, 3, 5]
    assert shr.thin_guides(dates, 0) == list(range(7))
    assert shr.thin_guides(dates, 100) == [0]
    # Indices refer to the input order, whatever it is.
    shuffled = [dates[i] for i in (3, 0, 6, 5, 1, 2, 4)]
    assert sorted(shuffled[i] for i in shr.thin_guides(shuffled, 20)) == [
        dates[i] for i in (0, 3, 5)
    ]
    # A series that grows at its end keeps its guides (an extension only appends).
    assert shr.thin_guides(dates + _days(50, 61), 20)[:3] == [0, 3, 5]
    assert shr.thin_guides([], 20) == []
    with pytest.raises(QaError, match=">= 0 days"):
        shr.thin_guides(dates, -1)


def test_targets_pair_each_non_guide_venus_date_with_the_nearest_s2_within_a_day() -> None:
    venus = _days(0, 5, 12, 20)
    s2 = [
        T0 + timedelta(days=5, hours=-3),
        T0 + timedelta(days=12, hours=25),
        T0 + timedelta(days=20),
    ]
    # Day 0 is a guide; day 5 has S2 3 h before; day 12's S2 is 25 h away; day 20 is a guide.
    assert shr.target_pairs(s2, venus, exclude=[0, 3]) == [(0, 1)]
    assert shr.target_pairs(s2, venus, exclude=[0]) == [(0, 1), (2, 3)]
    assert shr.target_pairs(s2, venus, max_dt_hours=26, exclude=[0, 3]) == [(0, 1), (1, 2)]
    assert shr.target_pairs([], venus) == []


def _scene(item: str, collection: str, when: datetime) -> SceneRef:
    return SceneRef(item, collection, "memory", when, box(0, 0, 1, 1))


def test_select_dates_gives_guides_and_s2_venus_targets_in_date_order() -> None:
    venus = [_scene(f"V{i}", "venus-l2a", d) for i, d in enumerate(_days(0, 10, 25, 31))]
    s2 = [
        _scene(f"S{i}", "sentinel-2-l2a", d + timedelta(hours=-1))
        for i, d in enumerate(_days(10, 31, 40))
    ]
    guides, targets = select_dates(s2[::-1], venus[::-1], 20, 24)
    assert [g.item_id for g in guides] == ["V0", "V2"]
    assert [(s.item_id, v.item_id) for s, v in targets] == [("S0", "V1"), ("S1", "V3")]


def _cosine(n: int, period_px: float, phase_px: float) -> np.ndarray:
    x = np.arange(n, dtype=np.float64)
    row = np.cos(2 * np.pi * (x - phase_px) / period_px)
    return np.broadcast_to(row, (n, n))[None].copy()


def test_resample_puts_the_mtf_at_the_outputs_nyquist() -> None:
    # 5 m -> 25 m: output centres fall on input pixels 2, 7, 12...; a cosine at the output's
    # Nyquist (period 50 m = 10 px) peaking there comes out with amplitude MTF = 0.3.
    out = shr.resample(_cosine(400, 10, 2), 5.0, 25.0)
    assert out.shape == (1, 80, 80)
    inner = out[0, 10:-10, 10:-10]
    assert np.allclose(np.abs(inner), 0.3, atol=0.005)
    assert np.all(np.sign(inner[:, ::2]) > 0) and np.all(np.sign(inner[:, 1::2]) < 0)
    # An input that already has the MTF at its own Nyquist only gets the missing blur: at the
    # output's Nyquist (10 m -> 50 m) the input passes 0.3 ** (10 / 50) ** 2 of it, so the
    # result is 0.3 overall.
    passed = 0.3 ** ((10 / 50) ** 2)
    out = shr.resample(passed * _cosine(400, 10, 2), 10.0, 50.0, in_mtf=0.3)
    assert np.allclose(np.abs(out[0, 5:-5, 5:-5]), 0.3, atol=0.005)
    # Ratio 2.5 (12.5 m from 5 m): floor of the size; a constant stays constant.
    flat = shr.resample(np.full((2, 101, 100), 0.2), 5.0, 12.5)
    assert flat.shape == (2, 40, 40) and np.allclose(flat, 0.2)
    with pytest.raises(QaError, match="upsampling"):
        shr.resample(flat, 25.0, 5.0)


def test_mtf_sigma_matches_the_gaussians_transfer_at_nyquist() -> None:
    sigma = shr.mtf_sigma_m(10.0, 0.3)
    f = 1 / 20.0
    assert math.exp(-2 * (math.pi * sigma * f) ** 2) == pytest.approx(0.3)


def test_masked_least_squares_recovers_a_map_despite_masked_outliers() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 0.5, (4, 60, 60))
    w = np.vstack([rng.normal(0, 0.3, (4, 4)) + np.eye(4), rng.normal(0, 0.01, (1, 4))])
    dst = shr.apply_mapping(src, w)
    valid = np.ones((60, 60), bool)
    dst[:, :10, :10] = 5.0  # a cloud, masked out
    valid[:10, :10] = False
    dst[:, 20, 20] = np.nan  # a NaN is left out too
    got = shr.fit_masked_mapping(src, dst, valid)
    assert got.shape == (5, 4) and np.allclose(got, w, atol=1e-9)
    with pytest.raises(QaError, match="valid pixels"):
        shr.fit_masked_mapping(src, dst, np.zeros((60, 60), bool))


def _field(seed: int, n: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    f = sum(ndimage.gaussian_filter(r.normal(size=(n, n)), s) * s for s in (1, 3, 10))
    return 0.05 + 0.4 * (f - f.min()) / (f.max() - f.min())


def test_a_target_date_is_registered_mapped_and_resampled() -> None:
    # VENuS at 5 m sees the landscape; S2 at 10 m sees it displaced by a known shift, blurred by
    # its MTF and through a known linear map. make_target must undo the shift and the map.
    n = 480  # 5 m px
    land = np.stack([_field(i, n) for i in range(4)])
    shift = (0.5, -0.3)  # S2 content 0.5 px east, 0.3 px north (10 m px)
    gain = np.array([1.1, 0.9, 1.05, 0.95])
    offset = np.array([0.01, -0.005, 0.0, 0.02])
    moved = np.stack(
        [ndimage.shift(b, (shift[1] * 2, shift[0] * 2), order=3, mode="mirror") for b in land]
    )
    s2 = mtf_downsample(moved, 2) * gain[:, None, None] + offset[:, None, None]
    venus = land.copy()
    venus[:, 100:140, 300:360] = np.nan  # a VENuS cloud
    s2[:, 200:210, 20:30] = np.nan  # an S2 cloud
    lr, est, w = make_target(s2, venus, 5.0)
    assert est.dx_px == pytest.approx(shift[0], abs=0.06)
    assert est.dy_px == pytest.approx(shift[1], abs=0.06)
    # The map S2 -> VENuS is the inverse of the per-band gain and offset.
    assert np.allclose(np.diag(w[:4]), 1 / gain, atol=0.03)
    assert lr.shape == (4, 96, 96)
    # Where S2 was cloudy (10 m rows 200-209, columns 20-29) the LR is NaN; elsewhere it
    # matches VENuS brought to 25 m.
    assert np.isnan(lr[:, 80:84, 8:12]).all()
    want = shr.resample(land, 5.0, 25.0)
    ok = np.isfinite(lr)
    err = (lr - want)[ok]
    assert ok.mean() > 0.9 and np.sqrt(np.mean(err**2)) < 0.005


def test_a_store_is_appended_date_by_date_and_renamed_into_place(tmp_path: Path) -> None:
    import xarray as xr
    from affine import Affine

    from harvest.diskio import is_temporary
    from harvest.grid import ChipGrid
    from harvest.stages._sentinel_hr import _dataset, _store_attrs, _StoreWriter

    grid = ChipGrid(32631, Affine(5, 0, 300000, 0, -5, 4800000), 6, 5, 5.0)
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 0.6, (3, 2, 5, 6))
    frames[1, 0, 2, 3] = np.nan  # an invalid pixel
    times = [np.datetime64(f"2020-0{m}-01T10:00", "ns") for m in (1, 2, 3)]
    path = tmp_path / "s.zarr"
    path.mkdir()  # an older store is replaced
    store = _StoreWriter(path, ("reflectance",))
    for t, frame in zip(times, frames, strict=True):
        store.append(
            _dataset(
                {"reflectance": (("time", "band", "y", "x"), frame[None].astype(np.float32))},
                {"time": [t], "band": ["B02", "B03"], "y": 4800000 - 2.5 - 5 * np.arange(5),
                 "x": 300002.5 + 5 * np.arange(6)},
                grid,
            )
        )  # fmt: skip
    store.commit(_store_attrs("test", grid, site="s1"))
    store.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p)]
    ds = xr.open_zarr(path)  # consolidated metadata
    assert ds.attrs["site"] == "s1" and ds.attrs["Conventions"] == "CF-1.8"
    assert list(ds.time.values) == times
    got = ds.reflectance.values
    assert np.isnan(got[1, 0, 2, 3]) and np.isnan(got).sum() == 1
    ok = np.isfinite(frames)
    assert np.allclose(got[ok], frames[ok], atol=0.5e-4 + 1e-7)
    raw = xr.open_zarr(path, mask_and_scale=False).reflectance
    assert raw.dtype == np.int16 and raw.encoding["chunks"] == (1, 2, 512, 512)
