"""``harvest qa``: decide again on the chips a fetch wrote, with other thresholds.

No fetching: each chip folder is read back, checked with :func:`harvest.qa.evaluate_nested`,
moved between ``cross-sensor/`` and ``rejected/``, its ``metadata.json`` and status updated; the
manifest is rebuilt at the end. Holds the folder's lock like the fetch stage.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from harvest.lock import dataset_lock_path, folder_lock
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import QaThresholds, evaluate_nested
from harvest.records import FAILED, KEPT, REJECTED, FetchSummary
from harvest.stages._chips import ChipProgress, finish_run, qa_columns
from harvest.store import (
    LR_FILE,
    META_FILE,
    SCL_FILE,
    clean_temporaries,
    iter_chip_folders,
    load_statuses,
    move_chip_folder,
    read_chip_folder,
    sha256_file,
    write_status,
)


def run(
    out_dir: str | Path,
    thresholds: QaThresholds | None = None,
    *,
    progress: Progress | bool = NO_PROGRESS,
) -> FetchSummary:
    """Re-run QA on the written chips with other thresholds, without fetching again.

    Each chip folder is read back, checked, moved between ``cross-sensor/`` and ``rejected/``
    as the new decision says, its metadata.json updated (QA_1, QA_2, shift) and its status
    rewritten; failed chips keep their status. The manifest is rebuilt at the end.

    Raises:
        StoreError: ``out_dir`` holds no fetched dataset.
        FolderLockedError: another run (fetch, qa, degrade) is using ``out_dir``.
        DiskWriteError: the disk is full or failing (the run stops there).
    """
    from harvest.errors import StoreError
    from harvest.store import RUN_FILE

    started = time.perf_counter()
    out = Path(out_dir)
    # run.json, not .harvest/: a folder that was only locked (by degrade) has .harvest/ too.
    if not (out / RUN_FILE).is_file():
        raise StoreError(f"{out} is not a fetched dataset folder: run 'harvest fetch' first")
    with folder_lock(out, dataset_lock_path(out)):
        return _run_locked(out, thresholds, progress=Progress.of(progress), started=started)


def _run_locked(
    out: Path, thresholds: QaThresholds | None, *, progress: Progress, started: float
) -> FetchSummary:
    """:func:`run` once the folder's lock is held."""
    from harvest.store import atomic_write_bytes, json_bytes

    clean_temporaries(out)
    t = thresholds or QaThresholds()
    statuses = load_statuses(out)
    chips = list(iter_chip_folders(out))
    bar = ChipProgress(progress, len(chips), "qa")
    try:
        for roi_id, folder, _was_kept in chips:
            chip = read_chip_folder(folder)
            meta = chip.metadata
            factor = round(chip.lr_grid.gsd_m / chip.hr_grid.gsd_m)
            qa = evaluate_nested(
                chip.lr,
                chip.hr,
                chip.scl,
                factor,
                chip.lr_grid.gsd_m,
                meta.get("hr_saturation"),
                t,
            )
            s = qa.shift
            if not meta.get("shift_corrected"):
                meta.update(
                    shift_dx_px=s.dx_px,
                    shift_dy_px=s.dy_px,
                    shift_east_m=s.east_m,
                    shift_north_m=s.north_m,
                    shift_method=s.method,
                    QA_1=qa.qa1_px,
                )
            meta["QA_2"] = qa.qa2_deg
            meta_bytes = json_bytes(meta)
            atomic_write_bytes(folder / META_FILE, meta_bytes)
            final = move_chip_folder(out, roi_id, qa.kept)
            st = dict(statuses.get(roi_id, {"roi_id": roi_id}))
            # A run killed between the folder and its status file: take the facts from metadata.
            st.setdefault("split", meta.get("split"))
            st.setdefault("s2_id", meta.get("s2_id"))
            st.setdefault("naip_id", meta.get("naip_id"))
            st.setdefault("epsg", meta.get("proj:epsg"))
            st.setdefault("dt_hours", meta.get("dt_hours"))
            sums = dict(st.get("sha256") or {})
            sums[META_FILE] = hashlib.sha256(meta_bytes).hexdigest()
            for name in (LR_FILE, SCL_FILE):
                if name not in sums and (final / name).exists():
                    sums[name] = sha256_file(final / name)
            st.update(
                status=KEPT if qa.kept else REJECTED,
                reasons=";".join(qa.reasons),
                error=None,
                folder=str(final.relative_to(out)),
                qa=qa_columns(qa),
                sha256=sums,
            )
            write_status(out, roi_id, st)
            bar.update(str(st["status"]))
    finally:
        bar.close()
    n_failed = sum(1 for st in load_statuses(out).values() if st.get("status") == FAILED)
    return finish_run(out, len(chips) + n_failed, 0, len(chips), started)
