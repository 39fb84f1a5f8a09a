import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import box
from sklearn.neighbors import BallTree

from harvest.errors import InputFileError, SamplingError
from harvest.geoio import read_harvest_metadata
from harvest.regions import load_region
from harvest.sampling import estimate_capacity, sample_hardcore
from harvest.stages.sample import format_roi_ids, next_roi_number
from harvest.stages.sample import run as run_sample

GEOD = Geod(ellps="WGS84")
EARTH_MEAN_RADIUS_M = 6_371_008.8


def _box_region(lon0: float, lat0: float, lon1: float, lat1: float) -> tuple:
    geom = box(lon0, lat0, lon1, lat1)
    area = abs(GEOD.geometry_area_perimeter(geom)[0])
    perimeter = GEOD.geometry_area_perimeter(geom)[1]
    return geom, area, perimeter


def close_pairs_geodesic(lon: np.ndarray, lat: np.ndarray, d_m: float) -> np.ndarray:
    """Geodesic distances of every pair closer than d (found independently of the sampler)."""
    pts = np.radians(np.column_stack([lat, lon]))
    tree = BallTree(pts, metric="haversine")
    # The sphere and the ellipsoid differ by < 0.6 %: a 2 % margin finds every candidate pair.
    nbrs = tree.query_radius(pts, r=1.02 * d_m / EARTH_MEAN_RADIUS_M)
    i = np.repeat(np.arange(len(nbrs)), [len(n) for n in nbrs])
    j = np.concatenate(nbrs)
    keep = i < j
    i, j = i[keep], j[keep]
    _, _, dist = GEOD.inv(lon[i], lat[i], lon[j], lat[j])
    return np.asarray(dist)


def test_count_containment_and_geodesic_min_distance() -> None:
    region = load_region("conus")
    d_m = 5000.0
    res = sample_hardcore(region.geometry, 30000, d_m, 7, area_m2=region.area_m2)
    assert res.lon_deg.size == 30000
    assert shapely.contains_xy(region.geometry, res.lon_deg, res.lat_deg).all()
    assert np.unique(np.column_stack([res.lon_deg, res.lat_deg]), axis=0).shape[0] == 30000
    dist = close_pairs_geodesic(res.lon_deg, res.lat_deg, d_m)
    assert dist.size > 100  # the check is not vacuous: many pairs sit near the limit
    assert dist.min() >= d_m


def _naive_rsa(geom, n: int, d_m: float, seed: int, batch: int) -> np.ndarray:
    """One dart at a time, brute-force geodesic check: the definition of the process."""
    inv = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True)
    fwd = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    x0, y0 = fwd.transform(geom.bounds[0], geom.bounds[1])
    x1, y1 = fwd.transform(geom.bounds[2], geom.bounds[3])
    x0, y0, x1, y1 = x0 - 1.0, y0 - 1.0, x1 + 1.0, y1 + 1.0  # the sampler pads its box by 1 m
    rng = np.random.default_rng(seed)
    acc_lon: list[float] = []
    acc_lat: list[float] = []
    while len(acc_lon) < n:
        u = rng.random((batch, 2))  # the same stream, cut differently
        lon, lat = inv.transform(x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0))
        for a, b in zip(np.round(lon, 7), np.round(lat, 7), strict=True):
            if len(acc_lon) >= n or not geom.contains(shapely.Point(a, b)):
                continue
            if acc_lon:
                _, _, dist = GEOD.inv(
                    np.full(len(acc_lon), a), np.full(len(acc_lon), b), acc_lon, acc_lat
                )
                if (np.asarray(dist) < d_m).any():
                    continue
            acc_lon.append(float(a))
            acc_lat.append(float(b))
    return np.column_stack([acc_lon, acc_lat])


@pytest.mark.parametrize(("size_deg", "n"), [(1.0, 200), (2.0, 600)])
def test_batches_reproduce_one_dart_at_a_time(size_deg: float, n: int) -> None:
    geom, area, _ = _box_region(-105.0, 38.0, -105.0 + size_deg, 38.0 + size_deg)
    d_m = 5000.0
    res = sample_hardcore(geom, n, d_m, 11, area_m2=area)
    ref = _naive_rsa(geom, n, d_m, 11, batch=97)
    np.testing.assert_array_equal(np.column_stack([res.lon_deg, res.lat_deg]), ref)


