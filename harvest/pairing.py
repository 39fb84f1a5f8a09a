"""Pairing: from ROIs and found scenes to one (LR, HR) acquisition pair per ROI.

Pure: no I/O and no network; scenes come in as :class:`~harvest.backends.base.SceneRef` lists,
already searched. Everything is vectorised: an STRtree assigns scenes to ROIs, coverage is
computed with array functions, and the time-window join is a bucketed table merge, so pairing
100,000 ROIs costs no Python loop over ROIs x scenes.

Rules, applied as a funnel (the first that leaves a ROI without candidates is its drop reason):

1. **Coverage** (``partial_coverage``): the scene footprint must cover the whole ROI chip. It is
   tested exactly (``covers``) in EPSG:4326; for the scenes that do not pass, the uncovered area
   is measured in square metres (the uncovered share of the ROI times the ROI's area in its UTM
   zone), and an uncovered area of at most :data:`COVERAGE_TOLERANCE_M2` still counts as full
   coverage (floating-point slivers along a shared edge). Recorded coverage is a percentage of
   the ROI area.
2. **HR year** (``hr_before_min_year``): the HR scene's UTC year >= ``recipe.hr_min_year``.
3. **Scene cloud** (``cloudy``): cloud cover <= ``recipe.max_scene_cloud_pct`` for both scenes.
   Scenes without a cloud cover (SAR, NAIP) pass: chip-level cloud checks come later (qa).
4. **Time** (``no_pair_in_time_window``): ``|t_hr - t_lr| <= recipe.pairing.max_dt_days``; with
   ``same_day`` both on the same UTC calendar day; with ``same_season`` both in the same
   meteorological season *of the same year*: DJF (December counts with the following January and
   February, as SEN1-2's winter 2016-12-01..2017-02-28), MAM, JJA, SON. Seasons are the calendar
   month groups, which are hemisphere-neutral: both scenes of a pair lie over the same place, so
   only the grouping matters, not whether DJF is winter or summer there.

ROIs without any intersecting LR or HR scene are dropped as ``no_lr_scene`` / ``no_hr_scene``.

Score (lower is better; the chosen pair has ``rank`` 0): smallest ``|dt|``, then least cloud
(the larger of the two scenes' known cloud covers; unknown counts as 0), then smallest view
angle (the larger of the two known absolute off-nadir angles; unknown counts as 0), then the LR
item id and the HR item id in lexicographic order, so ties are broken the same way on every run
and for any input order.

:func:`early_late` is the synthetic set's search (SEN2NAIP: no LR side): per ROI the oldest
(``early``, from ``recipe.hr_min_year`` on) and the most recent (``late``) HR acquisition that
covers the whole chip, on two different UTC days; the same coverage, year and cloud rules, and
``single_acquisition`` for a ROI with qualifying scenes of one day only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from harvest.backends.base import SceneRef, dedupe_scenes
from harvest.errors import CatalogError, InputFileError
from harvest.grid import utm_epsg
from harvest.recipes import Recipe

COVERAGE_TOLERANCE_M2 = 1.0
"""Uncovered ROI area (m^2) still counted as full coverage: a sixth of one 2.5 m HR pixel."""

_SECONDS_PER_DAY = 86_400.0
_SEASONS = ("DJF", "MAM", "JJA", "SON")


class DropReason(StrEnum):
    """Why a ROI got no pair (the first filter of the funnel that left it without candidates)."""

    NO_LR_SCENE = "no_lr_scene"
    NO_HR_SCENE = "no_hr_scene"
    PARTIAL_COVERAGE = "partial_coverage"
    HR_BEFORE_MIN_YEAR = "hr_before_min_year"
    CLOUDY = "cloudy"
    NO_PAIR_IN_TIME_WINDOW = "no_pair_in_time_window"
    SINGLE_ACQUISITION = "single_acquisition"


@lru_cache(maxsize=128)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=128)
def _from_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _project(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, apply))


@dataclass(frozen=True)
class RoiFootprint:
    """A ROI chip to pair: its id and its footprint polygon in EPSG:4326.

    Attributes:
        roi_id: Stable ROI id.
        geometry: Chip footprint (lon, lat).
        utm_epsg: Metric CRS for coverage areas; None: the UTM zone of the centroid.
    """

    roi_id: str
    geometry: BaseGeometry
    utm_epsg: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, BaseGeometry) or self.geometry.is_empty:
            raise InputFileError(f"ROI {self.roi_id} has an empty footprint")
        if self.geometry.area == 0:
            raise InputFileError(
                f"ROI {self.roi_id} footprint has no area (a point?): build it with "
                "RoiFootprint.square(roi_id, lon, lat, chip_side_m)"
            )

    @classmethod
    def square(
        cls, roi_id: str, lon: float, lat: float, side_m: float, epsg: int | None = None
    ) -> RoiFootprint:
        """A square chip of ``side_m`` metres centred on a point, square in its UTM zone.

        Args:
            roi_id: Stable ROI id.
            lon: Centre longitude in degrees.
            lat: Centre latitude in degrees.
            side_m: Chip side in metres (``recipe.lr.chip_side_m``).
            epsg: Metric CRS to build the square in; default the point's UTM zone.
        """
        if side_m <= 0:
            raise InputFileError(f"ROI {roi_id}: chip side {side_m} m must be positive")
        epsg = epsg or int(utm_epsg(lon, lat))
        x, y = _to_utm(epsg).transform(lon, lat)
        half = side_m / 2.0
        square = shapely.box(x - half, y - half, x + half, y + half)
        # Densify so the lon/lat polygon follows the metric square's edges.
        square = shapely.segmentize(square, side_m / 8.0)
        geometry = _project(np.array([square]), _from_utm(epsg))[0]
        return cls(roi_id=roi_id, geometry=geometry, utm_epsg=epsg)


@dataclass(frozen=True)
class PairCandidate:
    """One (LR, HR) pair for one ROI.

    Attributes:
        roi_id: The ROI.
        lr: The low-resolution scene.
        hr: The high-resolution scene.
        dt_hours: ``t_hr - t_lr`` in hours (signed; the rules use its absolute value).
        lr_coverage_pct: Share of the ROI covered by the LR footprint (100 within tolerance).
        hr_coverage_pct: Share of the ROI covered by the HR footprint.
        cloud_score_pct: Score term: larger known scene cloud cover of the two (0 if none).
        view_score_deg: Score term: larger known absolute off-nadir angle (0 if none).
        rank: 0 for the chosen pair of the ROI, 1, 2, ... for the other candidates.
    """

    roi_id: str
    lr: SceneRef
    hr: SceneRef
    dt_hours: float
    lr_coverage_pct: float
    hr_coverage_pct: float
    cloud_score_pct: float
    view_score_deg: float
    rank: int

    def to_record(self) -> dict[str, Any]:
        """A flat row: pair fields, then every scene field prefixed ``lr_`` / ``hr_``.

        Scene footprints come as WKB in ``lr_footprint`` / ``hr_footprint``.
        """
        row: dict[str, Any] = {
            "roi_id": self.roi_id,
            "rank": self.rank,
            "dt_hours": self.dt_hours,
            "lr_coverage_pct": self.lr_coverage_pct,
            "hr_coverage_pct": self.hr_coverage_pct,
            "cloud_score_pct": self.cloud_score_pct,
            "view_score_deg": self.view_score_deg,
        }
        for prefix, scene in (("lr", self.lr), ("hr", self.hr)):
            for key, value in scene.to_record().items():
                name = "footprint" if key == "geometry" else key
                row[f"{prefix}_{name}"] = value
        return row

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> PairCandidate:
        """Rebuild a pair from a row written by :meth:`to_record` (extra columns are ignored).

        Raises:
            InputFileError: a pair column is missing.
            CatalogError: a scene column is missing or unreadable.
        """
        missing = [c for c in _PAIR_FIELDS if c not in row]
        if missing:
            raise InputFileError(
                f"pair row lacks column(s) {', '.join(missing)}: "
                "was it written by 'harvest search'?"
            )
        scenes = []
        for prefix in ("lr", "hr"):
            cut = len(prefix) + 1
            sub = {k[cut:]: v for k, v in row.items() if k.startswith(f"{prefix}_")}
            if "footprint" in sub:
                sub["geometry"] = sub.pop("footprint")
            scenes.append(SceneRef.from_record(sub))
        return cls(
            roi_id=str(row["roi_id"]),
            lr=scenes[0],
            hr=scenes[1],
            dt_hours=float(row["dt_hours"]),
            lr_coverage_pct=float(row["lr_coverage_pct"]),
            hr_coverage_pct=float(row["hr_coverage_pct"]),
            cloud_score_pct=float(row["cloud_score_pct"]),
            view_score_deg=float(row["view_score_deg"]),
            rank=int(row["rank"]),
        )


_PAIR_FIELDS = (
    "roi_id",
    "rank",
    "dt_hours",
    "lr_coverage_pct",
    "hr_coverage_pct",
    "cloud_score_pct",
    "view_score_deg",
)


@dataclass(frozen=True)
class DroppedRoi:
    """A ROI that got no pair, and why.

    Attributes:
        roi_id: The ROI.
        reason: The first filter that left it without candidates.
        n_lr_scenes: LR scenes intersecting the ROI.
        n_hr_scenes: HR scenes intersecting the ROI.
        detail: One human-readable sentence.
    """

    roi_id: str
    reason: DropReason
    n_lr_scenes: int
    n_hr_scenes: int
    detail: str


@dataclass(frozen=True)
class PairingResult:
    """Output of :func:`pair_scenes`, every tuple in the input ROI order.

    Attributes:
        pairs: The chosen pair of each paired ROI.
        dropped: One entry per ROI without a pair.
        candidates: Every candidate (rank 0 first within a ROI) when asked for, else empty.
    """

    pairs: tuple[PairCandidate, ...]
    dropped: tuple[DroppedRoi, ...]
    candidates: tuple[PairCandidate, ...] = ()


@dataclass(frozen=True)
class _SideMatch:
    """Scenes of one side (LR or HR) matched to ROIs: one row per intersecting (roi, scene)."""

    scenes: tuple[SceneRef, ...]
    roi: np.ndarray  # ROI index per row
    scene: np.ndarray  # scene index per row
    coverage_pct: np.ndarray
    full: np.ndarray  # bool: covers the ROI within tolerance
    year_ok: np.ndarray
    cloud_ok: np.ndarray


def _season_key(when: Any) -> int:
    # December belongs to the DJF season of the following year.
    season_year = when.year + (1 if when.month == 12 else 0)
    return season_year * 4 + (when.month % 12) // 3


def season_of(when: Any) -> str:
    """Meteorological season label of a datetime (``DJF``, ``MAM``, ``JJA``, ``SON``)."""
    return _SEASONS[(when.month % 12) // 3]


def _roi_areas_m2(roi_geoms: np.ndarray, epsgs: np.ndarray) -> np.ndarray:
    """Area of each ROI in its metric CRS (one projection per ROI, grouped by EPSG)."""
    areas = np.zeros(len(roi_geoms))
    for epsg in np.unique(epsgs):
        sel = epsgs == epsg
        areas[sel] = shapely.area(_project(roi_geoms[sel], _to_utm(int(epsg))))
    return areas


def _coverage_pct(
    roi_geoms: np.ndarray, scene_geoms: np.ndarray, roi_areas_m2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (percent) and uncovered area (m^2) of each ROI by its paired scene.

    The covered share is a ratio of areas in lon/lat: over a chip a few km wide the map scale
    varies by less than 1e-3, so the ratio equals the metric one to that precision; the ratio
    then scales the ROI's metric area (projected once per ROI, not once per pair).
    """
    pieces = shapely.intersection(scene_geoms, roi_geoms)
    share = np.minimum(shapely.area(pieces) / shapely.area(roi_geoms), 1.0)
    return 100.0 * share, (1.0 - share) * roi_areas_m2


