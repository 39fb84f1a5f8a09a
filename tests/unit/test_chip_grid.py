import math
from fractions import Fraction

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from harvest.errors import ConfigError
from harvest.grid import (
    ChipGrid,
    ChipLayout,
    chip_grids,
    chip_grids_many,
    chip_id,
    group_ratio,
    source_window,
)
from harvest.qa import area_resample, block_any, block_mean
from harvest.recipes import Recipe, load_recipe

RECIPES = ("sen2naip", "sen2venus", "sen12")
# Places near and far from the central meridian, both hemispheres, a zone edge, high latitude.
PLACES = [
    (-74.0, 40.7),  # New York, zone 18 N
    (-77.99, 35.0),  # 3 degrees from the central meridian of zone 18
    (-119.9, 37.0),  # zone 11 western edge (~ 220 km west of the meridian)
    (151.2, -33.9),  # Sydney, southern hemisphere
    (-47.99, -15.8),  # Brasilia, far from the meridian, south
    (5.0, 60.0),  # widened zone 32 in Norway
    (25.0, 78.0),  # Svalbard
]


def _corners(grid: ChipGrid) -> list[tuple[float, float]]:
    t = grid.transform
    return [t @ (c, r) for c in (0, grid.width) for r in (0, grid.height)]


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize(("lon", "lat"), PLACES)
def test_nested_footprints_agree_to_the_centimetre(name: str, lon: float, lat: float) -> None:
    recipe = load_recipe(name)
    chips = chip_grids(lon, lat, recipe)
    ref = _corners(chips.lr)
    for grid in (chips.hr, *chips.lr_extra):
        assert grid.epsg == chips.lr.epsg
        for (x0, y0), (x1, y1) in zip(ref, _corners(grid), strict=True):
            assert abs(x0 - x1) < 0.01 and abs(y0 - y1) < 0.01
        assert np.allclose(grid.bounds, chips.lr.bounds, rtol=0, atol=0.01)
    # The HR pixel edges subdivide the LR pixels exactly.
    ratio = chips.lr.gsd_m / chips.hr.gsd_m
    assert chips.hr.width == round(chips.lr.width * ratio)
    # The chip centre is the ROI centre up to half a snap step per axis.
    left, bottom, right, top = chips.bounds
    fwd = Transformer.from_crs(4326, chips.epsg, always_xy=True)
    cx, cy = fwd.transform(lon, lat)
    step = ChipLayout.from_recipe(recipe).snap_m
    assert abs((left + right) / 2 - cx) <= step / 2 + 1e-6
    assert abs((bottom + top) / 2 - cy) <= step / 2 + 1e-6


def test_sen2naip_sizes_and_transforms() -> None:
    chips = chip_grids(-74.0, 40.7, load_recipe("sen2naip"))
    assert chips.epsg == 32618
    assert (chips.lr.width, chips.lr.height, chips.lr.gsd_m) == (121, 121, 10.0)
    assert (chips.hr.width, chips.hr.height, chips.hr.gsd_m) == (484, 484, 2.5)
    a, b, c, d, e, f = chips.hr.transform_tuple
    assert (a, b, d, e) == (2.5, 0.0, 0.0, -2.5)
    assert (c, f) == (chips.lr.transform.c, chips.lr.transform.f)
    left, bottom, right, top = chips.hr.bounds
    assert right - left == 1210.0 and top - bottom == 1210.0


def test_southern_hemisphere_uses_the_south_zone() -> None:
    chips = chip_grids(151.2, -33.9, load_recipe("sen2naip"))
    assert chips.epsg == 32756
    _, _, _, top = chips.bounds
    assert 6_000_000 < top < 10_000_000  # false northing of the south zones


@pytest.mark.parametrize(("name", "step"), [("sen2naip", 10), ("sen2venus", 20), ("sen12", 10)])
def test_snapping_rule_corner_on_the_coarsest_lr_grid(name: str, step: int) -> None:
    recipe = load_recipe(name)
    assert ChipLayout.from_recipe(recipe).snap_m == step
    rng = np.random.default_rng(11)
    lon = rng.uniform(-125, -67, 400)
    lat = rng.uniform(-50, 60, 400)
    grids = chip_grids_many(lon, lat, recipe)
    # Corners are exact multiples of the step: the 10 m (and 20 m) pixel edges of Sentinel-2.
    assert np.all(np.mod(grids.left_m, step) == 0)
    assert np.all(np.mod(grids.top_m, step) == 0)
    for i in range(0, 400, 37):
        chips = grids[i]
        for g in (chips.lr, *chips.lr_extra):
            assert g.transform.c % g.gsd_m == 0 and g.transform.f % g.gsd_m == 0