def test_determinism_and_seed_independence() -> None:
    geom, area, _ = _box_region(-105.0, 38.0, -103.0, 40.0)
    a = sample_hardcore(geom, 800, 4000.0, 5, area_m2=area)
    b = sample_hardcore(geom, 800, 4000.0, 5, area_m2=area)
    c = sample_hardcore(geom, 800, 4000.0, 6, area_m2=area)
    np.testing.assert_array_equal(a.lon_deg, b.lon_deg)
    np.testing.assert_array_equal(a.lat_deg, b.lat_deg)
    assert not np.isin(a.lon_deg, c.lon_deg).any()


def test_uniform_over_area() -> None:
    # A tall box: equal-area cells differ a lot in lon/lat size, so sampling uniform in
    # degrees instead of area would fail this test.
    geom, area, _ = _box_region(-100.0, 0.0, -80.0, 60.0)
    n = 6000
    res = sample_hardcore(geom, n, 5000.0, 2024, area_m2=area)
    fwd = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    x, y = fwd.transform(res.lon_deg, res.lat_deg)
    x0, y0 = fwd.transform(-100.0, 0.0)
    x1, y1 = fwd.transform(-80.0, 60.0)
    k = 5  # 5 x 5 cells of equal area
    ix = np.clip(((x - x0) / (x1 - x0) * k).astype(int), 0, k - 1)
    iy = np.clip(((y - y0) / (y1 - y0) * k).astype(int), 0, k - 1)
    counts = np.bincount(ix * k + iy, minlength=k * k)
    expected = n / (k * k)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 51.2  # 99.9 % quantile of chi-square with 24 degrees of freedom


def test_exclusion_keeps_distance() -> None:
    geom, area, _ = _box_region(-105.0, 38.0, -103.0, 40.0)
    d_m = 5000.0
    old = sample_hardcore(geom, 400, d_m, 1, area_m2=area)
    new = sample_hardcore(
        geom,
        400,
        d_m,
        2,
        area_m2=area,
        exclude_lon_deg=old.lon_deg,
        exclude_lat_deg=old.lat_deg,
    )
    lon = np.r_[old.lon_deg, new.lon_deg]
    lat = np.r_[old.lat_deg, new.lat_deg]
    dist = close_pairs_geodesic(lon, lat, d_m)
    assert dist.size > 0 and dist.min() >= d_m


def test_stall_raises_quickly_with_count_reached() -> None:
    geom, area, perimeter = _box_region(-105.0, 38.0, -104.5, 38.5)
    cap = estimate_capacity(area, perimeter, 5000.0)
    t0 = time.perf_counter()
    with pytest.raises(SamplingError, match=r"only \d+ of .* fit"):
        sample_hardcore(geom, cap.jamming_n + 50, 5000.0, 0, area_m2=area)
    assert time.perf_counter() - t0 < 10


def test_precheck_limit_is_reachable() -> None:
    geom, area, perimeter = _box_region(-105.0, 38.0, -104.0, 39.0)
    cap = estimate_capacity(area, perimeter, 5000.0)
    assert 0 < cap.practical_n < cap.jamming_n
    res = sample_hardcore(geom, cap.practical_n, 5000.0, 3, area_m2=area)
    assert res.lon_deg.size == cap.practical_n


def test_progress_callback() -> None:
    geom, area, _ = _box_region(-105.0, 38.0, -103.0, 40.0)
    seen: list[int] = []
    sample_hardcore(geom, 500, 4000.0, 0, area_m2=area, on_progress=seen.append)
    assert seen[-1] == 500 and seen == sorted(seen)


def test_roi_ids() -> None:
    assert format_roi_ids(1, 2) == ["ROI_000001", "ROI_000002"]
    assert format_roi_ids(999_999, 2) == ["ROI_999999", "ROI_1000000"]
    assert next_roi_number(["ROI_000007", "ROI_000012", "other"]) == 13
    assert next_roi_number([]) == 1


