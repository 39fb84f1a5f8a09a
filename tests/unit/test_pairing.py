from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from harvest.backends.base import AssetRef, SceneRef
from harvest.errors import CatalogError, InputFileError
from harvest.pairing import (
    COVERAGE_TOLERANCE_M2,
    DropReason,
    RoiFootprint,
    early_late,
    pair_scenes,
    season_of,
    utm_epsg,
)
from harvest.recipes import Recipe, load_recipe

LON, LAT = -100.0, 40.0  # UTM zone 14N
EPSG = 32614
TO_UTM = Transformer.from_crs(4326, EPSG, always_xy=True)
TO_LL = Transformer.from_crs(EPSG, 4326, always_xy=True)
CX, CY = TO_UTM.transform(LON, LAT)
T0 = datetime(2020, 7, 10, 17, 30, tzinfo=UTC)
BIG = 50_000.0  # metres: scenes far wider than a chip


@pytest.fixture(scope="module")
def sen2naip() -> Recipe:
    return load_recipe("sen2naip")


def utm_box(xmin: float, ymin: float, xmax: float, ymax: float) -> BaseGeometry:
    """A box given in metres relative to the ROI centre, as a lon/lat polygon."""
    geom = shapely.segmentize(box(CX + xmin, CY + ymin, CX + xmax, CY + ymax), 1000.0)
    return shapely.transform(geom, _ll)


def _ll(xy: np.ndarray) -> np.ndarray:
    x, y = TO_LL.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _utm(xy: np.ndarray) -> np.ndarray:
    x, y = TO_UTM.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


WIDE = utm_box(-BIG, -BIG, BIG, BIG)


