"""What the fetch and qa stages share: QA as the recipe says, progress, manifest, summary."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

from harvest.progress import Progress
from harvest.qa import QaResult, QaThresholds, evaluate_groups
from harvest.recipes import Recipe, Role
from harvest.records import ChipRecord, ChipStatus, FetchSummary, failure_kinds
from harvest.store import load_records, write_manifest
from harvest.writers import ChipData, ChipWriter


def evaluate(chip: ChipData, recipe: Recipe, thresholds: QaThresholds) -> QaResult:
    """QA of one chip with the recipe's checks and band correspondence."""
    return evaluate_groups(
        [g.as_qa() for g in chip.of_role(Role.LR)],
        [g.as_qa() for g in chip.of_role(Role.HR)],
        checks=frozenset(c.value for c in recipe.qa.checks),
        correspondence=recipe.qa.correspondence,
        scl=chip.scl,
        scl_role=chip.scl_role.value,
        thresholds=thresholds,
    )


class ChipProgress:
    """The fetch / QA progress bar: chips/s and kept/rejected/failed counts (or nothing)."""

    def __init__(self, progress: Progress, total: int, label: str) -> None:
        self.counts = dict.fromkeys(ChipStatus, 0)
        self.started = time.perf_counter()
        self.bar = progress.bar(label, total)

    def update(self, status: ChipStatus) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.bar.enabled:
            return
        n = sum(self.counts.values())
        rate = n / max(time.perf_counter() - self.started, 1e-9)
        counts = " ".join(f"{k.value} {v}" for k, v in self.counts.items())
        self.bar.advance(info=f"{rate:.1f} chips/s  {counts}")

    def close(self) -> None:
        self.bar.close()


def write_layout_manifest(
    out: Path, records: Mapping[str, ChipRecord], writer: ChipWriter, recipe: Recipe
) -> Path:
    """The manifest of a folder in ``writer``'s layout (its id and checksum columns)."""
    return write_manifest(out, records, id_columns=writer.id_columns, files=writer.files(recipe))


def finish_run(
    out: Path,
    writer: ChipWriter,
    recipe: Recipe,
    n_total: int,
    n_before: int,
    n_run: int,
    started: float,
) -> FetchSummary:
    """Rebuild the manifest from the status files and sum the folder up."""
    records = load_records(out)
    manifest = write_layout_manifest(out, records, writer, recipe)
    counts = dict.fromkeys(ChipStatus, 0)
    for rec in records.values():
        counts[rec.status] += 1
    seconds = time.perf_counter() - started
    return FetchSummary(
        out_dir=out,
        manifest=manifest,
        n_total=n_total,
        n_done_before=n_before,
        n_kept=counts[ChipStatus.KEPT],
        n_rejected=counts[ChipStatus.REJECTED],
        n_failed=counts[ChipStatus.FAILED],
        seconds=seconds,
        chips_per_s=n_run / seconds if seconds > 0 else math.nan,
        failures=failure_kinds(records),
    )
