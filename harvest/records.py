"""Records that cross stages: chip statuses, failure groups and a chip run's summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEPT, REJECTED, FAILED = "kept", "rejected", "failed"
"""A chip's status: kept (in the dataset), rejected by QA (with reasons), failed (an error)."""


@dataclass(frozen=True)
class FailureKind:
    """The failed chips of one kind of error (the exception's class), with one example.

    Attributes:
        kind: The error's class name (``AssetReadError``, ``KilledWorker``, ...).
        count: Failed chips with that error.
        example_roi: The first of them (by roi_id).
        example_error: Its recorded error message.
    """

    kind: str
    count: int
    example_roi: str
    example_error: str


def failure_kinds(statuses: Mapping[str, Mapping[str, Any]]) -> tuple[FailureKind, ...]:
    """Failed chips grouped by error kind, most frequent first (ties by name)."""
    groups: dict[str, list[str]] = {}
    for roi_id in sorted(statuses):
        st = statuses[roi_id]
        if st.get("status") != FAILED:
            continue
        error = str(st.get("error") or "")
        # Status files written before error_kind existed: the kind prefixes the error.
        kind = str(st.get("error_kind") or error.split(":", 1)[0] or "unknown")
        groups.setdefault(kind, []).append(roi_id)
    return tuple(
        FailureKind(kind, len(ids), ids[0], str(statuses[ids[0]].get("error") or ""))
        for kind, ids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )


@dataclass(frozen=True)
class FetchSummary:
    """What a fetch (or QA) run did.

    Attributes:
        out_dir: The dataset folder.
        manifest: The manifest written.
        n_total: Chips in the input (or folder, for QA).
        n_done_before: Chips skipped because an earlier run finished them.
        n_kept: Kept chips in the folder after the run.
        n_rejected: Rejected chips after the run.
        n_failed: Failed chips after the run.
        seconds: Wall time of the run.
        chips_per_s: Chips processed by this run per second.
        failures: The failed chips after the run, per error kind (:func:`failure_kinds`).
    """

    out_dir: Path
    manifest: Path
    n_total: int
    n_done_before: int
    n_kept: int
    n_rejected: int
    n_failed: int
    seconds: float
    chips_per_s: float
    failures: tuple[FailureKind, ...] = ()

    def failure_lines(self, width: int = 160) -> list[str]:
        """The failed chips summed up: a heading and one line per error kind (none if none).

        Args:
            width: Longest line; the example error is shortened to fit.
        """
        if not self.failures:
            return []
        n = sum(f.count for f in self.failures)
        lines = [
            f"warning: {n} chip{'' if n == 1 else 's'} failed; the error column of "
            f"{self.manifest} has each one (rerun with -v to see them as they fail; failed "
            "chips are retried):"
        ]
        for f in self.failures:
            line = f"  {f.count} x {f.kind}, e.g. {f.example_roi}: {f.example_error}"
            lines.append(line if len(line) <= width else line[: width - 3] + "...")
        return lines
