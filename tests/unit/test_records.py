import dataclasses
import json
from pathlib import Path

import pytest

from harvest.errors import StoreError
from harvest.qa import Reason
from harvest.records import ChipRecord, ChipStatus, failure_kinds
from harvest.store import load_record, load_records, write_manifest, write_record, write_status

KEPT = ChipRecord(
    roi_id="ROI_000001",
    status=ChipStatus.KEPT,
    split="train",
    lr_id="S2A_X",
    hr_id="m_3808_20210701",
    epsg=32615,
    dt_hours=-3.5,
    footprint_wkt="POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))",
    folder="cross-sensor/ROI_000001",
    metrics={"qa1_px": 0.2, "qa2_deg": 1.1, "shift_method": "phase"},
    checksums={"LR.tif": "ab", "metadata.json": "cd"},
    seconds={"seconds_read": 0.5, "seconds_qa": 0.1},
    started_at="2026-12-02T10:00:00+00:00",
    finished_at="2026-12-02T10:00:01+00:00",
)


def test_status_values_are_the_strings_files_hold() -> None:
    assert [s.value for s in ChipStatus] == ["kept", "rejected", "failed"]
    assert ChipStatus.KEPT == "kept"


def test_a_record_is_frozen_and_round_trips_through_its_status_file(tmp_path: Path) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KEPT.status = ChipStatus.FAILED  # type: ignore[misc]
    rejected = dataclasses.replace(
        KEPT, status=ChipStatus.REJECTED, reasons=(Reason.CLOUD, Reason.BLANK)
    )
    for rec in (KEPT, rejected):
        write_record(tmp_path, rec)
        assert load_record(tmp_path, rec.roi_id) == rec
    data = json.loads((tmp_path / ".harvest/status/ROI_000001.json").read_text())
    # The keys SEN2NAIP-era status files have, so older folders still resume.
    assert data["status"] == "rejected" and data["reasons"] == "cloud;blank"
    assert data["s2_id"] == "S2A_X" and data["naip_id"] == "m_3808_20210701"
    assert data["qa"]["qa1_px"] == 0.2 and data["sha256"]["LR.tif"] == "ab"
    assert data["seconds_read"] == 0.5 and "error_kind" not in data


def test_failed_records_are_grouped_by_error_kind() -> None:
    def failed(roi: str, kind: str | None, error: str) -> ChipRecord:
        return ChipRecord(roi, ChipStatus.FAILED, error=error, error_kind=kind)

    records = {
        "ROI_1": failed("ROI_1", "AssetReadError", "AssetReadError: a.tif is truncated"),
        "ROI_2": failed("ROI_2", None, "KilledWorker: gone"),  # written before error_kind
        "ROI_3": failed("ROI_3", "AssetReadError", "AssetReadError: b.tif"),
        "ROI_4": KEPT,
    }
    kinds = failure_kinds(records)
    assert [(k.kind, k.count, k.example_roi) for k in kinds] == [
        ("AssetReadError", 2, "ROI_1"),
        ("KilledWorker", 1, "ROI_2"),
    ]


def test_a_status_harvest_cannot_read_makes_the_chip_redone(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="'exploded' is not a valid ChipStatus"):
        ChipRecord.from_json({"roi_id": "ROI_1", "status": "exploded"})
    write_record(tmp_path, KEPT)
    write_status(tmp_path, "ROI_000002", {"roi_id": "ROI_000002", "status": "exploded"})
    write_status(tmp_path, "ROI_000003", {"roi_id": "ROI_000003", "status": "kept", "reasons": "x"})
    assert list(load_records(tmp_path)) == ["ROI_000001"]
    assert load_record(tmp_path, "ROI_000002") is None


def test_manifest_columns_follow_the_layout(tmp_path: Path) -> None:
    import geopandas as gpd

    records = {KEPT.roi_id: KEPT}
    path = write_manifest(tmp_path, records)
    m = gpd.read_parquet(path)
    assert list(m.columns[:10]) == [
        "roi_id", "status", "reasons", "error", "split", "s2_id", "naip_id", "epsg", "folder",
        "finished_at",
    ]  # fmt: skip
    assert m.loc[0, "sha256_lr"] == "ab" and m.loc[0, "sha256_hr"] is None
    generic = gpd.read_parquet(
        write_manifest(
            tmp_path, records, id_columns=("lr_id", "hr_id"), files=("lr_10m.tif", "metadata.json")
        )
    )
    assert generic.loc[0, "lr_id"] == "S2A_X" and "s2_id" not in generic.columns
    assert "sha256_lr_10m" in generic.columns and "sha256_lr" not in generic.columns