def test_run_sample_writes_table_and_extends(tmp_path: Path) -> None:
    first = tmp_path / "rois.parquet"
    run_sample(n=300, output=first, region="conus", seed=3, min_distance_km=20)
    df = gpd.read_parquet(first)
    assert len(df) == 300 and df.crs.to_epsg() == 4326
    assert list(df.columns) == ["roi_id", "geometry", "utm_epsg", "mgrs_tile"]
    assert df["roi_id"].is_unique and df["roi_id"].iloc[0] == "ROI_000001"
    assert set(df["utm_epsg"]) <= set(range(32610, 32620))
    assert df["mgrs_tile"].str.len().eq(5).all()
    meta = read_harvest_metadata(first)
    assert meta["seed"] == 3 and meta["min_distance_m"] == 20000.0 and meta["region"] == "conus"

    second = tmp_path / "more.parquet"
    summary = run_sample(
        n=200, output=second, region="conus", seed=4, min_distance_km=20, exclude=first
    )
    more = gpd.read_parquet(second)
    assert summary.first_id == "ROI_000301" and more["roi_id"].iloc[-1] == "ROI_000500"
    both = gpd.GeoDataFrame(
        {"roi_id": list(df["roi_id"]) + list(more["roi_id"])},
        geometry=list(df.geometry) + list(more.geometry),
        crs="EPSG:4326",
    )
    assert both["roi_id"].is_unique
    dist = close_pairs_geodesic(both.geometry.x.to_numpy(), both.geometry.y.to_numpy(), 20000.0)
    assert dist.size == 0 or dist.min() >= 20000.0


def test_impossible_n_fails_fast_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "rois.parquet"
    t0 = time.perf_counter()
    with pytest.raises(SamplingError, match=r"at most about \d+ can be expected to fit"):
        run_sample(n=1_000_000, output=out, region="conus", seed=0, min_distance_km=5)
    assert time.perf_counter() - t0 < 5
    assert list(tmp_path.iterdir()) == []


def test_exclude_errors(tmp_path: Path) -> None:
    out = tmp_path / "rois.parquet"
    with pytest.raises(InputFileError, match="not found"):
        run_sample(n=10, output=out, exclude=tmp_path / "missing.parquet")
    not_rois = tmp_path / "not_rois.parquet"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_parquet(
        not_rois
    )
    with pytest.raises(InputFileError, match="not a ROI table"):
        run_sample(n=10, output=out, exclude=not_rois)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(InputFileError, match="cannot read ROI table"):
        run_sample(n=10, output=out, exclude=junk)
    assert not out.exists()


def _scattered_sites() -> tuple:
    # Two small squares an ocean apart, of areas about 1 : 4; they fill ~1e-5 of their bbox.
    small = box(-100.0, 40.0, -99.98, 40.02)
    large = box(10.0, 45.0, 10.04, 45.04)
    geom = shapely.MultiPolygon([small, large])
    areas = [abs(GEOD.geometry_area_perimeter(g)[0]) for g in (small, large)]
    return geom, small, large, areas


def test_support_of_scattered_sites_covers_them_tightly() -> None:
    from harvest.sampling import _candidate_support, _equal_area

    geom, _, _, areas = _scattered_sites()
    support = _candidate_support(geom, sum(areas))
    assert support.x0.size > 1
    assert support.area_m2 < 3 * sum(areas)  # few candidates are wasted
    _, inv = _equal_area()
    lon0, lat0 = inv.transform(support.x0, support.y0)
    lon1, lat1 = inv.transform(support.x1, support.y1)
    cover = shapely.union_all(shapely.box(lon0, lat0, lon1, lat1))
    assert cover.buffer(1e-9).covers(geom)  # nothing of the region is left out


def test_scattered_sites_are_sampled_fast_and_uniformly() -> None:
    geom, small, large, areas = _scattered_sites()
    n = 400
    t0 = time.perf_counter()
    res = sample_hardcore(geom, n, 50.0, 3, area_m2=sum(areas))
    assert time.perf_counter() - t0 < 2.0
    assert shapely.contains_xy(geom, res.lon_deg, res.lat_deg).all()
    in_small = int(shapely.contains_xy(small, res.lon_deg, res.lat_deg).sum())
    p = areas[0] / sum(areas)
    # Binomial: 4 standard deviations around the area share.
    assert abs(in_small - n * p) < 4 * np.sqrt(n * p * (1 - p))
    dist = close_pairs_geodesic(res.lon_deg, res.lat_deg, 50.0)
    assert dist.size == 0 or dist.min() >= 50.0
