"""Chains stages: ``harvest build`` and ``harvest demo run`` (``extend`` next); owns resume.

Every stage lives in :mod:`harvest.stages` (the code of ``harvest X`` is in
``harvest/stages/X.py``); this module only runs them in order and skips what is already done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
    import time

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


# --- harvest build -----------------------------------------------------------------------------

# Files of a built dataset folder (beside the recipe's layout and fetch's manifest.parquet).
BUILD_ROIS = "rois.parquet"
BUILD_PAIRS = "pairs.parquet"
BUILD_SELECTION = "selection.parquet"
BUILD_CONFIG = "config.yaml"
DATASET_JSON = "dataset.json"
# The build's own resume record: the hash of the config that owns the folder.
BUILD_STATE = "build.json"
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


def run_build(
    config: BuildConfig,
    *,
    progress: Progress | bool = NO_PROGRESS,
    demo_world_env: str | None = None,
    ee_project_env: str | None = None,
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

    Returns:
        A :class:`BuildSummary`.

    Raises:
        ConfigError: the folder was started by another config, or is a non-empty folder that no
            build made.
        HarvestError: what the stages raise.
    """
    import time

    from harvest import __version__
    from harvest.store import STATE_DIR, atomic_write_json

    progress = Progress.of(progress)
    out = Path(config.output)
    digest = config.dataset_hash()
    state_path = out / STATE_DIR / BUILD_STATE
    _claim_folder(out, state_path, digest)
    _write_config(out / BUILD_CONFIG, config, digest)
    steps: list[BuildStep] = []

    # The catalog (and for the demo, its world).
    t0 = time.perf_counter()
    region: str | Path = config.region
    world: Path | None = None
    if config.catalog.source == "demo":
        world = _demo_world(config, out, demo_world_env)
        from harvest.demo.world import run_demo_world

        built = run_demo_world(world, seed=config.seed, progress=progress.enabled)
        steps.append(
            BuildStep(
                "demo world",
                f"{built.n_sites} sites in {built.out_dir}",
                time.perf_counter() - t0,
                built.reused,
            )
        )
        if config.region == DEMO_WORLD_REGION:
            region = built.out_dir / "region.geojson"

    # sample
    from harvest.geoio import read_roi_points
    from harvest.stages import sample

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
            progress=progress,
        )
    n_rois = len(read_roi_points(rois_path).roi_id)
    given = " (given)" if config.rois is not None else ""
    steps.append(
        BuildStep(
            "sample",
            f"{n_rois} ROIs{given} >= {config.min_distance_km:g} km apart",
            time.perf_counter() - t0,
            reused,
        )
    )

    # search
    from harvest.backends.registry import open_catalog, signer_for
    from harvest.recipes import load_recipe
    from harvest.stages import search
    from harvest.tables import read_pairs

    recipe = load_recipe(config.recipe)
    t0 = time.perf_counter()
    pairs_path = out / BUILD_PAIRS
    reused = pairs_path.exists()
    source = str(world) if world is not None else config.catalog.source
    if not reused:
        opened = open_catalog(
            source,
            profile=config.catalog.profile,
            ee_project=config.catalog.ee_project or ee_project_env,
            timeout_s=config.catalog.timeout_s,
        )
        search.run(
            rois_path,
            recipe=recipe,
            catalog=opened.catalog,
            catalog_name=config.catalog.source,
            catalog_kind=opened.kind,
            output=pairs_path,
            start=config.start,
            end=config.end,
            progress=progress,
        )
    pairs = read_pairs(pairs_path)
    steps.append(
        BuildStep(
            "search",
            f"{len(pairs.rows)} of {n_rois} ROIs paired",
            time.perf_counter() - t0,
            reused,
        )
    )

    # fetch + QA
    from harvest.qa import thresholds_from_options
    from harvest.stages import fetch

    t0 = time.perf_counter()
    q = config.qa
    fetched = fetch.run(
        pairs,
        recipe,
        out,
        workers=config.workers,
        scheduler=config.scheduler,
        thresholds=thresholds_from_options(
            q.max_shift_px, q.max_sam_deg, q.max_cloud_pct, q.max_nodata_pct, q.shift_method
        ),
        correct_shift=q.correct_shift,
        progress=progress,
        sign=signer_for(pairs.metadata.provider, config.catalog.timeout_s),
        split_seed=config.seed,
        ee_project=config.catalog.ee_project or ee_project_env,
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

    # degrade (the synthetic product)
    n_synthetic = 0
    if "synthetic" in config.products and fetched.n_kept > 0:
        from harvest.stages import degrade

        t0 = time.perf_counter()
        d = config.degradation
        degraded = degrade.run(
            out, d.model, out, methods=d.methods, seed=config.seed, progress=progress
        )
        n_synthetic = degraded.n_images - degraded.n_skipped
        steps.append(
            BuildStep(
                "degrade",
                f"{degraded.n_images} HR images x {len(degraded.methods)} methods",
                time.perf_counter() - t0,
                degraded.n_done_before == degraded.n_images,
            )
        )

    # embed + prune
    n_selected: int | None = None
    if config.prune is not None:
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
            weights=_prune_weights(config, out),
            subset=subset,
            progress=progress,
        )
        n_selected = pruned.n_selected
        steps.append(
            BuildStep(
                "embed + prune",
                f"{pruned.n_selected} of {pruned.n_images} {product} images kept, one per "
                f"cluster ({pruned.n_clusters} clusters)",
                time.perf_counter() - t0,
                pruned.n_embedded == 0 and pruned.incremental,
            )
        )

    # write: dataset.json (the card and STAC come from it)
    counts = _dataset_counts(out, n_rois, len(pairs.rows), n_synthetic, n_selected)
    previous = _read_json_or_none(out / DATASET_JSON)
    version = FIRST_VERSION
    created = _now()
    if previous is not None:
        version = str(previous.get("version", FIRST_VERSION))
        created = str(previous.get("created", created))
    record = {
        "name": out.resolve().name,
        "version": version,
        "recipe": recipe.name,
        "products": list(config.products),
        "config_hash": digest,
        "config": BUILD_CONFIG,
        "harvest_version": __version__,
        "created": created,
        "catalog": config.catalog.source,
        "counts": counts,
    }
    unchanged = previous is not None and {k: v for k, v in previous.items() if k != "updated"} == {
        k: v for k, v in record.items() if k != "updated"
    }
    record["updated"] = str(previous.get("updated", created)) if unchanged and previous else _now()
    atomic_write_json(out / DATASET_JSON, record)

    # the card, its figures and the STAC Collection
    from harvest.regions import load_region
    from harvest.writers.card import DescribeInputs, describe_dataset

    t0 = time.perf_counter()
    described = describe_dataset(
        DescribeInputs(
            out_dir=out,
            record=record,
            rois=rois_path,
            pairs=pairs_path,
            region=load_region(region).geometry if config.rois is None else None,
            selection=out / BUILD_SELECTION if config.prune is not None else None,
            limits={"max_shift_px": q.max_shift_px, "max_sam_deg": q.max_sam_deg},
            stac_api_url=_stac_api_url(config),
        )
    )
    steps.append(
        BuildStep(
            "write",
            f"card {described.card.name}, STAC collection with {described.n_items} items",
            time.perf_counter() - t0,
        )
    )
    atomic_write_json(state_path, {"config_hash": digest, "complete": True})
    return BuildSummary(
        output=out, version=version, config_hash=digest, steps=tuple(steps), counts=counts
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


def _read_json_or_none(path: Path) -> dict[str, object] | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim_folder(out: Path, state_path: Path, digest: str) -> None:
    """Check that ``out`` is new, empty, or started by this same config; then record it."""
    from harvest.errors import ConfigError
    from harvest.store import atomic_write_json

    state = _read_json_or_none(state_path)
    if state is not None and state.get("config_hash") != digest:
        raise ConfigError(
            f"{out} was built from another config (hash {state.get('config_hash')}, this one "
            f"{digest}): give a new output folder, or add to it with 'harvest extend'"
        )
    if state is None and out.exists():
        if not out.is_dir():
            raise ConfigError(f"output {out} is a file: give a folder")
        if any(out.iterdir()):
            raise ConfigError(
                f"output {out} is a non-empty folder that no 'harvest build' made: give a new "
                "or empty folder"
            )
    if state is None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_path, {"config_hash": digest, "complete": False})


