"""Chains stages: ``harvest demo run`` today (``build`` and ``extend`` next); owns resume.

Every stage lives in :mod:`harvest.stages` (the code of ``harvest X`` is in
``harvest/stages/X.py``); this module only runs them in order and skips what is already done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harvest.progress import NO_PROGRESS, Progress

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