def _expand(counts: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows pointing at groups of ``counts`` members: (row of each member, member rank)."""
    per_row = counts[rows]
    row_of = np.repeat(np.arange(len(rows)), per_row)
    rank = np.arange(len(row_of)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    return row_of, rank


def _match_side(
    scenes: tuple[SceneRef, ...],
    roi_tree: shapely.STRtree,
    roi_geoms: np.ndarray,
    roi_areas_m2: np.ndarray,
    max_cloud_pct: float,
    min_year: int | None,
) -> _SideMatch:
    empty_i = np.zeros(0, dtype=np.intp)
    empty_b = np.zeros(0, dtype=bool)
    if not scenes:
        return _SideMatch(scenes, empty_i, empty_i, np.zeros(0), empty_b, empty_b, empty_b)
    scene_geoms = np.array([s.geometry for s in scenes], dtype=object)
    # Scenes of one tile often share a footprint: do the geometry work once per footprint.
    codes, _ = pd.factorize(shapely.to_wkb(scene_geoms))
    codes = codes.astype(np.intp)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    footprints = scene_geoms[order[starts]]
    # Prepared footprints make each predicate against many ROIs cheap; the tree holds the ROIs
    # so that every footprint is prepared once and queried once.
    shapely.prepare(footprints)
    fp_idx, roi_of_fp = roi_tree.query(footprints, predicate="intersects")
    full = shapely.covers(footprints[fp_idx], roi_geoms[roi_of_fp])
    coverage = np.full(len(fp_idx), 100.0)
    partial = ~full
    if partial.any():
        pct, uncovered_m2 = _coverage_pct(
            roi_geoms[roi_of_fp[partial]],
            footprints[fp_idx[partial]],
            roi_areas_m2[roi_of_fp[partial]],
        )
        within = uncovered_m2 <= COVERAGE_TOLERANCE_M2
        coverage[partial] = np.where(within, 100.0, pct)
        full[partial] = within
    # Back from footprints to scenes: one row per (roi, scene).
    row_of, rank = _expand(counts, fp_idx)
    scene_idx = order[starts[fp_idx][row_of] + rank]
    roi_idx = roi_of_fp[row_of]
    cloud = np.array([np.nan if s.cloud_cover_pct is None else s.cloud_cover_pct for s in scenes])[
        scene_idx
    ]
    cloud_ok = np.isnan(cloud) | (cloud <= max_cloud_pct)
    if min_year is None:
        year_ok = np.ones(len(scene_idx), dtype=bool)
    else:
        year_ok = np.array([s.datetime.year >= min_year for s in scenes], dtype=bool)[scene_idx]
    return _SideMatch(scenes, roi_idx, scene_idx, coverage[row_of], full[row_of], year_ok, cloud_ok)


def _check_inputs(
    rois: Sequence[RoiFootprint], lr: Iterable[SceneRef], hr: Iterable[SceneRef], recipe: Recipe
) -> tuple[tuple[SceneRef, ...], tuple[SceneRef, ...]]:
    ids = [r.roi_id for r in rois]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, k in Counter(ids).items() if k > 1)[:3]
        raise InputFileError(f"roi_id values must be unique; repeated: {', '.join(dup)}")
    out = []
    for side, scenes, spec in (("LR", lr, recipe.lr), ("HR", hr, recipe.hr)):
        unique = dedupe_scenes(scenes)
        wrong = sorted({s.collection for s in unique} - {spec.collection})
        if wrong:
            raise CatalogError(
                f"{side} scenes of collection(s) {', '.join(wrong)} given to recipe {recipe.name}, "
                f"whose {side} collection is {spec.collection}: pass the scenes of each side apart"
            )
        out.append(unique)
    return out[0], out[1]


def pair_scenes(
    rois: Sequence[RoiFootprint],
    lr_scenes: Iterable[SceneRef],
    hr_scenes: Iterable[SceneRef],
    recipe: Recipe,
    *,
    all_candidates: bool = False,
) -> PairingResult:
    """Choose one (LR, HR) pair per ROI by the recipe's rules (see the module docstring).

    Args:
        rois: ROI chips; roi_id must be unique.
        lr_scenes: Scenes of ``recipe.lr.collection`` (repeats are dropped).
        hr_scenes: Scenes of ``recipe.hr.collection``.
        recipe: Pairing rules, cloud limit and HR minimum year.
        all_candidates: Also return every candidate pair with its rank.

    Returns:
        Chosen pairs, dropped ROIs with reason codes and, on request, all candidates.

    Raises:
        InputFileError: repeated roi_id values or a ROI without area.
        CatalogError: scenes of a collection the recipe does not use on that side.
    """
    lr, hr = _check_inputs(rois, lr_scenes, hr_scenes, recipe)
    n = len(rois)
    if n == 0:
        return PairingResult(pairs=(), dropped=())
    roi_geoms = np.array([r.geometry for r in rois], dtype=object)
    centroids = shapely.centroid(roi_geoms)
    cx, cy = shapely.get_x(centroids), shapely.get_y(centroids)
    zone_epsgs = utm_epsg(cx, cy)
    roi_epsgs = np.array(
        [r.utm_epsg or int(z) for r, z in zip(rois, zone_epsgs, strict=True)], dtype=np.int64
    )
    cloud_max = recipe.max_scene_cloud_pct
    roi_tree = shapely.STRtree(roi_geoms)
    roi_areas = _roi_areas_m2(roi_geoms, roi_epsgs)
    lrm = _match_side(lr, roi_tree, roi_geoms, roi_areas, cloud_max, None)
    hrm = _match_side(hr, roi_tree, roi_geoms, roi_areas, cloud_max, recipe.hr_min_year)

    lr_ok = lrm.full & lrm.cloud_ok
    hr_ok = hrm.full & hrm.year_ok & hrm.cloud_ok
    table = _join_in_time(lrm, hrm, lr_ok, hr_ok, recipe)

    ranked = table.sort_values(
        ["roi", "abs_dt", "cloud", "view", "lr_id", "hr_id"], kind="mergesort"
    ).reset_index(drop=True)
    ranked["rank"] = ranked.groupby("roi", sort=False).cumcount()

    def build(rows: pd.DataFrame) -> tuple[PairCandidate, ...]:
        cols = zip(
            rows["roi"].to_numpy(dtype=np.intp).tolist(),
            rows["lr"].to_numpy(dtype=np.intp).tolist(),
            rows["hr"].to_numpy(dtype=np.intp).tolist(),
            rows["dt_s"].to_numpy(dtype=float).tolist(),
            rows["lr_cov"].to_numpy(dtype=float).tolist(),
            rows["hr_cov"].to_numpy(dtype=float).tolist(),
            rows["cloud"].to_numpy(dtype=float).tolist(),
            rows["view"].to_numpy(dtype=float).tolist(),
            rows["rank"].to_numpy(dtype=np.intp).tolist(),
            strict=True,
        )
        return tuple(
            PairCandidate(
                roi_id=rois[roi].roi_id,
                lr=lr[li],
                hr=hr[hi],
                dt_hours=dt_s / 3600.0,
                lr_coverage_pct=lr_cov,
                hr_coverage_pct=hr_cov,
                cloud_score_pct=cloud,
                view_score_deg=view,
                rank=rank,
            )
            for roi, li, hi, dt_s, lr_cov, hr_cov, cloud, view, rank in cols
        )

    chosen = build(ranked[ranked["rank"] == 0])
    candidates = build(ranked) if all_candidates else ()
    paired = np.zeros(n, dtype=bool)
    paired[ranked["roi"].to_numpy(dtype=np.intp)] = True
    dropped = _drop_reasons(rois, paired, lrm, hrm, lr_ok, hr_ok, recipe)
    return PairingResult(pairs=chosen, dropped=dropped, candidates=candidates)


def _join_in_time(
    lrm: _SideMatch, hrm: _SideMatch, lr_ok: np.ndarray, hr_ok: np.ndarray, recipe: Recipe
) -> pd.DataFrame:
    """All (roi, lr, hr) rows within the time rules, with their score terms."""
    rules = recipe.pairing
    max_dt_s = rules.max_dt_days * _SECONDS_PER_DAY
    # Buckets at least a day wide: a pair within max_dt lies in the same or an adjacent bucket.
    width = max(max_dt_s, _SECONDS_PER_DAY)

    def side_frame(m: _SideMatch, ok: np.ndarray, name: str) -> pd.DataFrame:
        scenes = m.scenes
        t = np.array([s.datetime.timestamp() for s in scenes])
        off = np.array(
            [np.nan if s.view_off_nadir_deg is None else abs(s.view_off_nadir_deg) for s in scenes]
        )
        cloud = np.array(
            [np.nan if s.cloud_cover_pct is None else s.cloud_cover_pct for s in scenes]
        )
        day = np.array([s.datetime.date().toordinal() for s in scenes], dtype=np.int64)
        season = np.array([_season_key(s.datetime) for s in scenes], dtype=np.int64)
        ids = np.array([s.item_id for s in scenes], dtype=object)
        idx = m.scene[ok]
        return pd.DataFrame(
            {
                "roi": m.roi[ok],
                name: idx,
                f"{name}_t": t[idx] if len(scenes) else np.zeros(0),
                f"{name}_off": off[idx] if len(scenes) else np.zeros(0),
                f"{name}_cloud": cloud[idx] if len(scenes) else np.zeros(0),
                f"{name}_day": day[idx] if len(scenes) else np.zeros(0, dtype=np.int64),
                f"{name}_season": season[idx] if len(scenes) else np.zeros(0, dtype=np.int64),
                f"{name}_id": ids[idx] if len(scenes) else np.zeros(0, dtype=object),
                f"{name}_cov": m.coverage_pct[ok],
            }
        )

    left = side_frame(lrm, lr_ok, "lr")
    right = side_frame(hrm, hr_ok, "hr")
    left["bucket"] = np.floor(left["lr_t"].to_numpy() / width).astype(np.int64)
    hb = np.floor(right["hr_t"].to_numpy() / width).astype(np.int64)
    right = right.loc[right.index.repeat(3)].reset_index(drop=True)
    right["bucket"] = np.repeat(hb, 3) + np.tile(np.array([-1, 0, 1], dtype=np.int64), len(hb))
    joined = left.merge(right, on=["roi", "bucket"], how="inner")

    dt_s = joined["hr_t"].to_numpy() - joined["lr_t"].to_numpy()
    keep = np.abs(dt_s) <= max_dt_s
    if rules.same_day:
        keep &= joined["lr_day"].to_numpy() == joined["hr_day"].to_numpy()
    if rules.same_season:
        keep &= joined["lr_season"].to_numpy() == joined["hr_season"].to_numpy()
    joined = joined[keep]
    dt_s = dt_s[keep]
    return pd.DataFrame(
        {
            "roi": joined["roi"].to_numpy(dtype=np.intp),
            "lr": joined["lr"].to_numpy(dtype=np.intp),
            "hr": joined["hr"].to_numpy(dtype=np.intp),
            "dt_s": dt_s,
            "abs_dt": np.abs(dt_s),
            # fmax ignores a NaN (unknown) on one side; unknown on both sides counts as 0.
            "cloud": np.nan_to_num(np.fmax(joined["lr_cloud"], joined["hr_cloud"]), nan=0.0),
            "view": np.nan_to_num(np.fmax(joined["lr_off"], joined["hr_off"]), nan=0.0),
            "lr_id": joined["lr_id"].to_numpy(dtype=object),
            "hr_id": joined["hr_id"].to_numpy(dtype=object),
            "lr_cov": joined["lr_cov"].to_numpy(),
            "hr_cov": joined["hr_cov"].to_numpy(),
        }
    )


def _drop_reasons(
    rois: Sequence[RoiFootprint],
    paired: np.ndarray,
    lrm: _SideMatch,
    hrm: _SideMatch,
    lr_ok: np.ndarray,
    hr_ok: np.ndarray,
    recipe: Recipe,
    *,
    lr: bool = True,
) -> tuple[DroppedRoi, ...]:
    """The drop reason of every ROI not ``paired``; ``lr=False``: an HR-only search."""
    n = len(rois)

    def count(m: _SideMatch, mask: np.ndarray | None = None) -> np.ndarray:
        idx = m.roi if mask is None else m.roi[mask]
        return np.bincount(idx, minlength=n)

    lr_any, hr_any = count(lrm), count(hrm)
    lr_full, hr_full = count(lrm, lrm.full), count(hrm, hrm.full)
    hr_year = count(hrm, hrm.full & hrm.year_ok)
    lr_clear, hr_clear = count(lrm, lr_ok), count(hrm, hr_ok)

    def best_coverage(m: _SideMatch) -> np.ndarray:
        best = np.zeros(n)
        np.maximum.at(best, m.roi, m.coverage_pct)
        return best

    lr_best, hr_best = best_coverage(lrm), best_coverage(hrm)
    rules = recipe.pairing
    window = f"|dt| <= {rules.max_dt_days:g} days"
    if rules.same_day:
        window += ", same UTC day"
    if rules.same_season:
        window += ", same season"

    out = []
    for i in np.flatnonzero(~paired).tolist():
        if not lr:
            lr_any[i] = lr_full[i] = lr_clear[i] = 1  # no LR side to blame
        if lr_any[i] == 0:
            reason, detail = (
                DropReason.NO_LR_SCENE,
                f"no {recipe.lr.collection} scene intersects it",
            )
        elif hr_any[i] == 0:
            reason, detail = (
                DropReason.NO_HR_SCENE,
                f"no {recipe.hr.collection} scene intersects it",
            )
        elif lr_full[i] == 0 or hr_full[i] == 0:
            side, best = ("LR", lr_best[i]) if lr_full[i] == 0 else ("HR", hr_best[i])
            reason = DropReason.PARTIAL_COVERAGE
            detail = f"no {side} scene covers the whole chip (best {side} coverage {best:.1f} %)"
        elif hr_year[i] == 0:
            reason = DropReason.HR_BEFORE_MIN_YEAR
            detail = f"every covering HR scene is older than {recipe.hr_min_year}"
        elif lr_clear[i] == 0 or hr_clear[i] == 0:
            side = "LR" if lr_clear[i] == 0 else "HR"
            reason = DropReason.CLOUDY
            detail = f"every covering {side} scene has cloud > {recipe.max_scene_cloud_pct:g} %"
        else:
            reason = DropReason.NO_PAIR_IN_TIME_WINDOW
            detail = (
                f"{lr_clear[i]} LR and {hr_clear[i]} HR scenes qualify but none pair ({window})"
            )
        out.append(
            DroppedRoi(
                roi_id=rois[i].roi_id,
                reason=reason,
                n_lr_scenes=int(lr_any[i]) if lr else 0,
                n_hr_scenes=int(hr_any[i]),
                detail=detail,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class EarlyLate:
    """The two HR acquisitions of one ROI of a synthetic set.

    Attributes:
        roi_id: The ROI.
        early: The oldest qualifying scene.
        late: The most recent qualifying scene (a later UTC day than ``early``).
        n_scenes: Qualifying scenes of the ROI (covering, recent enough, clear enough).
    """

    roi_id: str
    early: SceneRef
    late: SceneRef
    n_scenes: int


@dataclass(frozen=True)
class EarlyLateResult:
    """Output of :func:`early_late`, in the input ROI order.

    Attributes:
        chosen: One entry per ROI with two acquisitions.
        dropped: One entry per other ROI, with its reason (``n_lr_scenes`` is 0).
    """

    chosen: tuple[EarlyLate, ...]
    dropped: tuple[DroppedRoi, ...]


def early_late(
    rois: Sequence[RoiFootprint], hr_scenes: Iterable[SceneRef], recipe: Recipe
) -> EarlyLateResult:
    """Choose the early and late HR acquisition of every ROI (see the module docstring).

    Ties (two qualifying scenes of the same instant) go to the smaller item id, so the choice
    does not depend on the order the catalog answered in.

    Raises:
        InputFileError: repeated roi_id values or a ROI without area.
        CatalogError: scenes of another collection than the recipe's HR one.
    """
    _, hr = _check_inputs(rois, (), hr_scenes, recipe)
    n = len(rois)
    if n == 0:
        return EarlyLateResult((), ())
    roi_geoms = np.array([r.geometry for r in rois], dtype=object)
    centroids = shapely.centroid(roi_geoms)
    zones = utm_epsg(shapely.get_x(centroids), shapely.get_y(centroids))
    epsgs = np.array([r.utm_epsg or int(z) for r, z in zip(rois, zones, strict=True)])
    areas = _roi_areas_m2(roi_geoms, epsgs)
    m = _match_side(
        hr, shapely.STRtree(roi_geoms), roi_geoms, areas, recipe.max_scene_cloud_pct,
        recipe.hr_min_year,
    )  # fmt: skip
    ok = m.full & m.year_ok & m.cloud_ok
    by_roi: dict[int, list[SceneRef]] = {}
    for r, si in zip(m.roi[ok].tolist(), m.scene[ok].tolist(), strict=True):
        by_roi.setdefault(r, []).append(hr[si])
    chosen: list[EarlyLate] = []
    single = np.zeros(n, dtype=bool)
    for i in range(n):
        scenes = sorted(by_roi.get(i, ()), key=lambda s: (s.datetime, s.item_id))
        if not scenes:
            continue
        early = scenes[0]
        late = min(scenes, key=lambda s: (-s.datetime.timestamp(), s.item_id))
        if late.datetime.date() == early.datetime.date():
            single[i] = True
            continue
        chosen.append(EarlyLate(rois[i].roi_id, early, late, len(scenes)))
    done = np.zeros(n, dtype=bool)
    index = {r.roi_id: i for i, r in enumerate(rois)}
    for c in chosen:
        done[index[c.roi_id]] = True
    none_i, none_b = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=bool)
    no_lr = _SideMatch((), none_i, none_i, np.zeros(0), none_b, none_b, none_b)
    dropped = list(_drop_reasons(rois, done | single, no_lr, m, none_b, ok, recipe, lr=False))
    for i in np.flatnonzero(single).tolist():
        dropped.append(
            DroppedRoi(
                roi_id=rois[i].roi_id,
                reason=DropReason.SINGLE_ACQUISITION,
                n_lr_scenes=0,
                n_hr_scenes=len(by_roi[i]),
                detail=(
                    f"every {recipe.hr.collection} scene that qualifies is of "
                    f"{by_roi[i][0].datetime.date()}: no early and late acquisition"
                ),
            )
        )
    order = {r.roi_id: i for i, r in enumerate(rois)}
    dropped.sort(key=lambda d: order[d.roi_id])
    return EarlyLateResult(tuple(chosen), tuple(dropped))
