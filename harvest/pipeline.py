"""Chains stages: ``harvest build`` and ``harvest demo run`` (``extend`` next); owns resume.

Every stage lives in :mod:`harvest.stages` (the code of ``harvest X`` is in
``harvest/stages/X.py``); this module only runs them in order and skips what is already done.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.config import DEMO_CLIP_MODEL, DEMO_WORLD_REGION, BuildConfig
from harvest.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from harvest.embed import WeightsSpec

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
    out_dir: Path,
    *,
    seed: int = 0,
    world_dir: Path | None = None,
    progress: Progress | bool = NO_PROGRESS,
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
    from harvest.backends.registry import open_catalog
    from harvest.demo.truth import load_truth
    from harvest.demo.world import run_demo_world
    from harvest.geoio import read_roi_points
    from harvest.grid import utm_epsg
    from harvest.stages import sample, search

    out_dir = Path(out_dir)
    progress = Progress.of(progress)
    stages: list[DemoStage] = []

    t0 = time.perf_counter()
    world_dir = Path(world_dir) if world_dir is not None else out_dir / "world"
    world = run_demo_world(world_dir, seed=seed, progress=progress.enabled)
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
            sample.run(
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
            search.run(
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

    from harvest.recipes import load_recipe
    from harvest.stages import fetch

    t0 = time.perf_counter()
    dataset = out_dir / "sen2naip"
    fetched = fetch.run(
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
    from harvest.stages import degrade

    t0 = time.perf_counter()
    synthetic = out_dir / "sen2naip-synthetic"
    degraded = degrade.run(dataset, "sen2naip", synthetic, seed=seed, progress=progress)
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
    # Prune: one synthetic HR image per cluster of image embeddings (SEN2NAIP's CLIP step).
    from harvest.demo.clip import write_demo_clip
    from harvest.embed import WeightsSpec, resolve_weights
    from harvest.errors import HarvestError
    from harvest.stages import prune

    t0 = time.perf_counter()
    weights = WeightsSpec()
    try:
        resolve_weights(weights)
        which = "ViT-B-32 laion2b_s34b_b79k"
    except HarvestError:
        # No trained CLIP in the Hugging Face cache (the offline default): seeded demo weights.
        demo = write_demo_clip(out_dir / "models", seed=seed)
        weights = WeightsSpec(model=str(demo.config), checkpoint=demo.checkpoint)
        which = "demo weights (random init: not CLIP's semantics)"
    n_images = max(degraded.n_images, 1)
    pruned = prune.run(
        synthetic,
        out_dir / "selection.parquet",
        clusters=max(1, (n_images + 1) // 2),
        seed=seed,
        weights=weights,
        progress=progress,
    )
    stages.append(
        DemoStage(
            "embed + prune",
            pruned.files.selection,
            f"{pruned.n_selected} of {pruned.n_images} images kept, one per cluster "
            f"({pruned.n_clusters} clusters; {which}); report {pruned.files.report_md.name}"
            + (" (reused)" if pruned.n_embedded == 0 and pruned.incremental else ""),
            time.perf_counter() - t0,
        )
    )
    return DemoRunSummary(out_dir=out_dir, stages=tuple(stages))


# --- harvest build and harvest extend ----------------------------------------------------------

# Files of a built dataset folder (beside the recipe's layout and fetch's manifest.parquet).
BUILD_ROIS = "rois.parquet"
BUILD_PAIRS = "pairs.parquet"
BUILD_SELECTION = "selection.parquet"
BUILD_CONFIG = "config.yaml"
DATASET_JSON = "dataset.json"
CHANGELOG = "CHANGELOG.md"
# The build's own resume record: the hash of the config that owns the folder.
BUILD_STATE = "build.json"
# One build or extend at a time per dataset (a lock file of its own: the stages lock theirs).
DATASET_LOCK = "dataset.lock"
# An extension in progress (its options and what the dataset held before), for resume.
EXTEND_STATE = "extend.json"
EXTEND_DIR = "extend"
FIRST_VERSION = "1.0.0"


@dataclass(frozen=True)
class BuildStep:
    """One stage of a build.

    Attributes:
        stage: Stage name as the CLI calls it.
        result: One-line description of the result.
        seconds: Wall time of the stage.
        reused: Whether an earlier run had done it all.
    """

    stage: str
    result: str
    seconds: float
    reused: bool = False


@dataclass(frozen=True)
class BuildSummary:
    """What :func:`run_build` did.

    Attributes:
        output: The dataset folder.
        version: The dataset version (``dataset.json``).
        config_hash: Hash of the config's dataset keys.
        steps: The stages, in order.
        counts: The dataset's numbers (``dataset.json``'s ``counts``).
    """

    output: Path
    version: str
    config_hash: str
    steps: tuple[BuildStep, ...]
    counts: dict[str, int]


@dataclass(frozen=True)
class _Context:
    """What every step of a build or an extension needs."""

    config: BuildConfig
    out: Path
    progress: Progress
    demo_world_env: str | None
    ee_project_env: str | None
    today: date | None = None


def run_build(
    config: BuildConfig,
    *,
    progress: Progress | bool = NO_PROGRESS,
    demo_world_env: str | None = None,
    ee_project_env: str | None = None,
    today: date | None = None,
) -> BuildSummary:
    """Run one build config: sample, search, fetch + QA, degrade, embed + prune, write.

    Every stage reads the previous stage's table from the output folder and skips what is
    done, so an interrupted build resumes where it stopped. A folder belongs to one config:
    a build whose dataset keys (everything but ``workers`` and ``scheduler``) differ from
    those that started the folder is refused before anything is written.

    Args:
        config: The validated build config.
        progress: Show progress bars.
        demo_world_env: ``$HARVEST_DEMO_WORLD`` (the CLI reads the environment).
        ee_project_env: The Earth Engine project of the environment.
        today: The date of the run (recorded as the end of what was searched).

    Returns:
        A :class:`BuildSummary`.

    Raises:
        ConfigError: the folder was started by another config, or is a non-empty folder that no
            build made.
        DatasetBusyError: another build or extend holds the folder.
        HarvestError: what the stages raise.
    """
    from harvest.stages import sample

    ctx = _Context(
        config, Path(config.output), Progress.of(progress), demo_world_env, ee_project_env, today
    )
    out = ctx.out
    digest = config.dataset_hash()
    state_path = out / _state_dir() / BUILD_STATE
    _claim_folder(out, state_path, digest)
    with _dataset_lock(out):
        _claim_folder(out, state_path, digest)  # again, now that no other run can write
        _write_config(out / BUILD_CONFIG, config, digest)
        steps: list[BuildStep] = []
        region = _open_world(ctx, steps)
        if config.site_product() is not None:
            return _build_sites(ctx, steps, digest, state_path)

        t0 = time.perf_counter()
        rois_path = config.rois if config.rois is not None else out / BUILD_ROIS
        reused = rois_path.exists()
        if not reused:
            assert config.n is not None  # validated: n or rois
            sample.run(
                n=config.n,
                output=rois_path,
                region=region,
                seed=config.seed,
                min_distance_km=config.min_distance_km,
                progress=ctx.progress,
            )
        n_rois = _count_rois(rois_path)
        given = " (given)" if config.rois is not None else ""
        steps.append(
            BuildStep(
                "sample",
                f"{n_rois} ROIs{given} >= {config.min_distance_km:g} km apart",
                time.perf_counter() - t0,
                reused,
            )
        )

        pairs_path = out / BUILD_PAIRS
        if "cross-sensor" in config.products:
            t0 = time.perf_counter()
            reused = pairs_path.exists()
            if not reused:
                _search(ctx, rois_path, pairs_path, config.start, config.end)
            n_paired = _count_pairs(pairs_path)
            steps.append(
                BuildStep(
                    "search",
                    f"{n_paired} of {n_rois} ROIs paired",
                    time.perf_counter() - t0,
                    reused,
                )
            )
            _fetch_and_after(ctx, pairs_path, steps)
        if "synthetic" in config.products:
            _synthetic(ctx, rois_path, steps)

        previous = _read_json_or_none(out / DATASET_JSON)
        record = _dataset_record(ctx, rois_path, pairs_path, digest, previous)
        if previous is None:
            record["searched_until"] = (today or date.today()).isoformat()
            record["history"] = [
                {
                    "version": FIRST_VERSION,
                    "date": record["created"][:10],
                    "change": "first build",
                    "added": {
                        "rois": record["counts"]["rois_sampled"],
                        "kept": record["counts"]["chips_kept"],
                    },
                }
            ]
        _write_record(out, record, previous)
        steps.append(_describe(ctx, record, rois_path, region))
        _write_json(state_path, {"config_hash": digest, "complete": True})
    return BuildSummary(
        output=out,
        version=str(record["version"]),
        config_hash=digest,
        steps=tuple(steps),
        counts=dict(record["counts"]),
    )


# --- the steps both commands run ---------------------------------------------------------------


def _state_dir() -> str:
    from harvest.store import STATE_DIR

    return STATE_DIR


@contextlib.contextmanager
def _dataset_lock(out: Path) -> Iterator[None]:
    """Hold the dataset's own lock; another build or extend is a :class:`DatasetBusyError`."""
    from harvest.errors import DatasetBusyError, FolderLockedError
    from harvest.lock import folder_lock

    try:
        with folder_lock(out, out / _state_dir() / DATASET_LOCK):
            yield
    except DatasetBusyError:
        raise
    except FolderLockedError as exc:
        if Path(exc.lock_file).name != DATASET_LOCK:
            raise  # a stage's own lock: another stage command writes into the folder
        raise DatasetBusyError(exc.folder, exc.holder, exc.lock_file) from None


