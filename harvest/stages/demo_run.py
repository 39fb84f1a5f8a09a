"""``harvest demo run``: every stage that exists, chained on the embedded demo world.

What ``make demo`` runs. The chaining (and its resume: each stage's output is reused when it is
already there) is :func:`harvest.pipeline.run_demo`'s; this stage is the command's entry point.
"""

from __future__ import annotations

from pathlib import Path

from harvest.pipeline import DemoRunSummary, run_demo
from harvest.progress import NO_PROGRESS, Progress


def run(
    out_dir: Path,
    *,
    seed: int = 0,
    world: Path | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> DemoRunSummary:
    """Run the demo chain into ``out_dir`` (see :func:`harvest.pipeline.run_demo`).

    Args:
        out_dir: Folder for every output of the demo.
        seed: Seed of the world and the samplers.
        world: Demo world folder to use or build (default: ``out_dir/world``).
        progress: How to show progress.

    Returns:
        A :class:`~harvest.pipeline.DemoRunSummary`, one line per stage.
    """
    return run_demo(out_dir, seed=seed, world_dir=world, progress=Progress.of(progress))
