"""``harvest extend DATASET_DIR [--n 500] [--since DATE] [--json]``: the scheduled job.

Adds new ROIs and new acquisitions to a dataset written by ``harvest build`` and makes a new
version; the work is :func:`harvest.pipeline.run_extend`'s. Safe to run from cron: one run at a
time per dataset (a second one exits with :data:`EXIT_BUSY`), resumable after ``kill -9``, and
exit statuses a scheduler can act on (:data:`EXIT_DONE`, :data:`EXIT_BAD_INPUT`,
:data:`EXIT_NOTHING_NEW`, :data:`EXIT_BUSY`, :data:`EXIT_RETRY`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from harvest.errors import DatasetBusyError, TemporaryFailureError
from harvest.pipeline import ExtendSummary, run_extend
from harvest.progress import NO_PROGRESS, Progress

EXIT_DONE = 0
"""A new version was written."""
EXIT_BAD_INPUT = 1
"""Bad input: not a built dataset, bad options, a config that no longer loads."""
EXIT_NOTHING_NEW = 3
"""Nothing new to add: the version is unchanged."""
EXIT_BUSY = DatasetBusyError.exit_code
"""Another build or extend holds the dataset: this run did nothing (the other one works)."""
EXIT_RETRY = TemporaryFailureError.exit_code
"""A temporary failure (an unreachable catalog): nothing was lost; run again later."""


def run(
    dataset: Path,
    *,
    n: int = 0,
    since: date | None = None,
    progress: Progress | bool = NO_PROGRESS,
    demo_world_env: str | None = None,
    ee_project_env: str | None = None,
    today: date | None = None,
) -> ExtendSummary:
    """Extend a built dataset (see :func:`harvest.pipeline.run_extend`).

    Args:
        dataset: The dataset folder.
        n: New ROIs to sample.
        since: First acquisition day searched for the existing ROIs without a kept chip.
        progress: How to show progress.
        demo_world_env: ``$HARVEST_DEMO_WORLD``.
        ee_project_env: The Earth Engine project of the environment.
        today: The run's date (default: today).

    Returns:
        An :class:`~harvest.pipeline.ExtendSummary`.
    """
    return run_extend(
        Path(dataset),
        n=n,
        since=since,
        progress=Progress.of(progress),
        demo_world_env=demo_world_env,
        ee_project_env=ee_project_env,
        today=today,
    )