def _open_world(ctx: _Context, steps: list[BuildStep]) -> str | Path:
    """Build (or reuse) the demo world of a demo catalog; return the sampling region."""
    region: str | Path = ctx.config.region
    if ctx.config.catalog.source != "demo":
        return region
    from harvest.demo.truth import load_truth
    from harvest.demo.world import MARKER, run_demo_world

    t0 = time.perf_counter()
    world = _demo_world(ctx)
    given = world != ctx.out / _state_dir() / "demo-world"
    if given and (world / MARKER).is_file():
        # A world the user named (catalog.world, $HARVEST_DEMO_WORLD) is read as it is, whatever
        # seed or harvest version made it: rebuilding it would replace files outside the output.
        n_sites, reused = len(load_truth(world / "truth.json").sites), True
    else:
        built = run_demo_world(world, seed=ctx.config.seed, progress=ctx.progress.enabled)
        n_sites, reused = built.n_sites, built.reused
    steps.append(
        BuildStep("demo world", f"{n_sites} sites in {world}", time.perf_counter() - t0, reused)
    )
    if ctx.config.region == DEMO_WORLD_REGION:
        # SEN2VENuS and Sentinel-HR cover whole sites; the other products sample ROI centres.
        sites = ctx.config.site_product() is not None
        region = world / ("sites.geojson" if sites else "region.geojson")
    return region


def _open_source(ctx: _Context) -> tuple[str, Any]:
    """The build's catalog source (the demo world's folder for ``demo``) and it opened."""
    from harvest.backends.registry import open_catalog

    config = ctx.config
    source = str(_demo_world(ctx)) if config.catalog.source == "demo" else config.catalog.source
    opened = open_catalog(
        source,
        profile=config.catalog.profile,
        ee_project=config.catalog.ee_project or ctx.ee_project_env,
        timeout_s=config.catalog.timeout_s,
    )
    return source, opened


def _reader_settings(ctx: _Context, opened: Any, source: str) -> tuple[Any, Any]:
    """The href policy of the opened catalog and the readers' settings that follow from it."""
    from harvest.backends.registry import ReaderSettings, signer_for
    from harvest.hrefs import HrefPolicy, infer_catalog_kind

    config = ctx.config
    policy = HrefPolicy.for_catalog(opened.kind or infer_catalog_kind(source))
    readers = ReaderSettings.with_timeout(
        config.catalog.timeout_s,
        gdal_options={**ReaderSettings().gdal_options, **policy.gdal_options},
        sign=signer_for(opened.catalog.provider, config.catalog.timeout_s),
        drivers=policy.raster_drivers,
        ee_project=config.catalog.ee_project or ctx.ee_project_env,
    )
    return policy, readers


def _sites_file(ctx: _Context) -> str | Path:
    """The region of a site product.

    A layer of sites (the demo world's ``sites.geojson``), or a plain region whose VENuS sites
    the stage finds in the catalog.
    """
    config = ctx.config
    if config.catalog.source == "demo" and config.region == DEMO_WORLD_REGION:
        return _demo_world(ctx) / "sites.geojson"
    return config.region


def _site_run_inputs(ctx: _Context) -> dict[str, Any]:
    """What every site product's ``run_sites`` takes: sites, recipe, catalog, window, output."""
    from harvest.recipes import load_recipe
    from harvest.stages.search import search_window

    config = ctx.config
    recipe = load_recipe(config.recipe)
    first, last = search_window(recipe, config.start, config.end, ctx.today)
    source, opened = _open_source(ctx)
    _, readers = _reader_settings(ctx, opened, source)
    return {
        "region": _sites_file(ctx),
        "recipe": recipe,
        "catalog": opened.catalog,
        "readers": readers,
        "out_dir": ctx.out,
        "start": first,
        "end": last,
        "progress": ctx.progress,
    }