def test_snap_step_is_least_common_multiple() -> None:
    assert ChipLayout(lr=(10.0, 120), hr=(2.5, 480), lr_extra=((60.0, 20),)).snap_m == 60.0
    assert ChipLayout(lr=(10.0, 120), hr=(5.0, 240), lr_extra=((15.0, 80),)).snap_m == 30.0
    assert ChipLayout(lr=(2.5, 40), hr=(0.5, 200)).snap_m == 2.5


def test_snapping_picks_the_nearest_lattice_corner() -> None:
    layout = ChipLayout(lr=(10.0, 121), hr=(2.5, 484))
    inv = Transformer.from_crs(32618, 4326, always_xy=True)
    # A centre at easting 500_003 puts the ideal left edge at 499_398: nearest multiple 499_400.
    lon, lat = inv.transform(500_003.0, 4_500_008.0)
    chips = chip_grids(lon, lat, layout, epsg=32618)
    assert chips.lr.transform.c == pytest.approx(499_400.0, abs=0)
    assert chips.lr.transform.f == 4_500_610.0  # ideal 4_500_613 -> 4_500_610
    assert chips.chip_id == "32618_499400_4500610"


def test_vectorised_equals_single_and_ids_are_stable() -> None:
    recipe = load_recipe("sen2venus")
    rng = np.random.default_rng(5)
    lon = rng.uniform(-10, 30, 50)
    lat = rng.uniform(-40, 60, 50)
    many = chip_grids_many(lon, lat, recipe)
    assert len(many) == 50
    ids = many.chip_ids
    for i in range(50):
        one = chip_grids(float(lon[i]), float(lat[i]), recipe)
        assert one == many[i]
        assert ids[i] == one.chip_id
    # Order does not matter: reversed input gives the reversed ids.
    rev = chip_grids_many(lon[::-1], lat[::-1], recipe)
    assert list(rev.chip_ids) == list(ids[::-1])


def test_explicit_epsg_far_from_the_zone() -> None:
    # Cut a chip in the neighbouring zone (19 instead of 18): corners still snapped and exact.
    chips = chip_grids(-72.5, 41.0, load_recipe("sen2naip"), epsg=32619)
    assert chips.epsg == 32619
    assert chips.lr.transform.c % 10 == 0
    assert chips.hr.bounds == chips.lr.bounds


def test_polar_chip_uses_ups() -> None:
    chips = chip_grids(10.0, 86.0, load_recipe("sen2naip"))
    assert chips.epsg == 32661
    assert chips.hr.bounds == chips.lr.bounds


def test_layout_rejects_groups_of_different_extent() -> None:
    with pytest.raises(ConfigError, match="chip_px"):
        ChipLayout(lr=(10.0, 121), hr=(2.5, 480))


def test_chip_id_format() -> None:
    assert chip_id(32618, 583420.0, 4507880.0) == "32618_583420_4507880"
    assert chip_id(32618, 583420.5, 4507880.0) == "32618_583420.50_4507880"


def _hr_chip() -> ChipGrid:
    return ChipGrid(32618, Affine(2.5, 0, 500_000.0, 0, -2.5, 4_500_000.0), 484, 484, 2.5)


def test_source_window_on_a_naip_grid() -> None:
    # NAIP at 0.6 m with a corner off the chip lattice.
    src = (0.6, 0.0, 499_000.3, 0.0, -0.6, 4_500_500.9)
    win = source_window(_hr_chip(), src, (10_000, 10_000), margin_px=2)
    assert win.col_off == pytest.approx((500_000.0 - 499_000.3) / 0.6, abs=1e-9)
    assert win.row_off == pytest.approx((4_500_500.9 - 4_500_000.0) / 0.6, abs=1e-9)
    assert win.width == pytest.approx(1210 / 0.6, abs=1e-9)
    assert win.height == pytest.approx(1210 / 0.6, abs=1e-9)
    assert win.read_col_off == math.floor(win.col_off) - 2
    assert win.read_row_off == math.floor(win.row_off) - 2
    assert win.read_col_off + win.read_width == math.ceil(win.col_off + win.width) + 2
    assert win.read_row_off + win.read_height == math.ceil(win.row_off + win.height) + 2
    assert win.inside and not win.empty


def test_source_window_aligned_grid_has_integer_window() -> None:
    # A Sentinel-2 tile (10 m, origin on the 60 m lattice) and an LR chip on it.
    lr = ChipGrid(32618, Affine(10, 0, 500_000.0, 0, -10, 4_500_000.0), 121, 121, 10.0)
    tile = Affine(10, 0, 499_980.0, 0, -10, 4_600_020.0)
    win = source_window(lr, tile, (10_980, 10_980), margin_px=0)
    assert (win.col_off, win.row_off, win.width, win.height) == (2.0, 10_002.0, 121.0, 121.0)
    assert (win.read_col_off, win.read_row_off, win.read_width, win.read_height) == (
        2,
        10_002,
        121,
        121,
    )


