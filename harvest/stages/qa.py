"""``harvest qa``: decide again on the chips a fetch wrote, with other thresholds.

No fetching: each chip folder is read back by the layout's writer (the recipe the folder was
fetched with is recorded in its ``run.json``), checked as that recipe says, moved between the
kept folder (``cross-sensor/`` or ``kept/``) and ``rejected/``, its ``metadata.json`` and status
updated; the manifest is rebuilt at the end. Holds the folder's lock like the fetch stage.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from harvest.diskio import atomic_write_bytes
from harvest.lock import dataset_lock_path, folder_lock
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import QaThresholds
from harvest.recipes import Recipe, load_recipe
from harvest.records import ChipRecord, ChipStatus, FetchSummary, qa_metrics
from harvest.stages._chips import ChipProgress, evaluate, finish_run
from harvest.store import (
    META_FILE,
    RUN_FILE,
    clean_temporaries,
    iter_chip_folders,
    json_bytes,
    load_records,
    move_chip_folder,
    read_run_file,
    sha256_file,
    write_record,
)
from harvest.writers import writer_for


def run(
    out_dir: str | Path,
    thresholds: QaThresholds | None = None,
    *,
    progress: Progress | bool = NO_PROGRESS,
) -> FetchSummary:
    """Re-run QA on the written chips with other thresholds, without fetching again.

    Each chip folder is read back, checked, moved between the kept folder (``cross-sensor/``
    for SEN2NAIP, ``kept/`` for the generic layout) and ``rejected/`` as the new decision says,
    its metadata.json updated (SEN2NAIP: QA_1, QA_2, shift; generic: the QA block) and its
    status rewritten; failed chips keep their status. The manifest is rebuilt at the end.

    Raises:
        StoreError: ``out_dir`` holds no fetched dataset.
        FolderLockedError: another run (fetch, qa, degrade) is using ``out_dir``.
        DiskWriteError: the disk is full or failing (the run stops there).
    """
    from harvest.errors import StoreError

    started = time.perf_counter()
    out = Path(out_dir)
    # run.json, not .harvest/: a folder that was only locked (by degrade) has .harvest/ too.
    if not (out / RUN_FILE).is_file():
        raise StoreError(f"{out} is not a fetched dataset folder: run 'harvest fetch' first")
    with folder_lock(out, dataset_lock_path(out)):
        return _run_locked(out, thresholds, progress=Progress.of(progress), started=started)


def folder_recipe(out: Path) -> Recipe:
    """The recipe a fetched folder was made with (recorded in its ``run.json``).

    Folders fetched before ``run.json`` held the whole recipe name a shipped one.

    Raises:
        StoreError: ``run.json`` names no usable recipe.
    """
    from harvest.errors import ConfigError, StoreError

    run_info = read_run_file(out)
    spec = run_info.get("recipe_spec")
    try:
        if isinstance(spec, dict):
            return Recipe.model_validate(spec)
        return load_recipe(str(run_info.get("recipe")))
    except (ValidationError, ConfigError) as exc:
        raise StoreError(
            f"{out / RUN_FILE} names no recipe this harvest can read "
            f"({' '.join(str(exc).split())[:200]}): fetch into a new folder"
        ) from None


def _run_locked(
    out: Path, thresholds: QaThresholds | None, *, progress: Progress, started: float
) -> FetchSummary:
    """:func:`run` once the folder's lock is held."""
    clean_temporaries(out)
    t = thresholds or QaThresholds()
    recipe = folder_recipe(out)
    writer = writer_for(recipe.writer)
    records = load_records(out)
    chips = list(iter_chip_folders(out, kept_dir=writer.kept_dir))
    bar = ChipProgress(progress, len(chips), "qa")
    try:
        for roi_id, folder, _was_kept in chips:
            chip, meta = writer.read(folder, recipe)
            qa = evaluate(chip, recipe, t)
            meta_bytes = json_bytes(writer.requalified(meta, qa))
            atomic_write_bytes(folder / META_FILE, meta_bytes)
            final = move_chip_folder(out, roi_id, qa.kept, kept_dir=writer.kept_dir)
            # A run killed between the folder and its status file: take the facts from metadata.
            facts = writer.facts(meta)
            prev = records.get(roi_id) or ChipRecord(roi_id, ChipStatus.FAILED)
            prev = replace(prev, **{k: v for k, v in facts.items() if getattr(prev, k) is None})
            sums = dict(prev.checksums)
            sums[META_FILE] = hashlib.sha256(meta_bytes).hexdigest()
            for name in writer.files(recipe):
                if name not in sums and (final / name).exists():
                    sums[name] = sha256_file(final / name)
            record = replace(
                prev,
                status=ChipStatus.KEPT if qa.kept else ChipStatus.REJECTED,
                reasons=qa.reasons,
                error=None,
                folder=str(final.relative_to(out)),
                metrics=qa_metrics(qa),
                checksums=sums,
            )
            write_record(out, record)
            bar.update(record.status)
    finally:
        bar.close()
    n_failed = sum(r.status is ChipStatus.FAILED for r in load_records(out).values())
    return finish_run(out, writer, recipe, len(chips) + n_failed, 0, len(chips), started)