def _sen2venus_pass(ctx: _Context, steps: list[BuildStep]) -> _SitePass:
    """Every site's pairs searched, the new ones processed and written (resumable)."""
    from harvest.stages import _sen2venus as sen2venus

    config = ctx.config
    t0 = time.perf_counter()
    done = sen2venus.run_sites(
        **_site_run_inputs(ctx),
        seed=config.seed,
        upsample=config.sen2venus.sift_upsample,
        max_patches=config.sen2venus.max_patches,
    )
    steps.append(BuildStep("sen2venus", done.line(), time.perf_counter() - t0, not done.n_written))
    counts = {
        "sites": done.n_sites,
        "pairs_found": done.n_pairs,
        "pairs_written": done.n_pairs - len(done.dropped),
        "patches": done.n_patches,
    }
    return _SitePass(
        counts,
        "dropped_pairs",
        tuple({"pair": p, "reason": r} for p, r in done.dropped),
        done.n_written,
        {"pairs": counts["pairs_written"], "patches": counts["patches"]},
        "new same-day pairs",
    )


def _sentinel_hr_pass(ctx: _Context, steps: list[BuildStep]) -> _SitePass:
    """Every site's guide and target series searched; sites whose series changed (re)written."""
    from harvest.stages import _sentinel_hr as sentinel_hr

    config = ctx.config
    t0 = time.perf_counter()
    inputs = _site_run_inputs(ctx)
    recipe = inputs["recipe"]
    assert recipe.series is not None  # validated: products sentinel-hr needs recipe sentinel-hr
    done = sentinel_hr.run_sites(
        **inputs,
        ratio=config.sentinel_hr.ratio or recipe.series.target_ratio,
        guide_revisit_days=(
            config.sentinel_hr.guide_revisit_days or recipe.series.guide_revisit_days
        ),
        upsample=config.sentinel_hr.sift_upsample,
    )
    steps.append(
        BuildStep("sentinel-hr", done.line(), time.perf_counter() - t0, not done.n_written)
    )
    counts = {
        "sites": done.n_sites,
        "sites_written": done.n_sites - len(done.dropped),
        "guide_dates": done.n_guides,
        "target_dates": done.n_targets,
    }
    return _SitePass(
        counts,
        "dropped_sites",
        tuple({"site": p, "reason": r} for p, r in done.dropped),
        done.n_written,
        {"guide_dates": done.n_guides, "target_dates": done.n_targets},
        "sites whose series grew",
    )


@dataclass(frozen=True)
class _SitePass:
    """What one pass of a site product (sen2venus, sentinel-hr) did, for the record.

    Attributes:
        counts: The folder's counts now.
        dropped_key: ``dataset.json`` key of the dropped list.
        dropped: What was dropped and why.
        n_written: Pairs or sites written by this pass.
        totals: What the folder holds now (the history's ``added`` of a first build).
        change: What an extension adds, in words.
    """

    counts: dict[str, int]
    dropped_key: str
    dropped: tuple[dict[str, str], ...]
    n_written: int
    totals: dict[str, int]
    change: str


_SITE_PASSES = {"sen2venus": _sen2venus_pass, "sentinel-hr": _sentinel_hr_pass}


def _site_record(
    ctx: _Context, done: _SitePass, digest: str, prev: dict[str, Any]
) -> dict[str, Any]:
    """``dataset.json`` of a site-product folder as it is now (version and history kept)."""
    from harvest import __version__
    from harvest.recipes import load_recipe

    config, out = ctx.config, ctx.out
    created = str(prev.get("created") or _now())
    return {
        "name": str(prev.get("name") or out.resolve().name),
        "version": str(prev.get("version", FIRST_VERSION)),
        "recipe": load_recipe(config.recipe).name,
        "products": list(config.products),
        "config_hash": digest,
        "config": BUILD_CONFIG,
        "harvest_version": __version__,
        "created": created,
        "updated": str(prev.get("updated") or created),
        "catalog": config.catalog.source,
        "searched_until": (ctx.today or date.today()).isoformat(),
        "extensions": int(prev.get("extensions", 0)),
        "counts": dict(done.counts),
        done.dropped_key: list(done.dropped),
        "history": list(prev.get("history", []))
        or [
            {
                "version": FIRST_VERSION,
                "date": created[:10],
                "change": "first build",
                "added": dict(done.totals),
            }
        ],
    }


def _build_sites(
    ctx: _Context, steps: list[BuildStep], digest: str, state_path: Path
) -> BuildSummary:
    """A site-product build (:mod:`harvest.stages._sen2venus`, :mod:`._sentinel_hr`).

    Sites, series or pairs, their files, the record and a short card (no STAC Collection yet).
    """
    product = ctx.config.site_product()
    assert product is not None
    done = _SITE_PASSES[product](ctx, steps)
    previous = _read_json_or_none(ctx.out / DATASET_JSON)
    record = _site_record(ctx, done, digest, previous or {})
    _write_record(ctx.out, record, previous)
    _site_card(ctx, record)
    _write_json(state_path, {"config_hash": digest, "complete": True})
    return BuildSummary(
        output=ctx.out,
        version=str(record["version"]),
        config_hash=digest,
        steps=tuple(steps),
        counts=dict(record["counts"]),
    )


def _site_card(ctx: _Context, record: dict[str, Any]) -> None:
    from harvest.writers.card import write_sen2venus_card, write_sentinel_hr_card

    provider = "demo" if ctx.config.catalog.source == "demo" else ctx.config.catalog.source
    if ctx.config.site_product() == "sentinel-hr":
        write_sentinel_hr_card(ctx.out, record, provider)
    else:
        write_sen2venus_card(ctx.out, record, provider)


def _extend_sites(ctx: _Context, record: dict[str, Any], n: int, started: float) -> ExtendSummary:
    """``harvest extend`` of a site-product folder: what the sites gained since, as a version.

    Raises:
        InputFileError: ``n`` > 0 (such a folder covers whole sites: no ROIs to sample).
    """
    from harvest.errors import InputFileError

    product = ctx.config.site_product()
    assert product is not None
    if n:
        raise InputFileError(
            f"--n {n}: a {product} dataset covers whole sites and has no ROIs to sample; run "
            "'harvest extend DATASET' without --n to add what the sites gained since"
        )
    steps: list[BuildStep] = []
    _open_world(ctx, steps)
    done = _SITE_PASSES[product](ctx, steps)
    before = str(record["version"])
    new = _site_record(ctx, done, str(record["config_hash"]), record)
    added = done.n_written
    if added:
        run_no = int(record.get("extensions", 0)) + 1
        new["version"] = bump_version(before)
        new["extensions"] = run_no
        old_counts = record.get("counts", {})
        new["history"].append(
            {
                "version": new["version"],
                "date": (ctx.today or date.today()).isoformat(),
                "change": f"extension {run_no}: {done.change}",
                "added": {k: v - int(old_counts.get(k, 0)) for k, v in done.totals.items()},
            }
        )
    _write_record(ctx.out, new, record)
    _site_card(ctx, new)
    return ExtendSummary(
        output=ctx.out,
        status="extended" if added else "nothing_new",
        previous_version=before,
        version=str(new["version"]),
        new_rois=(),
        researched_rois=0,
        new_pairs=added,
        new_kept=(),
        new_rejected=0,
        new_failed=0,
        new_selected=0,
        since=str(record.get("searched_until") or ""),
        seconds=time.perf_counter() - started,
        steps=tuple(steps),
    )


