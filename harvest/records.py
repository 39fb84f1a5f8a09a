"""Records that cross stages: a chip's record, failure groups and a chip run's summary.

A :class:`ChipRecord` is made by the fetch stage for every chip (kept, rejected by QA or
failed), rewritten by ``harvest qa``, stored as the chip's status file (the resume point,
:mod:`harvest.store`) and turned into one manifest row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harvest.errors import StoreError
from harvest.qa import QaResult, Reason


class ChipStatus(StrEnum):
    """A chip's status: kept (in the dataset), rejected by QA (with reasons), failed (an error).

    The values are the strings status files and manifests hold.
    """

    KEPT = "kept"
    REJECTED = "rejected"
    FAILED = "failed"


Metric = float | int | str | bool | None
"""One QA metric value (a manifest cell)."""

_TIMINGS = ("seconds_read_lr", "seconds_read_hr", "seconds_read", "seconds_qa", "seconds_write")


def qa_metrics(qa: QaResult) -> dict[str, Metric]:
    """A QA result's metrics as a record holds them (the decision is stored beside them)."""
    row: dict[str, Metric] = dict(qa.as_row())
    row.pop("kept", None)
    row.pop("reasons", None)
    return row


@dataclass(frozen=True)
class ChipRecord:
    """What happened to one chip, from fetch through QA to the manifest.

    Attributes:
        roi_id: The ROI (and chip folder name).
        status: Kept, rejected or failed.
        split: ``"train"`` or ``"test"``.
        lr_id: Item id of the LR scene (``s2_id`` in SEN2NAIP's files).
        hr_id: Item id of the HR scene (``naip_id`` in SEN2NAIP's files).
        epsg: CRS of the chip grid.
        dt_hours: HR time minus LR time, in hours.
        footprint_wkt: The chip footprint in lon/lat (WKT).
        reasons: Why QA rejected it (empty when kept or failed).
        error: The error of a failed chip (one line, at most 500 characters).
        error_kind: The error's class name (groups failures in the run summary).
        folder: The chip folder relative to the dataset folder (None when failed).
        metrics: The QA metrics (:func:`qa_metrics`; empty when failed).
        checksums: SHA-256 of each file of the chip folder, by file name.
        seconds: Time spent per step (``seconds_read_lr``, ``seconds_read``, ...).
        started_at: When the fetch of the chip started (ISO 8601, UTC).
        finished_at: When it finished.
    """

    roi_id: str
    status: ChipStatus
    split: str | None = None
    lr_id: str | None = None
    hr_id: str | None = None
    epsg: int | None = None
    dt_hours: float | None = None
    footprint_wkt: str | None = None
    reasons: tuple[Reason, ...] = ()
    error: str | None = None
    error_kind: str | None = None
    folder: str | None = None
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    checksums: Mapping[str, str] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        """Whether QA decided on the chip (kept or rejected): a resumed run skips it."""
        return self.status in (ChipStatus.KEPT, ChipStatus.REJECTED)

    def to_json(self) -> dict[str, Any]:
        """The status file's content (the keys SEN2NAIP-era status files have)."""
        out: dict[str, Any] = {
            "roi_id": self.roi_id,
            "status": self.status.value,
            "split": self.split,
            "s2_id": self.lr_id,
            "naip_id": self.hr_id,
            "reasons": ";".join(self.reasons),
            "error": self.error,
            "folder": self.folder,
        }
        optional: dict[str, Any] = {
            "epsg": self.epsg,
            "dt_hours": self.dt_hours,
            "footprint_wkt": self.footprint_wkt,
            "error_kind": self.error_kind,
            "qa": dict(self.metrics) if self.status is not ChipStatus.FAILED else None,
            "sha256": dict(self.checksums) if self.checksums else None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update({k: v for k, v in self.seconds.items() if k in _TIMINGS})
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "status file") -> ChipRecord:
        """Read a status file's content back (older files without some keys included).

        Raises:
            StoreError: the status or a reason is not one harvest writes.
        """
        try:
            status = ChipStatus(str(data.get("status")))
            reasons = tuple(Reason(r) for r in str(data.get("reasons") or "").split(";") if r)
        except ValueError as exc:
            raise StoreError(
                f"{where}: {exc}: harvest did not write it; delete it and run again"
            ) from None
        return cls(
            roi_id=str(data.get("roi_id")),
            status=status,
            split=data.get("split"),
            lr_id=data.get("s2_id"),
            hr_id=data.get("naip_id"),
            epsg=data.get("epsg"),
            dt_hours=data.get("dt_hours"),
            footprint_wkt=data.get("footprint_wkt"),
            reasons=reasons,
            error=data.get("error"),
            error_kind=data.get("error_kind"),
            folder=data.get("folder"),
            metrics=dict(data.get("qa") or {}),
            checksums=dict(data.get("sha256") or {}),
            seconds={k: float(data[k]) for k in _TIMINGS if data.get(k) is not None},
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )


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


def failure_kinds(records: Mapping[str, ChipRecord]) -> tuple[FailureKind, ...]:
    """Failed chips grouped by error kind, most frequent first (ties by name)."""
    groups: dict[str, list[str]] = {}
    for roi_id in sorted(records):
        rec = records[roi_id]
        if rec.status is not ChipStatus.FAILED:
            continue
        error = rec.error or ""
        # Status files written before error_kind existed: the kind prefixes the error.
        kind = rec.error_kind or error.split(":", 1)[0] or "unknown"
        groups.setdefault(kind, []).append(roi_id)
    return tuple(
        FailureKind(kind, len(ids), ids[0], records[ids[0]].error or "")
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
