"""Stage orchestration: each stage reads the previous stage's table and writes its own."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harvest import __version__
from harvest.errors import ConfigError, InputFileError, SamplingError
from harvest.progress import ProgressBar

if TYPE_CHECKING:
    from harvest.catalog.base import Catalog
    from harvest.config import Recipe
    from harvest.grid import ChipGridArray

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

    bar = ProgressBar("sampling ROIs", n, enabled=progress)
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
    # Search: the demo world's stac-geoparquet snapshot, the bulk path users run at scale.
    for recipe_name in ("sen2naip",):
        t0 = time.perf_counter()
        target = out_dir / f"pairs-{recipe_name}.parquet"
        reused = target.exists()
        if not reused:
            opened = open_catalog(str(world.out_dir))
            run_search(
                out_dir / "rois.parquet",
                recipe=recipe_name,
                catalog=opened.catalog,
                catalog_name=opened.name,
                catalog_kind=opened.kind,
                output=target,
                all_candidates=False,
                progress=progress,
            )
        from harvest.tables import read_pairs

        table = read_pairs(target)
        stages.append(
            DemoStage(
                f"search ({recipe_name})",
                target,
                f"{len(table.rows)} of {n_sites} ROIs paired (truth: "
                f"{len({p.site_id for p in truth.pairs_for(recipe_name)})} sites with a pair)"
                + (" (reused)" if reused else ""),
                time.perf_counter() - t0,
            )
        )
    # Fetch: chips on the nested grid, QA with reason codes, the SEN2NAIP cross-sensor layout.
    import geopandas as gpd

    from harvest.config import load_recipe
    from harvest.fetch import run_fetch

    t0 = time.perf_counter()
    dataset = out_dir / "sen2naip"
    fetched = run_fetch(
        out_dir / "pairs-sen2naip.parquet", load_recipe("sen2naip"), dataset, progress=progress
    )
    manifest = gpd.read_parquet(fetched.manifest)
    reasons = sorted(
        {r for rs in manifest["reasons"].dropna() for r in str(rs).split(",") if r.strip()}
    )
    why = f" ({', '.join(reasons)})" if reasons else ""
    stages.append(
        DemoStage(
            "fetch + QA (sen2naip)",
            dataset,
            f"{fetched.n_kept} kept, {fetched.n_rejected} rejected{why}, {fetched.n_failed} failed"
            + (" (reused)" if fetched.n_done_before == fetched.n_total else ""),
            time.perf_counter() - t0,
        )
    )
    # Degrade: the kept HR chips into S2-like LR with the published SEN2NAIP models.
    from harvest.degrade import run_degrade

    t0 = time.perf_counter()
    synthetic = out_dir / "sen2naip-synthetic"
    degraded = run_degrade(dataset, "sen2naip", synthetic, seed=seed, progress=progress)
    stages.append(
        DemoStage(
            "degrade (sen2naip model)",
            synthetic,
            f"{degraded.n_images} HR images x {len(degraded.methods)} methods "
            f"({', '.join(degraded.methods)})"
            + (" (reused)" if degraded.n_done_before == degraded.n_images else ""),
            time.perf_counter() - t0,
        )
    )
    return DemoRunSummary(out_dir=out_dir, stages=tuple(stages))


# --- search ------------------------------------------------------------------------------------

DEMO_WORLD_ENV = "HARVEST_DEMO_WORLD"
"""Environment variable naming the demo world folder ``--catalog demo`` searches (read by the
CLI only)."""


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


def is_demo_world(path: Path) -> bool:
    """Whether a folder holds a demo world (``truth.json`` and ``stac-geoparquet/``)."""
    return (path / "truth.json").is_file() and (path / "stac-geoparquet").is_dir()


@dataclass(frozen=True)
class OpenedCatalog:
    """A catalog chosen from a ``--catalog`` value.

    Attributes:
        catalog: The backend.
        name: The ``--catalog`` value as given.
        kind: ``stac-api``, ``stac-geoparquet`` or ``earth-engine``.
        location: URL, folder or file searched (or the Earth Engine project).
    """

    catalog: Catalog
    name: str
    kind: str
    location: str


def open_catalog(
    spec: str,
    *,
    profile: str | None = None,
    ee_project: str | None = None,
    demo_world: str | Path | None = None,
    timeout_s: float | None = None,
) -> OpenedCatalog:
    """Build the backend a ``--catalog`` value names. No network I/O happens here.

    Args:
        spec: A provider name from ``configs/providers`` (``planetary-computer``,
            ``earth-search``, ``earth-engine``, ``demo``), an http(s) STAC API URL, a
            stac-geoparquet file or folder, or a demo world folder.
        profile: Provider profile (vocabulary) of a URL or a local snapshot; default: the
            provider whose URL it is, else ``planetary-computer`` (``demo`` for a demo world).
        ee_project: Google Cloud project for Earth Engine (None: that of the credentials).
        demo_world: Demo world folder searched by ``demo`` (the CLI passes
            ``$HARVEST_DEMO_WORLD``).
        timeout_s: Seconds to wait for one answer of a STAC API or Earth Engine (None: the
            backends' defaults: a STAC API that does not answer fails after 2 x 20 s).

    Raises:
        ConfigError: unknown provider name, or ``demo`` without a world folder.
        CatalogError: the local source is not stac-geoparquet.
    """
    from harvest.catalog.profiles import known_profiles, load_profile
    from harvest.catalog.stac_api import RetryPolicy, StacApiCatalog, planetary_computer_signer
    from harvest.catalog.stac_parquet import StacParquetCatalog

    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"--timeout {timeout_s} must be > 0 seconds")
    policy = RetryPolicy.with_timeout(timeout_s)

    def parquet(source: Path, prof_name: str) -> OpenedCatalog:
        prof = load_profile(prof_name)
        sign = planetary_computer_signer() if prof.sign_hrefs else None
        folder = source / "stac-geoparquet" if is_demo_world(source) else source
        cat = StacParquetCatalog(folder, prof, sign=sign)
        return OpenedCatalog(cat, spec, "stac-geoparquet", str(folder))

    if spec in known_profiles():
        prof = load_profile(profile or spec)
        if prof.kind == "earth-engine":
            from harvest.catalog.earthengine import EarthEngineCatalog

            if timeout_s is None:
                ee = EarthEngineCatalog(prof, project=ee_project)
            else:
                ee = EarthEngineCatalog(prof, project=ee_project, deadline_s=timeout_s)
            return OpenedCatalog(ee, spec, "earth-engine", ee_project or "(default project)")
        if prof.kind == "stac-api":
            assert prof.stac_api_url is not None  # the profile model guarantees it
            sign = planetary_computer_signer() if prof.sign_hrefs else None
            api = StacApiCatalog(prof.stac_api_url, prof, sign=sign, policy=policy)
            return OpenedCatalog(api, spec, "stac-api", prof.stac_api_url)
        if demo_world is None or not str(demo_world).strip():
            raise ConfigError(
                f"--catalog {spec} needs a demo world: set {DEMO_WORLD_ENV} to its folder or "
                "pass the folder as --catalog (build one with 'harvest demo world DIR')"
            )
        world = Path(demo_world)
        if not is_demo_world(world):
            raise ConfigError(
                f"{DEMO_WORLD_ENV}={world} is not a demo world folder (no truth.json and "
                "stac-geoparquet/): build one with 'harvest demo world DIR'"
            )
        return parquet(world, prof.name)
    if spec.startswith(("http://", "https://")):
        if profile is None:
            url = spec.rstrip("/")
            matches = [
                name
                for name in known_profiles()
                if (load_profile(name).stac_api_url or "").rstrip("/") == url
            ]
            profile = matches[0] if matches else "planetary-computer"
        prof = load_profile(profile)
        sign = planetary_computer_signer() if prof.sign_hrefs else None
        api = StacApiCatalog(spec, prof, sign=sign, policy=policy)
        return OpenedCatalog(api, spec, "stac-api", spec)
    path = Path(spec)
    if path.exists():
        default = "demo" if path.is_dir() and is_demo_world(path) else "planetary-computer"
        return parquet(path, profile or default)
    known = ", ".join(known_profiles())
    raise ConfigError(
        f"--catalog {spec!r} is neither a provider ({known}), an http(s) STAC API URL, nor an "
        "existing stac-geoparquet file or folder"
    )


@dataclass(frozen=True)
class SearchSummary:
    """What ``run_search`` wrote.

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


def run_search(
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
    progress: bool = False,
    today: date | None = None,
) -> SearchSummary:
    """Search the LR and HR scenes of every ROI's chip and write the pairs table.

    One :class:`~harvest.catalog.base.SearchRequest` per collection holds every ROI's chip
    footprint (the backend batches them into few requests); the scenes found are paired with
    :func:`~harvest.pairing.pair_scenes`; :func:`~harvest.tables.write_pairs` writes
    ``output`` and ``<output stem>.dropped.parquet`` atomically.

    Args:
        rois: ROI table (GeoParquet written by ``harvest sample``).
        recipe: Recipe or its name / YAML path.
        catalog: The backend to search (see :func:`open_catalog`).
        output: Pairs table to write.
        catalog_name: How the catalog was named, recorded in the metadata.
        catalog_kind: :attr:`OpenedCatalog.kind`, recorded in the metadata: the fetch stage
            restricts the hrefs of a remote catalog (:mod:`harvest.hrefs`). Empty: inferred
            from the name (an http(s) URL or a remote provider is remote).
        start: First day to search (default: the recipe's start).
        end: Last day to search (default: the recipe's end, else today).
        all_candidates: Write every candidate pair with its rank, not only rank 0.
        progress: Show progress bars on stderr.
        today: The date "today" stands for (tests); default the current UTC date.

    Returns:
        A :class:`SearchSummary`.

    Raises:
        InputFileError: the ROI table is missing, not a ROI table, or empty.
        ConfigError: unknown recipe or a bad window.
        CatalogError: the catalog cannot be searched.
    """
    import time

    from harvest.catalog.base import Footprint, SearchRequest
    from harvest.config import config_hash, load_recipe
    from harvest.geoio import read_roi_points
    from harvest.grid import grid_cells
    from harvest.hrefs import infer_catalog_kind
    from harvest.pairing import RoiFootprint, pair_scenes
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
        results.append(catalog.search(request, progress=progress))
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