def _search(
    ctx: _Context, rois_path: Path, output: Path, start: date | None, end: date | None
) -> None:
    from harvest.recipes import load_recipe
    from harvest.stages import search

    config = ctx.config
    source, opened = _open_source(ctx)
    search.run(
        rois_path,
        recipe=load_recipe(config.recipe),
        catalog=opened.catalog,
        catalog_name=config.catalog.source,
        catalog_kind=opened.kind,
        output=output,
        start=start,
        end=end,
        progress=ctx.progress,
        today=ctx.today,
    )


def _fetch_and_after(ctx: _Context, pairs_path: Path, steps: list[BuildStep]) -> None:
    """Fetch + QA, degrade (synthetic), embed + prune: each resumes from what is done."""
    from harvest.backends.registry import signer_for
    from harvest.qa import thresholds_from_options
    from harvest.recipes import load_recipe
    from harvest.stages import fetch
    from harvest.tables import read_pairs

    config, out = ctx.config, ctx.out
    pairs = read_pairs(pairs_path)
    t0 = time.perf_counter()
    q = config.qa
    fetched = fetch.run(
        pairs,
        load_recipe(config.recipe),
        out,
        workers=config.workers,
        scheduler=config.scheduler,
        thresholds=thresholds_from_options(
            q.max_shift_px, q.max_sam_deg, q.max_cloud_pct, q.max_nodata_pct, q.shift_method
        ),
        correct_shift=q.correct_shift,
        progress=ctx.progress,
        sign=signer_for(pairs.metadata.provider, config.catalog.timeout_s),
        split_seed=config.seed,
        ee_project=config.catalog.ee_project or ctx.ee_project_env,
        timeout_s=config.catalog.timeout_s,
    )
    steps.append(
        BuildStep(
            "fetch + QA",
            f"{fetched.n_kept} kept, {fetched.n_rejected} rejected, {fetched.n_failed} failed",
            time.perf_counter() - t0,
            fetched.n_done_before == fetched.n_total,
        )
    )
    if config.prune is not None and fetched.n_kept > 0 and config.prune_product() != "synthetic":
        from harvest.stages import prune

        t0 = time.perf_counter()
        product = config.prune_product()
        subset = "kept" if product == "cross-sensor" and not (out / product).is_dir() else product
        pruned = prune.run(
            out,
            out / BUILD_SELECTION,
            clusters=config.prune.clusters,
            seed=config.seed,
            strategy=config.prune.strategy,
            weights=_prune_weights(ctx),
            subset=subset,
            workers=config.workers,
            scheduler=config.scheduler,
            precision=config.prune.precision,
            progress=ctx.progress,
        )
        steps.append(
            BuildStep(
                "embed + prune",
                f"{pruned.n_selected} of {pruned.n_images} {product} images kept, one per "
                f"cluster ({pruned.n_clusters} clusters)",
                time.perf_counter() - t0,
                pruned.n_embedded == 0 and pruned.incremental and pruned.n_new == 0,
            )
        )


def _synthetic(ctx: _Context, rois_path: Path, steps: list[BuildStep]) -> None:
    """The synthetic set (:mod:`harvest.stages._synthetic`): each step resumes what is done."""
    from harvest.recipes import load_recipe
    from harvest.stages import _synthetic as synthetic
    from harvest.stages.search import search_window

    config, out = ctx.config, ctx.out
    s = config.synthetic
    recipe = synthetic.synthetic_recipe(load_recipe(config.recipe), s.chip_px)

    t0 = time.perf_counter()
    first, last = search_window(recipe, config.start, config.end, ctx.today)
    source, opened = _open_source(ctx)
    found = synthetic.search(
        rois_path,
        recipe=recipe,
        catalog=opened.catalog,
        out_dir=out,
        start=first,
        end=last,
        progress=ctx.progress,
    )
    steps.append(
        BuildStep(
            "search (synthetic)", found.line(), time.perf_counter() - t0, not found.n_searched
        )
    )

    t0 = time.perf_counter()
    policy, readers = _reader_settings(ctx, opened, source)
    read = synthetic.read_images(
        out,
        recipe=recipe,
        readers=readers,
        policy=policy,
        split_seed=config.seed,
        blank_window_px=s.blank_window_px,
        progress=ctx.progress,
    )
    steps.append(
        BuildStep(
            "read HR images + blank filter",
            read.line(),
            time.perf_counter() - t0,
            read.n_done_before == read.n_chosen,
        )
    )

    selection: Path | None = None
    if config.prune is not None and read.n_kept > 0 and config.prune_product() == "synthetic":
        from harvest.stages import prune

        t0 = time.perf_counter()
        selection = out / BUILD_SELECTION
        pruned = prune.run(
            out,
            selection,
            clusters=config.prune.clusters,
            seed=config.seed,
            strategy=config.prune.strategy,
            weights=_prune_weights(ctx),
            subset=synthetic.POOL_DIR,
            workers=config.workers,
            scheduler=config.scheduler,
            precision=config.prune.precision,
            progress=ctx.progress,
        )
        steps.append(
            BuildStep(
                "embed + prune",
                f"{pruned.n_selected} of {pruned.n_images} early/late HR images selected, one "
                f"per cluster ({pruned.n_clusters} clusters)",
                time.perf_counter() - t0,
                pruned.n_embedded == 0 and pruned.incremental and pruned.n_new == 0,
            )
        )
    rois = synthetic.kept_rois(selection, out)
    if rois:
        t0 = time.perf_counter()
        d = config.degradation
        degraded = synthetic.write_synthetic(
            out,
            rois,
            model=d.model,
            methods=d.methods,
            seed=config.seed,
            images=s.images,
            progress=ctx.progress,
        )
        steps.append(
            BuildStep(
                "harmonize + degrade",
                f"{len(rois)} ROIs, {degraded.n_images} HR images x {len(degraded.methods)} "
                "methods",
                time.perf_counter() - t0,
                degraded.n_done_before == degraded.n_images,
            )
        )
    synthetic.write_table(out, selection)


