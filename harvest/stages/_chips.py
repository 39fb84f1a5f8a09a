"""What the fetch and qa stages share: their progress bar and the end-of-run summary."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from harvest.progress import Progress
from harvest.qa import QaResult
from harvest.records import FAILED, KEPT, REJECTED, FetchSummary, failure_kinds
from harvest.store import load_statuses, write_manifest


class ChipProgress:
    """The fetch / QA progress bar: chips/s and kept/rejected/failed counts (or nothing)."""

    def __init__(self, progress: Progress, total: int, label: str) -> None:
        self.counts = {KEPT: 0, REJECTED: 0, FAILED: 0}
        self.started = time.perf_counter()
        self.bar = progress.bar(label, total)

    def update(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.bar.enabled:
            return
        n = sum(self.counts.values())
        rate = n / max(time.perf_counter() - self.started, 1e-9)
        counts = " ".join(f"{k} {v}" for k, v in self.counts.items())
        self.bar.advance(info=f"{rate:.1f} chips/s  {counts}")

    def close(self) -> None:
        self.bar.close()


def qa_columns(qa: QaResult) -> dict[str, Any]:
    """A QA result's metrics for a status file (the decision is stored beside them)."""
    row = qa.as_row()
    row.pop("kept", None)
    row.pop("reasons", None)
    return dict(row)


def finish_run(out: Path, n_total: int, n_before: int, n_run: int, started: float) -> FetchSummary:
    """Rebuild the manifest from the status files and sum the folder up."""
    statuses = load_statuses(out)
    manifest = write_manifest(out, statuses)
    counts = {KEPT: 0, REJECTED: 0, FAILED: 0}
    for st in statuses.values():
        counts[str(st.get("status"))] = counts.get(str(st.get("status")), 0) + 1
    seconds = time.perf_counter() - started
    return FetchSummary(
        out_dir=out,
        manifest=manifest,
        n_total=n_total,
        n_done_before=n_before,
        n_kept=counts[KEPT],
        n_rejected=counts[REJECTED],
        n_failed=counts[FAILED],
        seconds=seconds,
        chips_per_s=n_run / seconds if seconds > 0 else math.nan,
        failures=failure_kinds(statuses),
    )
