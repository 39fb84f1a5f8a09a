"""``harvest demo world``: write the seeded demo world (COGs, STAC catalog, stac-geoparquet, truth).

The simulator itself lives in :mod:`harvest.demo`; this stage builds a world in a folder (or
reuses the complete one of the same seed already there).
"""

from __future__ import annotations

from pathlib import Path

from harvest.demo.world import DemoWorldSummary, run_demo_world
from harvest.progress import NO_PROGRESS, Progress


def run(
    out_dir: Path,
    *,
    seed: int = 0,
    force: bool = False,
    site_size_m: float = 2400.0,
    n_sites: int | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> DemoWorldSummary:
    """Build the demo world of ``seed`` in ``out_dir`` (see :func:`run_demo_world`).

    Args:
        out_dir: Folder to write the world into (replaced atomically).
        seed: Seed of the simulator: same seed, same truth and pixels.
        force: Rebuild even if the folder holds a complete world of this seed.
        site_size_m: Side of each site in metres (smaller is faster; tests).
        n_sites: Number of sites (None: the standard 7; more adds seeded CONUS sites).
        progress: How to show progress.

    Returns:
        A :class:`~harvest.demo.world.DemoWorldSummary`.
    """
    return run_demo_world(
        out_dir,
        seed=seed,
        force=force,
        progress=Progress.of(progress).enabled,
        site_size_m=site_size_m,
        n_sites=n_sites,
    )