def _dataset_record(
    ctx: _Context,
    rois_path: Path,
    pairs_path: Path,
    digest: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """``dataset.json`` as the folder is now (version and history carried over)."""
    from harvest import __version__
    from harvest.recipes import load_recipe

    config, out = ctx.config, ctx.out
    selection = out / BUILD_SELECTION
    n_selected = _count_selected(selection) if config.prune is not None else None
    counts = _dataset_counts(
        out, _count_rois(rois_path), _count_pairs(pairs_path), _count_synthetic(out), n_selected
    )
    prev = previous or {}
    created = str(prev.get("created") or _now())
    return {
        "name": str(prev.get("name") or out.resolve().name),
        "version": str(prev.get("version", FIRST_VERSION)),
        "recipe": load_recipe(config.recipe).name,
        "products": list(config.products),
        "config_hash": digest,
        "config": BUILD_CONFIG,
        "harvest_version": __version__,
        "created": created,
        "updated": str(prev.get("updated") or created),
        "catalog": config.catalog.source,
        "searched_until": prev.get("searched_until"),
        "extensions": int(prev.get("extensions", 0)),
        "counts": counts,
        "history": list(prev.get("history", [])),
    }


def _write_record(out: Path, record: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Write ``dataset.json`` and the changelog rendered from its history.

    ``updated`` moves only when something else in the record changed.
    """
    if previous is not None and {k: v for k, v in previous.items() if k != "updated"} == {
        k: v for k, v in record.items() if k != "updated"
    }:
        record["updated"] = previous.get("updated", record["updated"])
    elif previous is not None:
        record["updated"] = _now()
    _write_json(out / DATASET_JSON, record)
    import json

    from harvest.diskio import atomic_write_bytes
    from harvest.store import json_bytes

    # Rendered from the record as written (keys sorted), so a run that resumes after a kill
    # and reads dataset.json back renders the same bytes as one that never stopped.
    written = json.loads(json_bytes(record))
    atomic_write_bytes(out / CHANGELOG, _changelog(written).encode())


def _changelog(record: dict[str, Any]) -> str:
    lines = [f"# Changelog of {record['name']}", ""]
    for entry in reversed(record.get("history", [])):
        lines += [f"## {entry['version']} ({entry['date']})", "", f"{entry['change']}.", ""]
        for what, n in entry.get("added", {}).items():
            if isinstance(n, list):
                lines.append(f"- {what}: {', '.join(n) if n else 'none'}")
            else:
                lines.append(f"- {what}: {n}")
        lines.append("")
    return "\n".join(lines)


def _describe(
    ctx: _Context, record: dict[str, Any], rois_path: Path, region: str | Path
) -> BuildStep:
    """The card, its figures and the STAC Collection."""
    from harvest.regions import load_region
    from harvest.writers.card import DescribeInputs, describe_dataset

    config, out = ctx.config, ctx.out
    t0 = time.perf_counter()
    described = describe_dataset(
        DescribeInputs(
            out_dir=out,
            record=record,
            rois=rois_path,
            pairs=out / BUILD_PAIRS,
            region=load_region(region).geometry if config.rois is None else None,
            selection=out / BUILD_SELECTION if config.prune is not None else None,
            limits={"max_shift_px": config.qa.max_shift_px, "max_sam_deg": config.qa.max_sam_deg},
            stac_api_url=_stac_api_url(config),
        )
    )
    return BuildStep(
        "write",
        f"card {described.card.name}, STAC collection with {described.n_items} items",
        time.perf_counter() - t0,
    )


def _stac_api_url(config: BuildConfig) -> str | None:
    """The STAC API root of the catalog (for links to the source items), or None."""
    from harvest.backends.profiles import known_profiles, load_profile

    source = config.catalog.source
    if source.startswith(("http://", "https://")):
        return source
    if source in known_profiles():
        return load_profile(source).stac_api_url
    return None


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    from harvest.store import atomic_write_json

    atomic_write_json(path, obj)


def _read_json_or_none(path: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim_folder(out: Path, state_path: Path, digest: str) -> None:
    """Check that ``out`` is new, empty, or started by this same config; then record it."""
    from harvest.errors import ConfigError

    state = _read_json_or_none(state_path)
    if state is not None and state.get("config_hash") != digest:
        raise ConfigError(
            f"{out} was built from another config (hash {state.get('config_hash')}, this one "
            f"{digest}): give a new output folder, or add to it with 'harvest extend'"
        )
    if state is None and out.exists():
        if not out.is_dir():
            raise ConfigError(f"output {out} is a file: give a folder")
        if any(p.name != _state_dir() for p in out.iterdir()) or any(
            p.name != DATASET_LOCK for p in (out / _state_dir()).glob("*")
        ):
            raise ConfigError(
                f"output {out} is a non-empty folder that no 'harvest build' made: give a new "
                "or empty folder"
            )
    if state is None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(state_path, {"config_hash": digest, "complete": False})


def _write_config(path: Path, config: BuildConfig, digest: str) -> None:
    """The resolved config, as YAML, with its hash in a comment."""
    import yaml

    from harvest.diskio import atomic_write_bytes

    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    text = f"# harvest build config (resolved; dataset hash {digest})\n{body}"
    atomic_write_bytes(path, text.encode())


def _demo_world(ctx: _Context) -> Path:
    """The demo world folder: the config's, else ``$HARVEST_DEMO_WORLD``, else inside out."""
    if ctx.config.catalog.world is not None:
        return Path(ctx.config.catalog.world)
    if ctx.demo_world_env:
        return Path(ctx.demo_world_env)
    return ctx.out / _state_dir() / "demo-world"


def _prune_weights(ctx: _Context) -> WeightsSpec:
    from harvest.demo.clip import write_demo_clip
    from harvest.embed import WeightsSpec

    p = ctx.config.prune
    assert p is not None
    if p.model == DEMO_CLIP_MODEL:
        demo = write_demo_clip(ctx.out / _state_dir() / "models", seed=ctx.config.seed)
        return WeightsSpec(model=str(demo.config), checkpoint=demo.checkpoint)
    return WeightsSpec(
        model=p.model,
        pretrained=None if p.checkpoint is not None else p.pretrained,
        checkpoint=p.checkpoint,
    )


def _count_rois(path: Path) -> int:
    from harvest.geoio import read_roi_points

    return len(read_roi_points(path).roi_id)


def _count_pairs(path: Path) -> int:
    from harvest.tables import read_pairs

    return len(read_pairs(path).rows) if path.exists() else 0


def _count_synthetic(out: Path) -> int:
    return sum(1 for p in (out / "synthetic").glob("*/*/metadata.json"))


def _count_selected(path: Path) -> int | None:
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    return int(sum(pq.read_table(path, columns=["selected"]).column("selected").to_pylist()))


def _dataset_counts(
    out: Path, n_rois: int, n_paired: int, n_synthetic: int, n_selected: int | None
) -> dict[str, int]:
    """The numbers ``dataset.json`` and the card report, from the manifest."""
    import pyarrow.parquet as pq

    counts = {"rois_sampled": n_rois, "rois_paired": n_paired}
    manifest_path = out / "manifest.parquet"
    rows: list[dict[str, Any]] = []
    if manifest_path.exists():
        manifest = pq.read_table(manifest_path, columns=["status", "reasons", "split"])
        rows = manifest.to_pylist()
    for status in ("kept", "rejected", "failed"):
        counts[f"chips_{status}"] = sum(r["status"] == status for r in rows)
    for split in ("train", "test"):
        counts[f"kept_{split}"] = sum(r["status"] == "kept" and r["split"] == split for r in rows)
    for r in rows:
        if r["status"] == "rejected":
            for reason in filter(None, str(r["reasons"] or "").split(";")):
                counts[f"rejected_{reason}"] = counts.get(f"rejected_{reason}", 0) + 1
    if n_synthetic:
        counts["synthetic_images"] = n_synthetic
    table = out / "synthetic.parquet"
    if table.exists():
        per_image = pq.read_table(table, columns=["roi_id", "status", "reasons"]).to_pylist()
        per_roi = {r["roi_id"]: r for r in per_image}.values()
        counts["synthetic_rois_searched"] = len(per_roi)
        counts["synthetic_rois_early_late"] = sum(r["status"] != "dropped" for r in per_roi)
        counts["synthetic_rois_pooled"] = sum(r["status"] == "kept" for r in per_roi)
        counts["synthetic_rois"] = len({p.parent.name for p in (out / "synthetic").glob("*/*")})
        for r in per_roi:
            if r["status"] == "rejected":
                for reason in filter(None, str(r["reasons"] or "").split(";")):
                    key = f"synthetic_rejected_{reason}"
                    counts[key] = counts.get(key, 0) + 1
    if n_selected is not None:
        counts["selected"] = n_selected
    return counts


# --- harvest extend ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtendSummary:
    """What :func:`run_extend` did.

    Attributes:
        output: The dataset folder.
        status: ``extended`` (a new version) or ``nothing_new``.
        previous_version: The version before.
        version: The version after (the same when nothing was added).
        new_rois: ROIs sampled by this run.
        researched_rois: Existing ROIs without a kept chip searched again since ``since``.
        new_pairs: ROIs with a pair they did not have before.
        new_kept: ROIs with a kept chip they did not have before.
        new_rejected: Of the new pairs, those rejected by QA.
        new_failed: Of the new pairs, those whose read failed (tried again next run).
        new_selected: Images newly selected by the incremental pruning.
        since: First day searched for the existing ROIs.
        seconds: Wall time.
        steps: The stages, in order.
    """

    output: Path
    status: str
    previous_version: str
    version: str
    new_rois: tuple[str, ...]
    researched_rois: int
    new_pairs: int
    new_kept: tuple[str, ...]
    new_rejected: int
    new_failed: int
    new_selected: int
    since: str
    seconds: float
    steps: tuple[BuildStep, ...]

    def to_json(self) -> dict[str, Any]:
        """The one-line JSON summary of ``harvest extend --json``."""
        return {
            "status": self.status,
            "dataset": str(self.output),
            "previous_version": self.previous_version,
            "version": self.version,
            "new_rois": len(self.new_rois),
            "researched_rois": self.researched_rois,
            "new_pairs": self.new_pairs,
            "new_kept": len(self.new_kept),
            "new_rejected": self.new_rejected,
            "new_failed": self.new_failed,
            "new_selected": self.new_selected,
            "since": self.since,
            "seconds": round(self.seconds, 1),
        }


def bump_version(version: str) -> str:
    """The next minor version (``1.2.3`` -> ``1.3.0``): data added, nothing removed."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return FIRST_VERSION
    return f"{parts[0]}.{int(parts[1]) + 1}.0"


def run_extend(
    dataset: Path,
    *,
    n: int = 0,
    since: date | None = None,
    progress: Progress | bool = NO_PROGRESS,
    demo_world_env: str | None = None,
    ee_project_env: str | None = None,
    today: date | None = None,
) -> ExtendSummary:
    """Add new ROIs and new acquisitions to a built dataset, then write a new version.

    New ROIs and new acquisitions of ROIs without a kept chip go through QA and the
    incremental pruning; the new version is ``dataset.json``, ``CHANGELOG.md``, card and STAC.

    - New ROIs (``n``) are sampled in the build's region, at its spacing from every existing
      ROI, with ids after the last one, and searched over the build's whole time window.
    - Existing ROIs without a kept chip (no pair, or a rejected one) are searched again from
      ``since`` (default: the last day an earlier run searched); a pair other than the one
      already tried replaces it and is fetched. A kept chip is never replaced: one sample per
      ROI, as the published layouts have.
    - Pruning is incremental: new images join the existing clusters and fill only empty ones.

    Resumable and safe to kill: the options and the dataset's state before the run are
    recorded first (``.harvest/extend.json``); every table is rewritten whole and atomically
    from the recorded searches, so running the same command again ends with the same dataset
    as an uninterrupted run.

    Args:
        dataset: A folder written by ``harvest build``.
        n: New ROIs to sample (0: only new acquisitions).
        since: First acquisition day for the existing ROIs.
        progress: Show progress bars.
        demo_world_env: ``$HARVEST_DEMO_WORLD``.
        ee_project_env: The Earth Engine project of the environment.
        today: The date of the run (default: today).

    Returns:
        An :class:`ExtendSummary`.

    Raises:
        InputFileError: not a complete built dataset, or another interrupted extension with
            other options is pending.
        SamplingError: ``n`` ROIs do not fit.
        DatasetBusyError: another build or extend holds the folder.
        TemporaryFailureError: the catalog could not be reached (retry later).
    """
    from harvest.config import load_build_config
    from harvest.errors import InputFileError

    started = time.perf_counter()
    out = Path(dataset)
    record = _read_json_or_none(out / DATASET_JSON)
    state = _read_json_or_none(out / _state_dir() / BUILD_STATE)
    if record is None or state is None or not (out / BUILD_CONFIG).is_file():
        raise InputFileError(
            f"{out} is not a dataset folder written by 'harvest build' (no dataset.json, "
            "config.yaml or .harvest/build.json): give the output folder of a build"
        )
    if not state.get("complete"):
        raise InputFileError(
            f"the build of {out} did not finish: run 'harvest build {out / BUILD_CONFIG}' "
            "again to complete it, then extend"
        )
    if n < 0:
        raise InputFileError(f"--n {n}: give a number of new ROIs >= 0")
    config = load_build_config(out / BUILD_CONFIG, [f"output={out.resolve()}"])
    today = today or date.today()
    ctx = _Context(config, out, Progress.of(progress), demo_world_env, ee_project_env, today)
    with _dataset_lock(out):
        if config.site_product() is not None:
            return _extend_sites(ctx, record, n, started)
        pending = _pending_extension(out, record, n, since, today, config.seed)
        try:
            return _extend(ctx, record, pending, started)
        except OSError as exc:
            _raise_if_network(exc)
            raise


def _raise_if_network(exc: OSError) -> None:
    from harvest.errors import TemporaryFailureError

    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, (ConnectionError, TimeoutError)) or module in ("requests", "urllib3"):
        raise TemporaryFailureError(
            f"network error ({type(exc).__name__}): the catalog cannot be reached now; "
            "run the same command later"
        ) from None


def _pending_extension(
    out: Path, record: dict[str, Any], n: int, since: date | None, today: date, seed: int
) -> dict[str, Any]:
    """This run's plan: the recorded one of an interrupted run, or a new one (written first)."""
    import numpy as np

    from harvest.errors import InputFileError
    from harvest.store import load_records

    path = out / _state_dir() / EXTEND_STATE
    pending = _read_json_or_none(path)
    since_iso = since.isoformat() if since else None
    if pending is not None:
        if (pending["n"], pending["since_arg"]) != (n, since_iso):
            raise InputFileError(
                f"an interrupted 'harvest extend' (--n {pending['n']}"
                + (f" --since {pending['since_arg']}" if pending["since_arg"] else "")
                + f") is pending in {out}: run it again with the same options to finish it first"
            )
        return pending
    run_no = int(record.get("extensions", 0)) + 1
    records = load_records(out)
    rois = _roi_ids(out / BUILD_ROIS) if (out / BUILD_ROIS).exists() else []
    first_day = since_iso or str(record.get("searched_until") or record["created"][:10])
    pending = {
        "run": run_no,
        "n": n,
        "since_arg": since_iso,
        "since": first_day,
        "today": today.isoformat(),
        # The build's seed and the run number: the same on a retry, another per extension.
        "seed": int(np.random.SeedSequence([seed, run_no]).generate_state(1)[0]),
        "version_before": str(record["version"]),
        "rois_before": rois,
        "kept_before": sorted(r for r, rec in records.items() if rec.status.value == "kept"),
        "selected_before": sorted(_selected_paths(out / BUILD_SELECTION)),
        "pairs_before": _pair_ids(out / BUILD_PAIRS),
        "synthetic_before": sorted(_synthetic_images(out)),
    }
    (out / _state_dir()).mkdir(parents=True, exist_ok=True)
    _write_json(path, pending)
    return pending


def _roi_ids(path: Path) -> list[str]:
    from harvest.geoio import read_roi_points

    return list(read_roi_points(path).roi_id)


def _selected_paths(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    if not path.exists():
        return set()
    t = pq.read_table(path, columns=["path", "selected"]).to_pylist()
    return {r["path"] for r in t if r["selected"]}


def _synthetic_images(out: Path) -> set[str]:
    """The written synthetic images, as ``ROI/IMAGE``."""
    return {
        f"{p.parent.parent.name}/{p.parent.name}" for p in out.glob("synthetic/*/*/metadata.json")
    }


def _pair_ids(path: Path) -> dict[str, list[str]]:
    from harvest.tables import read_pairs

    if not path.exists():
        return {}
    return {
        r.roi_id: [r.pair.lr.item_id, r.pair.hr.item_id]
        for r in read_pairs(path).rows
        if r.rank == 0
    }


def _extend(
    ctx: _Context, record: dict[str, Any], pending: dict[str, Any], started: float
) -> ExtendSummary:
    import shutil

    from harvest.errors import InputFileError
    from harvest.stages import sample

    config, out = ctx.config, ctx.out
    run_no = int(pending["run"])
    work = out / _state_dir() / EXTEND_DIR
    work.mkdir(parents=True, exist_ok=True)
    steps: list[BuildStep] = []
    region = _open_world(ctx, steps)
    finished_before = int(record.get("extensions", 0)) >= run_no  # killed after the version
    if not finished_before:
        # 1. New ROIs, kept apart from every existing one; merged into rois.parquet.
        t0 = time.perf_counter()
        new_rois_path = work / f"rois-{run_no}.parquet"
        if pending["n"] > 0 and not new_rois_path.exists():
            if config.rois is not None:
                raise InputFileError(
                    f"the ROIs of {out} came from a file (rois: {config.rois}), so there is no "
                    "region to sample new ones in: extend without --n"
                )
            # Exclude what the dataset had before this run (rois.parquet may hold ours already).
            before = work / f"rois-before-{run_no}.parquet"
            _write_roi_subset(out / BUILD_ROIS, before, set(pending["rois_before"]))
            sample.run(
                n=int(pending["n"]),
                output=new_rois_path,
                region=region,
                seed=int(pending["seed"]),
                min_distance_km=config.min_distance_km,
                exclude=before,
                progress=ctx.progress,
            )
        new_ids = _roi_ids(new_rois_path) if new_rois_path.exists() else []
        if new_ids:
            _merge_rois(out / BUILD_ROIS, new_rois_path)
        steps.append(BuildStep("sample", f"{len(new_ids)} new ROIs", time.perf_counter() - t0))

        if "cross-sensor" in config.products:
            # 2. Search: new ROIs over the whole window; ROIs without a kept chip since `since`.
            t0 = time.perf_counter()
            kept_before = set(pending["kept_before"])
            again = [r for r in pending["rois_before"] if r not in kept_before]
            end = config.end or date.fromisoformat(pending["today"])
            since_day = date.fromisoformat(pending["since"])
            searches: list[Path] = []
            if new_ids:
                searches.append(
                    _staged_search(
                        ctx, work, f"new-{run_no}", set(new_ids), config.start, config.end
                    )
                )
            if again and since_day <= end:
                searches.append(
                    _staged_search(ctx, work, f"again-{run_no}", set(again), since_day, end)
                )
            changed = _merge_pairs(out / BUILD_PAIRS, searches, pending["pairs_before"])
            steps.append(
                BuildStep(
                    "search",
                    f"{len(new_ids)} new ROIs over the window, {len(again)} without a kept chip "
                    f"from {since_day}; {len(changed)} with a new pair",
                    time.perf_counter() - t0,
                )
            )
            _forget_stale_chips(out, out / BUILD_PAIRS)

            # 3. Fetch + QA, degrade, incremental pruning: each resumes from what is done.
            _fetch_and_after(ctx, out / BUILD_PAIRS, steps)
        if "synthetic" in config.products:
            # New ROIs only: ROIs searched before keep their early and late images.
            _synthetic(ctx, out / BUILD_ROIS, steps)

    # 4. What this run added, and the new version.
    from harvest.store import load_records

    records = load_records(out)
    rois_before = set(pending["rois_before"])
    new_rois = tuple(r for r in _roi_ids(out / BUILD_ROIS) if r not in rois_before)
    pairs_now = _pair_ids(out / BUILD_PAIRS)
    new_pairs = [r for r, ids in pairs_now.items() if pending["pairs_before"].get(r) != ids]
    kept_now = {r for r, rec in records.items() if rec.status.value == "kept"}
    new_kept = tuple(sorted(kept_now - set(pending["kept_before"])))
    status_of = {r: rec.status.value for r, rec in records.items()}
    new_rejected = sum(status_of.get(r) == "rejected" for r in new_pairs)
    new_failed = sum(status_of.get(r) == "failed" for r in new_pairs)
    new_selected = len(_selected_paths(out / BUILD_SELECTION) - set(pending["selected_before"]))
    version_before = str(pending["version_before"])
    new_synthetic = sorted(_synthetic_images(out) - set(pending.get("synthetic_before", [])))
    grew = bool(new_kept) or new_selected > 0 or bool(new_synthetic)
    previous = _read_json_or_none(out / DATASET_JSON)
    assert previous is not None
    new_record = _dataset_record(
        ctx, out / BUILD_ROIS, out / BUILD_PAIRS, str(previous["config_hash"]), previous
    )
    new_record["searched_until"] = pending["today"]
    if grew and not finished_before:
        new_record["version"] = bump_version(version_before)
        new_record["extensions"] = run_no
        new_record["history"].append(
            {
                "version": new_record["version"],
                "date": pending["today"],
                "change": f"extension {run_no}: new ROIs and acquisitions since {pending['since']}",
                "added": {
                    "new ROIs": len(new_rois),
                    "ROIs searched again (no kept chip)": len(
                        [r for r in pending["rois_before"] if r not in set(pending["kept_before"])]
                    ),
                    "new pairs": len(new_pairs),
                    "kept": list(new_kept),
                    "rejected": new_rejected,
                    "failed (tried again next run)": new_failed,
                    "newly selected by pruning": new_selected,
                    **({"new synthetic images": len(new_synthetic)} if new_synthetic else {}),
                },
            }
        )
    elif not finished_before:
        new_record["extensions"] = run_no  # nothing to add: no version, the run is recorded
    _write_record(out, new_record, previous)
    steps.append(_describe(ctx, new_record, out / BUILD_ROIS, region))
    (out / _state_dir() / EXTEND_STATE).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return ExtendSummary(
        output=out,
        status="extended" if new_record["version"] != version_before else "nothing_new",
        previous_version=version_before,
        version=str(new_record["version"]),
        new_rois=new_rois,
        researched_rois=len(
            [r for r in pending["rois_before"] if r not in set(pending["kept_before"])]
        ),
        new_pairs=len(new_pairs),
        new_kept=new_kept,
        new_rejected=new_rejected,
        new_failed=new_failed,
        new_selected=new_selected,
        since=str(pending["since"]),
        seconds=time.perf_counter() - started,
        steps=tuple(steps),
    )


def _read_roi_table(path: Path) -> tuple[Any, dict[str, Any]]:
    """A ROI table's rows (pyarrow) and its ``harvest`` metadata."""
    import pyarrow.parquet as pq

    from harvest.geoio import read_harvest_metadata

    return pq.read_table(path), read_harvest_metadata(path)


def _write_roi_rows(path: Path, table: Any, meta: dict[str, Any]) -> None:
    """Write ROI rows as a ROI table (GeoParquet points; bbox and metadata of the rows)."""
    import numpy as np
    import shapely

    from harvest.geoio import write_points_geoparquet

    points = shapely.from_wkb(table.column("geometry").to_pylist())
    lon = np.asarray(shapely.get_x(points), dtype=np.float64)
    lat = np.asarray(shapely.get_y(points), dtype=np.float64)
    columns = {c: table.column(c).to_pylist() for c in table.column_names if c != "geometry"}
    write_points_geoparquet(path, lon, lat, columns, extra_metadata={**meta, "n": len(lon)})


def _write_roi_subset(source: Path, target: Path, keep: set[str]) -> None:
    """The rows of a ROI table whose id is in ``keep``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table, meta = _read_roi_table(source)
    mask = pc.is_in(table.column("roi_id"), value_set=pa.array(sorted(keep), type=pa.string()))
    _write_roi_rows(target, table.filter(mask), meta)


def _merge_rois(rois_path: Path, new_path: Path) -> None:
    """Append the new ROIs that ``rois_path`` does not hold yet (idempotent), atomically."""
    import pyarrow as pa

    old, meta = _read_roi_table(rois_path)
    new, _ = _read_roi_table(new_path)
    have = set(old.column("roi_id").to_pylist())
    keep = [i for i, r in enumerate(new.column("roi_id").to_pylist()) if r not in have]
    if not keep:
        return
    added = new.select(old.column_names).take(pa.array(keep)).cast(old.schema)
    _write_roi_rows(rois_path, pa.concat_tables([old, added]), meta)


def _staged_search(
    ctx: _Context, work: Path, name: str, roi_ids: set[str], start: date | None, end: date | None
) -> Path:
    """Search some ROIs once per run: the result is kept in ``work`` and reused on resume."""
    from harvest.errors import CatalogError, TemporaryFailureError

    output = work / f"pairs-{name}.parquet"
    if output.exists():
        return output
    subset = work / f"rois-{name}.parquet"
    _write_roi_subset(ctx.out / BUILD_ROIS, subset, roi_ids)
    try:
        _search(ctx, subset, output, start, end)
    except CatalogError as exc:
        if _is_unreachable(str(exc)):
            raise TemporaryFailureError(f"{exc} (nothing was changed; run again later)") from None
        raise
    return output


def _is_unreachable(message: str) -> bool:
    """Whether a catalog error says the catalog did not answer (not that the request was bad)."""
    signs = ("did not answer", "gave no usable answer", "HTTP 5", "HTTP 429", "HTTP 408")
    return any(s in message for s in signs)


def _merge_pairs(pairs_path: Path, searches: list[Path], before: dict[str, list[str]]) -> list[str]:
    """Rewrite pairs.parquet whole: the rows before, with the staged searches' rows on top.

    A ROI that had a pair keeps it unless the search found another one (a new acquisition);
    new ROIs get theirs. Idempotent: the result depends only on the staged tables.

    Returns:
        The ROIs whose pair is new.
    """
    from dataclasses import replace

    from harvest.tables import read_dropped, read_pairs, write_pairs

    base = read_pairs(pairs_path)
    rows = {r.roi_id: r for r in base.rows if r.rank == 0}
    dropped = {d.roi_id: d for d in read_dropped(pairs_path)}
    changed: list[str] = []
    n_requests = base.metadata.n_requests
    for path in searches:
        found = read_pairs(path)
        n_requests += found.metadata.n_requests
        for row in found.rows:
            if row.rank != 0:
                continue
            ids = [row.pair.lr.item_id, row.pair.hr.item_id]
            if before.get(row.roi_id) != ids:
                changed.append(row.roi_id)
            if before.get(row.roi_id) != ids or row.roi_id not in rows:
                rows[row.roi_id] = row
            dropped.pop(row.roi_id, None)
        for d in read_dropped(path):
            if d.roi_id not in rows:
                dropped[d.roi_id] = d
    ordered = [rows[k] for k in sorted(rows)]
    meta = replace(
        base.metadata,
        n_rois=len(rows) + len(dropped),
        n_requests=n_requests,
        end=max([base.metadata.end] + [read_pairs(p).metadata.end for p in searches if p.exists()]),
    )
    write_pairs(pairs_path, ordered, [dropped[k] for k in sorted(dropped)], meta)
    return changed


def _forget_stale_chips(out: Path, pairs_path: Path) -> None:
    """Chips whose recorded scenes are not their ROI's pair any more are done again."""
    from harvest.store import forget_chip, load_records
    from harvest.tables import read_pairs

    records = load_records(out)
    for row in read_pairs(pairs_path).rows:
        rec = records.get(row.roi_id)
        if rec is None or rec.status.value == "kept":
            continue
        if (rec.lr_id, rec.hr_id) != (row.pair.lr.item_id, row.pair.hr.item_id):
            forget_chip(out, row.roi_id)