def s2(item_id: str, when: datetime, geom: BaseGeometry = WIDE, **kw: object) -> SceneRef:
    return SceneRef(
        item_id=item_id,
        collection="sentinel-2-l2a",
        provider="demo",
        datetime=when,
        geometry=geom,
        assets={"B04": AssetRef(f"https://x/{item_id}/B04.tif")},
        cloud_cover_pct=kw.pop("cloud", 5.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def naip(item_id: str, when: datetime, geom: BaseGeometry = WIDE, **kw: object) -> SceneRef:
    return SceneRef(
        item_id=item_id,
        collection="naip",
        provider="demo",
        datetime=when,
        geometry=geom,
        assets={"red": AssetRef(f"https://x/{item_id}.tif")},
        **kw,  # type: ignore[arg-type]
    )


def roi(roi_id: str = "roi-1", dx_m: float = 0.0, side_m: float = 1210.0) -> RoiFootprint:
    lon, lat = TO_LL.transform(CX + dx_m, CY)
    return RoiFootprint.square(roi_id, lon, lat, side_m)


def test_square_roi_has_the_chip_size_in_metres() -> None:
    r = roi()
    assert r.utm_epsg == EPSG == utm_epsg(LON, LAT)
    metric = shapely.transform(r.geometry, _utm)
    assert metric.area == pytest.approx(1210.0**2, rel=1e-6)
    xmin, ymin, xmax, ymax = metric.bounds
    assert (xmax - xmin, ymax - ymin) == (pytest.approx(1210.0), pytest.approx(1210.0))
    assert utm_epsg(151.2, -33.9) == 32756  # Sydney: southern hemisphere
    with pytest.raises(InputFileError, match="no area"):
        RoiFootprint("p", shapely.Point(0, 0))


def test_a_simple_pair(sen2naip: Recipe) -> None:
    res = pair_scenes([roi()], [s2("S2", T0)], [naip("N", T0 + timedelta(hours=20))], sen2naip)
    assert res.dropped == () and res.candidates == ()
    (p,) = res.pairs
    assert (p.roi_id, p.lr.item_id, p.hr.item_id, p.rank) == ("roi-1", "S2", "N", 0)
    assert p.dt_hours == pytest.approx(20.0)
    assert (p.lr_coverage_pct, p.hr_coverage_pct) == (100.0, 100.0)
    assert p.cloud_score_pct == 5.0  # NAIP has no cloud cover: the S2 value decides


def test_dt_is_signed_and_the_window_is_inclusive(sen2naip: Recipe) -> None:
    day = timedelta(days=1)
    res = pair_scenes(
        [roi("a"), roi("b", dx_m=3000)],
        [s2("S2", T0)],
        [
            naip("early", T0 - day, geom=utm_box(-1000, -1000, 1000, 1000)),
            naip("late", T0 + day + timedelta(seconds=1), geom=utm_box(2000, -1000, 4000, 1000)),
        ],
        sen2naip,
    )
    assert [(p.roi_id, p.hr.item_id, p.dt_hours) for p in res.pairs] == [("a", "early", -24.0)]
    assert [(d.roi_id, d.reason) for d in res.dropped] == [("b", DropReason.NO_PAIR_IN_TIME_WINDOW)]
    assert "|dt| <= 1 days" in res.dropped[0].detail


def test_every_reason_code(sen2naip: Recipe) -> None:
    xs = {
        name: 5000.0 * i
        for i, name in enumerate(
            ["ok", "no_lr", "no_hr", "partial_lr", "partial_hr", "old_hr", "cloudy", "time"]
        )
    }

    def at(name: str, half: float = 2000.0) -> BaseGeometry:
        x = xs[name]
        return utm_box(x - half, -half, x + half, half)

    def half_over(name: str) -> BaseGeometry:
        # Covers only the western half of the chip.
        x = xs[name]
        return utm_box(x - 2000, -2000, x, 2000)

    lr = [
        s2("lr-ok", T0, at("ok")),
        s2("lr-no-hr", T0, at("no_hr")),
        s2("lr-partial", T0, half_over("partial_lr")),
        s2("lr-for-partial-hr", T0, at("partial_hr")),
        s2("lr-for-old-hr", T0, at("old_hr")),
        s2("lr-cloudy", T0, at("cloudy"), cloud=50.01),
        s2("lr-time", T0, at("time")),
    ]
    hr = [
        naip("hr-ok", T0, at("ok")),
        naip("hr-no-lr", T0, at("no_lr")),
        naip("hr-partial-lr", T0, at("partial_lr")),
        naip("hr-partial", T0, half_over("partial_hr")),
        naip("hr-2010", datetime(2010, 12, 31, 23, tzinfo=UTC), at("old_hr")),
        naip("hr-cloudy", T0, at("cloudy")),
        naip("hr-time", T0 + timedelta(days=3), at("time")),
    ]
    rois = [roi(name, dx_m=x) for name, x in xs.items()]
    res = pair_scenes(rois, lr, hr, sen2naip)
    assert [p.roi_id for p in res.pairs] == ["ok"]
    assert {d.roi_id: d.reason.value for d in res.dropped} == {
        "no_lr": "no_lr_scene",
        "no_hr": "no_hr_scene",
        "partial_lr": "partial_coverage",
        "partial_hr": "partial_coverage",
        "old_hr": "hr_before_min_year",
        "cloudy": "cloudy",
        "time": "no_pair_in_time_window",
    }
    by_id = {d.roi_id: d for d in res.dropped}
    assert (by_id["no_lr"].n_lr_scenes, by_id["no_lr"].n_hr_scenes) == (0, 1)
    assert "no LR scene covers" in by_id["partial_lr"].detail
    assert "no HR scene covers" in by_id["partial_hr"].detail
    assert "older than 2011" in by_id["old_hr"].detail
    assert "cloud > 50 %" in by_id["cloudy"].detail


def test_cloud_limit_is_inclusive_and_unknown_cloud_passes(sen2naip: Recipe) -> None:
    res = pair_scenes(
        [roi()],
        [s2("S2-50", T0, cloud=50.0), s2("S2-unknown", T0, cloud=None)],
        [naip("N", T0)],
        sen2naip,
        all_candidates=True,
    )
    # Unknown cloud counts as 0 in the score: it ranks before 50 %.
    assert [(c.lr.item_id, c.rank) for c in res.candidates] == [("S2-unknown", 0), ("S2-50", 1)]


def test_score_order_dt_then_cloud_then_view_then_ids(sen2naip: Recipe) -> None:
    hr = [naip("N", T0)]
    hour = timedelta(hours=1)
    lr = [
        s2("far-clear", T0 + 2 * hour, cloud=0.0),
        s2("near-cloudy", T0 + hour, cloud=30.0),
        s2("near-clear-oblique", T0 - hour, cloud=10.0, view_off_nadir_deg=-9.0),
        s2("near-clear-nadir-b", T0 + hour, cloud=10.0, view_off_nadir_deg=2.0),
        s2("near-clear-nadir-a", T0 - hour, cloud=10.0, view_off_nadir_deg=2.0),
    ]
    res = pair_scenes([roi()], lr, hr, sen2naip, all_candidates=True)
    assert [c.lr.item_id for c in res.candidates] == [
        "near-clear-nadir-a",
        "near-clear-nadir-b",
        "near-clear-oblique",
        "near-cloudy",
        "far-clear",
    ]
    assert [c.rank for c in res.candidates] == [0, 1, 2, 3, 4]
    assert res.pairs == (res.candidates[0],)
    assert res.candidates[2].view_score_deg == 9.0


def test_result_does_not_depend_on_input_order(sen2naip: Recipe) -> None:
    rng = random.Random(7)
    rois = [roi(f"r{i:02d}", dx_m=700.0 * i) for i in range(20)]
    lr = [
        s2(
            f"S2-{i}",
            T0 + timedelta(hours=rng.choice([-5, 0, 5])),
            cloud=rng.choice([1.0, 9.0]),
            geom=utm_box(700.0 * i - 3000, -3000, 700.0 * i + 3000, 3000),
        )
        for i in range(20)
    ]
    hr = [
        naip(
            f"N-{i}",
            T0 + timedelta(hours=rng.choice([0, 3])),
            geom=utm_box(1400.0 * i - 2500, -3000, 1400.0 * i + 2500, 3000),
        )
        for i in range(10)
    ]
    ref = pair_scenes(rois, lr, hr, sen2naip, all_candidates=True)
    assert len(ref.pairs) > 5 and len(ref.candidates) > len(ref.pairs)
    for seed in range(3):
        shuffled = random.Random(seed)
        lr2, hr2 = lr[:], hr[:] + hr[:3]  # repeated scenes are dropped
        shuffled.shuffle(lr2)
        shuffled.shuffle(hr2)
        again = pair_scenes(rois, lr2, hr2, sen2naip, all_candidates=True)
        assert again == ref
    assert [p.roi_id for p in ref.pairs] == sorted(p.roi_id for p in ref.pairs)


def test_same_day_is_the_utc_calendar_day() -> None:
    recipe = load_recipe("sen2venus")  # max_dt_days 1 and same_day
    venus = recipe.hr.collection
    late = datetime(2019, 5, 1, 23, 0, tzinfo=UTC)

    def vns(item_id: str, when: datetime) -> SceneRef:
        return SceneRef(item_id, venus, "demo", when, WIDE, {"B3": AssetRef("https://v")})

    res = pair_scenes(
        [roi("a"), roi("b", dx_m=60_000)],
        [s2("S2-a", late), s2("S2-b", late, geom=utm_box(55_000, -5000, 65_000, 5000))],
        [
            vns("V-a", late - timedelta(hours=22)),  # same day
            SceneRef(
                "V-b",
                venus,
                "demo",
                late + timedelta(hours=2),
                utm_box(55_000, -5000, 65_000, 5000),
                {"B3": AssetRef("https://v")},
            ),
        ],
        recipe,
    )
    assert [(p.roi_id, p.dt_hours) for p in res.pairs] == [("a", -22.0)]
    assert [(d.roi_id, d.reason) for d in res.dropped] == [("b", DropReason.NO_PAIR_IN_TIME_WINDOW)]
    assert "same UTC day" in res.dropped[0].detail


def test_same_season_uses_meteorological_seasons_of_the_same_year() -> None:
    recipe = load_recipe("sen12")  # LR Sentinel-1, HR Sentinel-2, 92 days, same season

    def s1(item_id: str, when: datetime) -> SceneRef:
        return SceneRef(
            item_id, "sentinel-1-grd", "demo", when, WIDE, {"VV": AssetRef("https://s")}
        )

    def sentinel2(item_id: str, when: datetime) -> SceneRef:
        return s2(item_id, when, cloud=0.5)

    def only(lr: SceneRef, hr: SceneRef) -> bool:
        return bool(pair_scenes([roi()], [lr], [hr], recipe).pairs)

    dec16 = datetime(2016, 12, 5, tzinfo=UTC)
    assert only(s1("a", dec16), sentinel2("b", datetime(2017, 2, 25, tzinfo=UTC)))  # DJF 2017
    # One day apart but February vs March: different seasons.
    assert not only(
        s1("a", datetime(2017, 2, 28, tzinfo=UTC)), sentinel2("b", datetime(2017, 3, 1, tzinfo=UTC))
    )
    # Both in DJF but of different years, and more than 92 days apart anyway.
    assert not only(s1("a", dec16), sentinel2("b", datetime(2016, 1, 20, tzinfo=UTC)))
    # Both in JJA 2017, 85 days apart: within 92 days.
    assert only(
        s1("a", datetime(2017, 6, 2, tzinfo=UTC)), sentinel2("b", datetime(2017, 8, 26, tzinfo=UTC))
    )
    # The 1 % cloud limit applies to the S2 side; S1 (no cloud cover) passes.
    cloudy = s2("c", datetime(2017, 6, 3, tzinfo=UTC), cloud=1.5)
    res = pair_scenes([roi()], [s1("a", datetime(2017, 6, 2, tzinfo=UTC))], [cloudy], recipe)
    assert res.dropped[0].reason is DropReason.CLOUDY
    assert [season_of(datetime(2017, m, 1)) for m in (12, 1, 3, 6, 9, 11)] == [
        "DJF",
        "DJF",
        "MAM",
        "JJA",
        "SON",
        "SON",
    ]


def test_coverage_is_measured_in_metres_with_a_sliver_tolerance(sen2naip: Recipe) -> None:
    half = 605.0
    # Shares the chip's western edge: covered.
    flush = s2("flush", T0, utm_box(-half, -5000, 5000, 5000))
    # 1 m short of the western edge: 1210 m^2 uncovered.
    short_1m = s2("short-1m", T0, utm_box(-half + 1.0, -5000, 5000, 5000))
    sliver = s2("sliver", T0, utm_box(-half + 0.0005, -5000, 5000, 5000))
    results = {
        s.item_id: pair_scenes([roi()], [s], [naip("N", T0)], sen2naip, all_candidates=True)
        for s in (flush, short_1m, sliver)
    }
    assert results["flush"].pairs[0].lr_coverage_pct == 100.0
    # 0.5 mm x 1210 m = 0.6 m^2 uncovered: within the tolerance.
    assert COVERAGE_TOLERANCE_M2 > 0.0005 * 1210
    assert results["sliver"].pairs[0].lr_coverage_pct == 100.0
    # A 1 m strip (1210 m^2) is not.
    assert results["short-1m"].pairs == ()
    assert results["short-1m"].dropped[0].reason is DropReason.PARTIAL_COVERAGE


def test_partial_coverage_reports_the_best_coverage(sen2naip: Recipe) -> None:
    # A quarter of the chip (302.5 m of its 1210 m width) is outside the scene.
    scene = s2("S2", T0, utm_box(-605 + 302.5, -5000, 5000, 5000))
    res = pair_scenes([roi()], [scene], [naip("N", T0)], sen2naip)
    (dropped,) = res.dropped
    assert dropped.reason is DropReason.PARTIAL_COVERAGE
    assert "best LR coverage 75.0 %" in dropped.detail


def test_input_errors(sen2naip: Recipe) -> None:
    with pytest.raises(InputFileError, match="unique; repeated: a"):
        pair_scenes([roi("a"), roi("a", 5000)], [], [], sen2naip)
    with pytest.raises(CatalogError, match="LR scenes of collection\\(s\\) naip"):
        pair_scenes([roi()], [naip("N", T0)], [], sen2naip)
    assert pair_scenes([], [s2("S", T0)], [naip("N", T0)], sen2naip).pairs == ()
    nothing = pair_scenes([roi()], [], [naip("N", T0)], sen2naip)
    assert [d.reason for d in nothing.dropped] == [DropReason.NO_LR_SCENE]


def test_pairs_flatten_to_a_parquet_table(sen2naip: Recipe, tmp_path: Path) -> None:
    res = pair_scenes([roi()], [s2("S2", T0)], [naip("N", T0)], sen2naip)
    row = res.pairs[0].to_record()
    assert row["lr_item_id"] == "S2" and row["hr_item_id"] == "N"
    assert row["hr_collection"] == "naip" and row["lr_cloud_cover_pct"] == 5.0
    assert isinstance(row["lr_footprint"], bytes)
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "pairs.parquet")
    back = pq.read_table(tmp_path / "pairs.parquet").to_pylist()[0]
    assert back["dt_hours"] == 0.0 and back["lr_assets_json"] == row["lr_assets_json"]


@pytest.mark.slow
def test_many_rois_are_paired_without_quadratic_work(sen2naip: Recipe) -> None:
    # 4,000 ROIs on a 20 x 200 km strip, 60 S2 and 400 NAIP footprints.
    rois = []
    for i in range(4000):
        x, y = CX + (i % 200) * 1000.0, CY + (i // 200) * 1000.0
        lon, lat = TO_LL.transform(x, y)
        rois.append(RoiFootprint.square(f"r{i}", lon, lat, 1210.0, epsg=EPSG))
    lr = [
        s2(
            f"S2-{k}-{d}",
            T0 + timedelta(days=d, hours=k),
            geom=utm_box(k * 50_000 - 5000, -10_000, k * 50_000 + 60_000, 30_000),
        )
        for k in range(4)
        for d in range(15)
    ]
    hr = [
        naip(
            f"N-{k}",
            T0 + timedelta(hours=k % 24),
            geom=utm_box(k * 500 - 1000, -1000, k * 500 + 1500, 25_000),
        )
        for k in range(400)
    ]
    started = time.perf_counter()
    res = pair_scenes(rois, lr, hr, sen2naip)
    elapsed = time.perf_counter() - started
    assert len(res.pairs) + len(res.dropped) == 4000
    assert len(res.pairs) > 3000
    assert elapsed < 30.0


def test_early_late_picks_the_oldest_and_newest_covering_scene(sen2naip: Recipe) -> None:
    xs = {name: 5000.0 * i for i, name in enumerate(["ok", "one_day", "partial", "old", "none"])}

    def at(name: str, half: float = 2000.0) -> BaseGeometry:
        x = xs[name]
        return utm_box(x - half, -half, x + half, half)

    def y(year: int, month: int = 7, day: int = 1) -> datetime:
        return datetime(year, month, day, tzinfo=UTC)

    hr = [
        # ok: four years; the 2010 flight is before 2011 and the partial one does not count.
        naip("ok-2010", y(2010), at("ok")),
        naip("ok-2013", y(2013), at("ok")),
        naip("ok-2019", y(2019), at("ok")),
        naip("ok-2021-b", y(2021), at("ok")),
        naip("ok-2021-a", y(2021), at("ok")),  # same instant: the smaller id wins
        naip("ok-2023-partial", y(2023), utm_box(xs["ok"] - 2000, -2000, xs["ok"], 2000)),
        # one_day: two tiles of the same day are one acquisition.
        naip("day-a", y(2020, 6, 5), at("one_day")),
        naip("day-b", y(2020, 6, 5), at("one_day")),
        naip("partial-1", y(2015), utm_box(xs["partial"] - 2000, -2000, xs["partial"], 2000)),
        naip("old-1", y(2009), at("old")),
        naip("old-2", y(2010), at("old")),
    ]
    rois = [roi(name, dx_m=x) for name, x in xs.items()]
    res = early_late(rois, list(reversed(hr)), sen2naip)  # the catalog's order does not matter
    assert [(c.roi_id, c.early.item_id, c.late.item_id, c.n_scenes) for c in res.chosen] == [
        ("ok", "ok-2013", "ok-2021-a", 4)
    ]
    assert {d.roi_id: d.reason.value for d in res.dropped} == {
        "one_day": "single_acquisition",
        "partial": "partial_coverage",
        "old": "hr_before_min_year",
        "none": "no_hr_scene",
    }
    by_id = {d.roi_id: d for d in res.dropped}
    assert "2020-06-05" in by_id["one_day"].detail and by_id["one_day"].n_hr_scenes == 2
    assert all(d.n_lr_scenes == 0 for d in res.dropped)
    assert [d.roi_id for d in res.dropped] == ["one_day", "partial", "old", "none"]
    with pytest.raises(CatalogError, match="collection"):
        early_late(rois, [s2("s2", T0)], sen2naip)
