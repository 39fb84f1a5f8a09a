import mgrs
import numpy as np
import pytest

from harvest.grid import grid_cells, mgrs_tile, utm_epsg, utm_zone_number


def _reference_tile(lon: float, lat: float) -> str:
    ref = mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0)
    polar = lat >= 84.0 or lat < -80.0
    return ref[:3] if polar else ref[:5]


def _points(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 3000
    # Uniform on the sphere, plus a dense patch over the Norway / Svalbard exceptions.
    lon = np.r_[rng.uniform(-180, 180, n), rng.uniform(0.0, 45.0, 1500)]
    lat = np.r_[np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(54.0, 84.0, 1500)]
    return lon, lat


def test_mgrs_tiles_match_reference_package() -> None:
    lon, lat = _points(3)
    tiles = mgrs_tile(lon, lat)
    expected = np.array([_reference_tile(a, b) for a, b in zip(lon, lat, strict=True)])
    mismatch = np.flatnonzero(tiles != expected)
    assert mismatch.size == 0, list(zip(lon[mismatch], lat[mismatch], tiles[mismatch], strict=True))


def test_utm_epsg_agrees_with_mgrs_zone_and_hemisphere() -> None:
    lon, lat = _points(4)
    codes = utm_epsg(lon, lat)
    for a, b, code in zip(lon, lat, codes, strict=True):
        if b >= 84.0:
            assert code == 32661
        elif b < -80.0:
            assert code == 32761
        else:
            zone = int(_reference_tile(a, b)[:2])
            assert code == (32600 if b >= 0 else 32700) + zone


@pytest.mark.parametrize(
    ("lon", "lat", "zone"),
    [
        (5.0, 60.0, 32),  # south-west Norway: zone 32 widened to 3 E
        (2.9, 60.0, 31),
        (8.0, 78.0, 31),  # Svalbard
        (10.0, 78.0, 33),
        (25.0, 78.0, 35),
        (40.0, 78.0, 37),
        (180.0, 10.0, 60),
        (-180.0, 10.0, 1),
        (-74.0, 40.7, 18),
    ],
)
def test_zone_exceptions(lon: float, lat: float, zone: int) -> None:
    assert int(utm_zone_number([lon], [lat])[0]) == zone


def test_known_tiles_and_grid_cells() -> None:
    cells = grid_cells([-74.0, 151.0], [40.0, -33.0])
    assert cells.mgrs_tile.tolist() == ["18TWK", "56HLJ"]
    assert cells.utm_epsg.tolist() == [32618, 32756]
    assert cells.utm_epsg.dtype == np.int32


def test_polar_points_use_ups() -> None:
    cells = grid_cells([10.0, 10.0], [-85.0, 85.0])
    assert cells.utm_epsg.tolist() == [32761, 32661]
    assert cells.mgrs_tile.tolist() == [_reference_tile(10.0, -85.0), _reference_tile(10.0, 85.0)]
