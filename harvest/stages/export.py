"""``harvest export DATASET --format taco -o FILE``: a dataset in another container format.

TACO only for now (:mod:`harvest.writers.taco`, through ``tacotoolbox``, the ``taco`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

from harvest.errors import ConfigError, InputFileError
from harvest.progress import NO_PROGRESS, Progress
from harvest.writers.taco import TacoExport, write_taco

FORMATS = ("taco",)


def run(
    dataset: Path,
    output: Path,
    *,
    format: str = "taco",
    product: str | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> TacoExport:
    """Export the kept samples of ``dataset``.

    Args:
        dataset: A dataset folder.
        output: The file to write (``.tacozip``).
        format: ``taco``.
        product: Which layout folder (``cross-sensor``, ``kept``, ``synthetic``); default the
            first present.
        progress: How to show progress (a bar over the samples).

    Raises:
        ConfigError: an unknown format, or tacotoolbox missing.
        InputFileError: not a dataset folder, or nothing to export.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is not one of {', '.join(FORMATS)}")
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputFileError(f"{dataset} is not a folder: give a dataset folder")
    record_path = dataset / "dataset.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    return write_taco(dataset, Path(output), record, product, progress=Progress.of(progress))