def test_source_window_clipped_at_the_raster_edge() -> None:
    src = Affine(1.0, 0, 500_500.0, 0, -1.0, 4_500_000.0)  # raster starts mid-chip
    win = source_window(_hr_chip(), src, (2000, 2000), margin_px=3)
    assert win.col_off == -500.0
    assert not win.inside
    assert win.read_col_off == 0 and win.read_row_off == 0
    assert win.read_width == 710 + 3  # right edge at column 710 plus the margin
    miss = source_window(_hr_chip(), Affine(1.0, 0, 600_000.0, 0, -1.0, 4_500_000.0), (10, 10))
    assert miss.empty and not miss.inside


def test_source_window_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="invertible"):
        source_window(_hr_chip(), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0), (10, 10))
    with pytest.raises(ValueError, match="margin"):
        source_window(_hr_chip(), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), (10, 10), margin_px=-1)


def _recipe_with_ratio(lr_gsd_m: float, lr_px: int, hr_gsd_m: float, hr_px: int) -> Recipe:
    """sen2venus with its groups resized: one LR group and the HR group at the given sizes."""
    data = load_recipe("sen2venus").model_dump(mode="json")
    data["lr"]["groups"] = [
        {**data["lr"]["groups"][0], "gsd_m": lr_gsd_m, "chip_px": lr_px},
        {**data["lr"]["groups"][1], "gsd_m": 2 * lr_gsd_m, "chip_px": lr_px // 2},
    ]
    data["hr"]["groups"][0].update(gsd_m=hr_gsd_m, chip_px=hr_px)
    return Recipe.model_validate(data)


@pytest.mark.parametrize(
    ("lr", "hr", "ratio"),
    [
        ((10.0, 128), (5.0, 256), Fraction(2)),
        ((12.5, 64), (5.0, 160), Fraction(5, 2)),  # Sentinel-HR: S2 at 12.5 m over VENuS
        ((10.0, 120), (2.5, 480), Fraction(4)),
        ((25.0, 32), (5.0, 160), Fraction(5)),
        ((30.0, 40), (5.0, 240), Fraction(6)),
    ],
)
def test_rational_ratios_nest_exactly(lr: tuple, hr: tuple, ratio: Fraction) -> None:
    recipe = _recipe_with_ratio(*lr, *hr)
    assert group_ratio(recipe.lr.gsd_m, recipe.hr.gsd_m) == ratio
    for lon, lat in PLACES:
        chips = chip_grids(lon, lat, recipe)
        groups = chips.of_role("lr") + chips.of_role("hr")
        assert len(groups) == 3
        for grid in groups:
            # Exactly one footprint: float64 corners agree to the bit, not only to the cm.
            assert grid.bounds == chips.lr.bounds
        assert chips.hr.width * ratio.denominator == chips.lr.width * ratio.numerator
        # q coarse pixels are exactly p fine ones: their edges meet every q coarse pixels.
        assert ratio.denominator * chips.lr.gsd_m == ratio.numerator * chips.hr.gsd_m


def test_non_integer_ratio_is_area_averaged_exactly() -> None:
    # 5 m pixels onto 12.5 m ones: each coarse pixel is 2.5 x 2.5 fine pixels, weighted by area.
    rng = np.random.default_rng(0)
    fine = rng.random((2, 10, 10))
    coarse = area_resample(fine, Fraction(5, 2))
    assert coarse.shape == (2, 4, 4)
    w = np.array([1.0, 1.0, 0.5, 0.0, 0.0])  # the first coarse pixel's column/row weights
    want = np.einsum("i,j,cij->c", w, w, fine[:, :5, :5]) / 6.25
    np.testing.assert_allclose(coarse[:, 0, 0], want, rtol=1e-12)
    # An integer ratio is the block mean itself (SEN2NAIP's numbers unchanged).
    np.testing.assert_array_equal(area_resample(fine, 2), block_mean(fine, 2))
    # Area averaging keeps the mean of the chip.
    assert coarse.mean() == pytest.approx(fine.mean(), rel=1e-12)
    mask = np.zeros((10, 10), bool)
    mask[4, 4] = True  # fine pixel 4 (20-25 m) lies in coarse pixel 1 (12.5-25 m)
    assert np.argwhere(block_any(mask, Fraction(5, 2))).tolist() == [[1, 1]]