def _write_config(path: Path, config: BuildConfig, digest: str) -> None:
    """The resolved config, as YAML, with its hash in a comment."""
    import yaml

    from harvest.diskio import atomic_write_bytes

    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    text = f"# harvest build config (resolved; dataset hash {digest})\n{body}"
    atomic_write_bytes(path, text.encode())


def _demo_world(config: BuildConfig, out: Path, env: str | None) -> Path:
    """The demo world folder: the config's, else ``$HARVEST_DEMO_WORLD``, else inside out."""
    from harvest.store import STATE_DIR

    if config.catalog.world is not None:
        return Path(config.catalog.world)
    if env:
        return Path(env)
    return out / STATE_DIR / "demo-world"


def _prune_weights(config: BuildConfig, out: Path) -> WeightsSpec:
    from harvest.demo.clip import write_demo_clip
    from harvest.embed import WeightsSpec
    from harvest.store import STATE_DIR

    p = config.prune
    assert p is not None
    if p.model == DEMO_CLIP_MODEL:
        demo = write_demo_clip(out / STATE_DIR / "models", seed=config.seed)
        return WeightsSpec(model=str(demo.config), checkpoint=demo.checkpoint)
    return WeightsSpec(
        model=p.model,
        pretrained=None if p.checkpoint is not None else p.pretrained,
        checkpoint=p.checkpoint,
    )


def _dataset_counts(
    out: Path, n_rois: int, n_paired: int, n_synthetic: int, n_selected: int | None
) -> dict[str, int]:
    """The numbers ``dataset.json`` and the card report, from the manifest."""
    import pyarrow.parquet as pq

    counts = {"rois_sampled": n_rois, "rois_paired": n_paired}
    manifest = pq.read_table(out / "manifest.parquet", columns=["status", "reasons", "split"])
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
    if n_selected is not None:
        counts["selected"] = n_selected
    return counts
