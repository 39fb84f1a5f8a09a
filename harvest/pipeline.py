"""Stage orchestration: each stage reads the previous stage's table and writes its own."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harvest import __version__
from harvest.errors import InputFileError, SamplingError

ROI_ID_PREFIX = "ROI_"
# Zero-padded to 6 digits; beyond 999,999 the number just grows (still unique, no longer
# sorting as text).
ROI_ID_DIGITS = 6
_ROI_ID_RE = re.compile(rf"^{ROI_ID_PREFIX}(\d+)$")


@dataclass(frozen=True)
class SampleSummary:
    """What ``run_sample`` wrote.

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


def run_sample(
    *,
    n: int,
    output: Path,
    region: str | Path = "conus",
    seed: int = 0,
    min_distance_km: float = 5.0,
    exclude: Path | None = None,
    progress: bool = False,
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
        progress: Show a progress bar on stderr.

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

    if progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(
            TextColumn("sampling ROIs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        with bar:
            task = bar.add_task("sample", total=n)
            result = sample_hardcore(
                reg.geometry,
                n,
                min_distance_m,
                seed,
                area_m2=reg.area_m2,
                exclude_lon_deg=ex_lon,
                exclude_lat_deg=ex_lat,
                on_progress=lambda done: bar.update(task, completed=done),
            )
    else:
        result = sample_hardcore(
            reg.geometry,
            n,
            min_distance_m,
            seed,
            area_m2=reg.area_m2,
            exclude_lon_deg=ex_lon,
            exclude_lat_deg=ex_lat,
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


# Spacing of the demo ROIs: more than the 1210 m SEN2NAIP chip, so chips rarely overlap.
DEMO_MIN_DISTANCE_KM = 1.25
# The CONUS showcase of `harvest demo run`: the size of SEN2NAIP's cross-sensor ROI set.
DEMO_CONUS_N = 18_000


@dataclass(frozen=True)
class DemoStage:
    """One line of the demo summary.

    Attributes:
        stage: Stage name as the CLI calls it.
        output: What it wrote.
        result: One-line description of the result.
        seconds: Wall time of the stage.
    """

    stage: str
    output: Path
    result: str
    seconds: float


@dataclass(frozen=True)
class DemoRunSummary:
    """What ``run_demo`` did, stage by stage."""

    out_dir: Path
    stages: tuple[DemoStage, ...]


def run_demo(
    out_dir: Path, *, seed: int = 0, world_dir: Path | None = None, progress: bool = False
) -> DemoRunSummary:
    """Run every stage that exists on the embedded demo world.

    Builds (or reuses) the demo world in ``out_dir/world``, samples ROIs inside its sites and,
    as a showcase at SEN2NAIP's scale, 18,000 ROIs over CONUS. Each stage reuses its output when
    it is already there, so an interrupted run resumes.

    Args:
        out_dir: Folder for every output of the demo.
        seed: Seed of the world and of the samplers.
        world_dir: Use (or build) the demo world there instead of in ``out_dir/world``.
        progress: Show progress bars.

    Returns:
        A :class:`DemoRunSummary`.
    """
    import time

    from harvest.demo.truth import load_truth
    from harvest.demo.world import run_demo_world
    from harvest.geoio import read_roi_points
    from harvest.grid import utm_epsg

    out_dir = Path(out_dir)
    stages: list[DemoStage] = []

    t0 = time.perf_counter()
    world_dir = Path(world_dir) if world_dir is not None else out_dir / "world"
    world = run_demo_world(world_dir, seed=seed, progress=progress)
    truth = load_truth(world.out_dir / "truth.json")
    items = ", ".join(f"{n} {c}" for c, n in sorted(world.n_items.items()))
    pairs = ", ".join(f"{len(truth.pairs_for(r))} {r}" for r in ("sen2naip", "sen2venus", "sen12"))
    stages.append(
        DemoStage(
            "demo world",
            world.out_dir,
            f"{world.n_sites} sites; {items}; expected pairs: {pairs}; "
            f"{world.bytes_on_disk / 1e6:.0f} MB" + (" (reused)" if world.reused else ""),
            time.perf_counter() - t0,
        )
    )

    region = world.out_dir / "region.geojson"
    n_sites = len(truth.sites)
    for name, target, n, spacing_km in (
        ("sample (demo sites)", out_dir / "rois.parquet", n_sites, DEMO_MIN_DISTANCE_KM),
        ("sample (CONUS)", out_dir / "rois-conus.parquet", DEMO_CONUS_N, 5.0),
    ):
        t0 = time.perf_counter()
        reused = target.exists()
        if not reused:
            run_sample(
                n=n,
                output=target,
                region=region if "demo" in name else "conus",
                seed=seed,
                min_distance_km=spacing_km,
                progress=progress,
            )
        rois = read_roi_points(target)
        zones = len(set(utm_epsg(rois.lon_deg, rois.lat_deg).tolist()))
        stages.append(
            DemoStage(
                name,
                target,
                f"{len(rois.roi_id)} ROIs >= {spacing_km:g} km apart in {zones} UTM zones"
                + (" (reused)" if reused else ""),
                time.perf_counter() - t0,
            )
        )
    return DemoRunSummary(out_dir=out_dir, stages=tuple(stages))
