"""``harvest search``: the (LR, HR) acquisition pairs of a recipe for every ROI.

Reads a ROI table, builds each ROI's LR chip footprint on its exact grid, asks the catalog for
the scenes of both collections (batched: few requests for many ROIs), pairs them with
:mod:`harvest.pairing` and writes ``pairs.parquet`` and ``pairs.dropped.parquet``
(:mod:`harvest.tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harvest import __version__
from harvest.errors import ConfigError, InputFileError
from harvest.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from harvest.backends.base import Catalog
    from harvest.grid import ChipGridArray
    from harvest.recipes import Recipe


def parse_day(text: str | None, option: str) -> date | None:
    """A ``YYYY-MM-DD`` option value as a date (None stays None).

    Raises:
        ConfigError: the text is not a calendar date.
    """
    if text is None or not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a date: give it as YYYY-MM-DD, e.g. 2021-06-30"
        ) from None


def search_window(
    recipe: Recipe, start: date | None, end: date | None, today: date | None = None
) -> tuple[date, date]:
    """The inclusive day window of a search: the options, else the recipe's, else up to today.

    Raises:
        ConfigError: no start anywhere, or start after end.
    """
    first = start or recipe.start
    if first is None:
        raise ConfigError(f"recipe {recipe.name} has no start date: pass --start YYYY-MM-DD")
    last = end or recipe.end or today or datetime.now(UTC).date()
    if first > last:
        raise ConfigError(
            f"search window starts {first} after it ends {last}: check --start/--end "
            f"(recipe {recipe.name} defaults: {recipe.start} to {recipe.end or 'today'})"
        )
    return first, last


@dataclass(frozen=True)
class SearchSummary:
    """What :func:`run` wrote.

    Attributes:
        output: The pairs table.
        dropped_output: The table of ROIs without a pair.
        n_rois: ROIs searched.
        n_paired: ROIs with a pair.
        n_rows: Rows written (n_paired, or every candidate with ``all_candidates``).
        dropped_by_reason: ``(reason, count)`` for every drop reason that occurred.
        n_requests: Requests the catalog searches made.
        n_lr_scenes: Distinct LR scenes found.
        n_hr_scenes: Distinct HR scenes found.
        start: First day searched.
        end: Last day searched.
        seconds: Wall time.
        n_skipped_items: Catalog items skipped as unusable (bad geometry, bbox or fields),
            each named in a warning.
    """

    output: Path
    dropped_output: Path
    n_rois: int
    n_paired: int
    n_rows: int
    dropped_by_reason: tuple[tuple[str, int], ...]
    n_requests: int
    n_lr_scenes: int
    n_hr_scenes: int
    start: date
    end: date
    seconds: float
    n_skipped_items: int = 0

    def line(self) -> str:
        """One-line human summary."""
        drops = ", ".join(f"{n} {r}" for r, n in self.dropped_by_reason) or "none"
        rows = f" ({self.n_rows} candidate rows)" if self.n_rows != self.n_paired else ""
        n = self.n_skipped_items
        skipped = f"; skipped {n} unusable catalog item{'s' if n != 1 else ''}" if n else ""
        return (
            f"paired {self.n_paired} of {self.n_rois} ROIs{rows} from {self.n_lr_scenes} LR and "
            f"{self.n_hr_scenes} HR scenes ({self.start}..{self.end}) in {self.n_requests} "
            f"requests, {self.seconds:.1f} s; dropped: {drops}{skipped}; wrote {self.output} "
            f"and {self.dropped_output.name}"
        )


def chip_footprints(
    lon_deg: np.ndarray, lat_deg: np.ndarray, recipe: Recipe
) -> tuple[ChipGridArray, np.ndarray]:
    """The LR chip grid of every ROI and its footprint polygon in EPSG:4326.

    The polygon is the chip square in its UTM zone, densified so the lon/lat outline follows
    the metric edges (the coverage test must see the chip, not its corners).
    """
    import shapely
    from pyproj import Transformer

    from harvest.grid import chip_grids_many

    grids = chip_grids_many(lon_deg, lat_deg, recipe)
    side = grids.layout.side_m
    geoms = np.empty(len(grids), dtype=object)
    for code in np.unique(grids.epsg):
        sel = grids.epsg == code
        left, top = grids.left_m[sel], grids.top_m[sel]
        boxes = shapely.segmentize(shapely.box(left, top - side, left + side, top), side / 8.0)
        back = Transformer.from_crs(int(code), 4326, always_xy=True)

        def to_lonlat(xy: np.ndarray, back: Transformer = back) -> np.ndarray:
            x, y = back.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        geoms[sel] = shapely.transform(boxes, to_lonlat)
    return grids, geoms


def run(
    rois: Path,
    *,
    recipe: Recipe | str,
    catalog: Catalog,
    output: Path,
    catalog_name: str = "",
    catalog_kind: str = "",
    start: date | None = None,
    end: date | None = None,
    all_candidates: bool = False,
    progress: Progress | bool = NO_PROGRESS,
    today: date | None = None,
) -> SearchSummary:
    """Search the LR and HR scenes of every ROI's chip and write the pairs table.

    One :class:`~harvest.backends.base.SearchRequest` per collection holds every ROI's chip
    footprint (the backend batches them into few requests); the scenes found are paired with
    :func:`~harvest.pairing.pair_scenes`; :func:`~harvest.tables.write_pairs` writes
    ``output`` and ``<output stem>.dropped.parquet`` atomically.

    Args:
        rois: ROI table (GeoParquet written by ``harvest sample``).
        recipe: Recipe or its name / YAML path.
        catalog: The backend to search (see :func:`harvest.backends.registry.open_catalog`).
        output: Pairs table to write.
        catalog_name: How the catalog was named, recorded in the metadata.
        catalog_kind: :attr:`harvest.backends.registry.OpenedCatalog.kind`, recorded in the
            metadata: the fetch stage restricts the hrefs of a remote catalog
            (:mod:`harvest.hrefs`). Empty: inferred from the name (an http(s) URL or a remote
            provider is remote).
        start: First day to search (default: the recipe's start).
        end: Last day to search (default: the recipe's end, else today).
        all_candidates: Write every candidate pair with its rank, not only rank 0.
        progress: How to show progress (the catalog's bars on stderr, or nothing).
        today: The date "today" stands for (tests); default the current UTC date.

    Returns:
        A :class:`SearchSummary`.

    Raises:
        InputFileError: the ROI table is missing, not a ROI table, or empty.
        ConfigError: unknown recipe or a bad window.
        CatalogError: the catalog cannot be searched.
    """
    import time

    from harvest.backends.base import Footprint, SearchRequest
    from harvest.config import config_hash
    from harvest.geoio import read_roi_points
    from harvest.grid import grid_cells
    from harvest.hrefs import infer_catalog_kind
    from harvest.pairing import RoiFootprint, pair_scenes
    from harvest.recipes import load_recipe
    from harvest.tables import PairRow, SearchMetadata, write_pairs

    started = time.perf_counter()
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    first, last = search_window(rec, start, end, today)
    output = Path(output)
    if output.is_dir():
        raise InputFileError(f"output {output} is a folder; give a file name such as pairs.parquet")
    points = read_roi_points(Path(rois))
    n = len(points.roi_id)
    if n == 0:
        raise InputFileError(f"ROI table {rois} holds no ROIs: sample some with 'harvest sample'")
    grids, geoms = chip_footprints(points.lon_deg, points.lat_deg, rec)
    rois_fp = [
        RoiFootprint(roi_id=rid, geometry=g, utm_epsg=int(e))
        for rid, g, e in zip(points.roi_id, geoms, grids.epsg, strict=True)
    ]
    footprints = tuple(Footprint(r.roi_id, r.geometry) for r in rois_fp)
    window_start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    window_end = datetime(last.year, last.month, last.day, 23, 59, 59, 999999, tzinfo=UTC)

    results = []
    for spec in (rec.lr, rec.hr):
        request = SearchRequest(
            footprints=footprints,
            collections=(spec.collection,),
            start=window_start,
            end=window_end,
            max_cloud_pct=rec.max_scene_cloud_pct,
        )
        results.append(catalog.search(request, progress=Progress.of(progress).enabled))
    lr_res, hr_res = results
    n_requests = sum(r.stats.n_requests for r in results)

    paired = pair_scenes(
        rois_fp,
        lr_res.by_collection(rec.lr.collection),
        hr_res.by_collection(rec.hr.collection),
        rec,
        all_candidates=all_candidates,
    )
    chosen = paired.candidates if all_candidates else paired.pairs
    index = {rid: i for i, rid in enumerate(points.roi_id)}
    cells = grid_cells(points.lon_deg, points.lat_deg)
    rows = []
    for cand in chosen:
        i = index[cand.roi_id]
        chips = grids[i]
        rows.append(
            PairRow(
                roi_id=cand.roi_id,
                lon_deg=float(points.lon_deg[i]),
                lat_deg=float(points.lat_deg[i]),
                utm_epsg=int(cells.utm_epsg[i]),
                pair=cand,
                mgrs_tile=str(cells.mgrs_tile[i]),
                chip_id=chips.chip_id,
                chip_epsg=chips.epsg,
                chip_transform=chips.lr.transform_tuple,
                chip_px=chips.lr.width,
            )
        )
    meta = SearchMetadata(
        recipe=rec.name,
        recipe_hash=config_hash(rec),
        catalog=catalog_name or catalog.provider,
        catalog_kind=catalog_kind or infer_catalog_kind(catalog_name or catalog.provider),
        provider=catalog.provider,
        start=first.isoformat(),
        end=last.isoformat(),
        n_requests=n_requests,
        n_rois=n,
        all_candidates=all_candidates,
        harvest_version=__version__,
        rois=str(rois),
    )
    out, dropped_out = write_pairs(output, rows, paired.dropped, meta)
    counts: dict[str, int] = {}
    for d in paired.dropped:
        counts[d.reason.value] = counts.get(d.reason.value, 0) + 1
    return SearchSummary(
        output=out,
        dropped_output=dropped_out,
        n_rois=n,
        n_paired=len(paired.pairs),
        n_rows=len(rows),
        dropped_by_reason=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        n_requests=n_requests,
        n_lr_scenes=len(lr_res.by_collection(rec.lr.collection)),
        n_hr_scenes=len(hr_res.by_collection(rec.hr.collection)),
        start=first,
        end=last,
        seconds=time.perf_counter() - started,
        n_skipped_items=sum(r.stats.n_invalid for r in results),
    )
