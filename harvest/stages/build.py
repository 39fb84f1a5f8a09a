"""``harvest build CONFIG.yaml [--set key=value ...]``: one config runs the whole pipeline.

The config (:class:`harvest.config.BuildConfig`; shipped ones in ``configs/builds/``) names the
recipe, the catalog, the region and n, the time window, the QA limits, the degradation model,
the pruning and the output folder. The chaining and its resume are
:func:`harvest.pipeline.run_build`'s; this stage loads and checks the config first, so a bad key,
type or path is a one-line error before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harvest.config import BuildConfig, load_build_config
from harvest.pipeline import BuildSummary, run_build
from harvest.progress import NO_PROGRESS, Progress


def run(
    config: Path | BuildConfig,
    *,
    overrides: Sequence[str] = (),
    progress: Progress | bool = NO_PROGRESS,
    demo_world_env: str | None = None,
    ee_project_env: str | None = None,
) -> BuildSummary:
    """Build (or resume building) the dataset a config describes.

    Args:
        config: A build config YAML file, or a validated config.
        overrides: ``key=value`` items (dotted keys for nested values) applied to the file's
            values before validation (only with a file).
        progress: How to show progress.
        demo_world_env: ``$HARVEST_DEMO_WORLD``: the demo world of ``catalog: demo`` when the
            config names none.
        ee_project_env: The Earth Engine project of the environment.

    Returns:
        A :class:`~harvest.pipeline.BuildSummary`.

    Raises:
        ConfigError: the config is invalid, names a missing file, or the output folder belongs
            to another config.
    """
    if not isinstance(config, BuildConfig):
        config = load_build_config(Path(config), overrides)
    return run_build(
        config,
        progress=Progress.of(progress),
        demo_world_env=demo_world_env,
        ee_project_env=ee_project_env,
    )
