"""``harvest sample``: regions of interest drawn by a hard-core point process.

Points uniform over the region's area, every pair at least ``min_distance_km`` apart in
geodesic distance (:mod:`harvest.sampling`), written as GeoParquet with ``roi_id``, ``utm_epsg``
and ``mgrs_tile``. ``exclude`` extends an existing table: the new ROIs keep the distance to the
old ones and their ids continue after the largest existing id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harvest import __version__
from harvest.errors import InputFileError, SamplingError
from harvest.progress import NO_PROGRESS, Progress

ROI_ID_PREFIX = "ROI_"
# Zero-padded to 6 digits; beyond 999,999 the number just grows (still unique, no longer
# sorting as text).
ROI_ID_DIGITS = 6
_ROI_ID_RE = re.compile(rf"^{ROI_ID_PREFIX}(\d+)$")


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`run` wrote.

    Attributes:
        output: The GeoParquet file.
        n: ROIs written.
        first_id: Id of the first new ROI.
        last_id: Id of the last new ROI.
        excluded: Existing ROIs the new ones keep their distance to.
    """

    output: Path
    n: int
    first_id: str
    last_id: str
    excluded: int


def format_roi_ids(start: int, count: int) -> list[str]:
    """ROI ids ``ROI_000001``-style: prefix + number zero-padded to 6 digits, from ``start``."""
    return [f"{ROI_ID_PREFIX}{k:0{ROI_ID_DIGITS}d}" for k in range(start, start + count)]


def next_roi_number(existing_ids: tuple[str, ...] | list[str]) -> int:
    """First free ROI number after the largest ``ROI_<digits>`` id among ``existing_ids``."""
    numbers = [int(m.group(1)) for i in existing_ids if (m := _ROI_ID_RE.match(i.strip()))]
    return max(numbers, default=0) + 1


def run(
    *,
    n: int,
    output: Path,
    region: str | Path = "conus",
    seed: int = 0,
    min_distance_km: float = 5.0,
    exclude: Path | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> SampleSummary:
    """Draw ``n`` ROIs with a hard-core point process and write them as GeoParquet.

    Args:
        n: Number of new ROIs.
        output: Destination GeoParquet (written atomically; nothing is written on error).
        region: ``"conus"``, ``"world-land"`` or a polygon file (see :mod:`harvest.regions`).
        seed: Seed of the sampler: same seed, same ROIs.
        min_distance_km: Minimum geodesic distance between any two ROIs (new and excluded).
        exclude: Existing ROI table: new ROIs keep the distance to them, and their ids continue
            after the largest existing id.
        progress: How to show progress (a bar on stderr, or nothing).

    Returns:
        A :class:`SampleSummary`.

    Raises:
        RegionError: The region cannot be used.
        InputFileError: The exclude table or the output path cannot be used.
        SamplingError: ``n`` ROIs do not fit in the region at that spacing.
    """
    import shapely

    from harvest.geoio import read_roi_points, write_points_geoparquet
    from harvest.grid import grid_cells
    from harvest.regions import load_region
    from harvest.sampling import estimate_capacity, sample_hardcore

    if n < 1:
        raise SamplingError(f"--n must be at least 1 (got {n}); ask for one ROI or more")
    if not (math.isfinite(min_distance_km) and min_distance_km > 0):
        raise SamplingError(
            f"--min-distance-km must be a positive number (got {min_distance_km}); e.g. 5"
        )
    if seed < 0:
        raise SamplingError(f"--seed must be >= 0 (got {seed}); use any non-negative integer")
    output = Path(output)
    if output.is_dir():
        raise InputFileError(f"output {output} is a folder; give a file name such as rois.parquet")
    min_distance_m = min_distance_km * 1000.0
    reg = load_region(region)

    ex_lon = np.empty(0)
    ex_lat = np.empty(0)
    start = 1
    n_excluded = 0
    if exclude is not None:
        existing = read_roi_points(Path(exclude))
        ex_lon, ex_lat = existing.lon_deg, existing.lat_deg
        start = next_roi_number(existing.roi_id)
        n_excluded = len(existing.roi_id)
    inside = int(shapely.contains_xy(reg.geometry, ex_lon, ex_lat).sum()) if n_excluded else 0
    cap = estimate_capacity(reg.area_m2, reg.perimeter_m, min_distance_m, inside)
    if n > cap.practical_n:
        taken = f" besides the {inside} existing ROIs inside it" if inside else ""
        raise SamplingError(
            f"{n} ROIs do not fit in region {reg.name} at {min_distance_km:g} km spacing: at most "
            f"about {cap.practical_n} can be expected to fit{taken} (random packing jams near "
            f"{cap.jamming_n}); ask for fewer ROIs or a smaller --min-distance-km"
        )

    bar = Progress.of(progress).bar("sampling ROIs", n)
    on_progress = (lambda done: bar.update(completed=done)) if bar.enabled else None
    with bar:
        result = sample_hardcore(
            reg.geometry,
            n,
            min_distance_m,
            seed,
            area_m2=reg.area_m2,
            exclude_lon_deg=ex_lon,
            exclude_lat_deg=ex_lat,
            on_progress=on_progress,
        )

    ids = format_roi_ids(start, n)
    cells = grid_cells(result.lon_deg, result.lat_deg)
    write_points_geoparquet(
        output,
        result.lon_deg,
        result.lat_deg,
        {"roi_id": ids, "utm_epsg": cells.utm_epsg, "mgrs_tile": cells.mgrs_tile},
        extra_metadata={
            "harvest_version": __version__,
            "stage": "sample",
            "region": reg.name,
            "seed": seed,
            "min_distance_m": min_distance_m,
            "n": n,
            "exclude": str(exclude) if exclude is not None else None,
            "excluded_rois": n_excluded,
            "candidates_drawn": result.candidates_drawn,
        },
    )
    return SampleSummary(output=output, n=n, first_id=ids[0], last_id=ids[-1], excluded=n_excluded)
