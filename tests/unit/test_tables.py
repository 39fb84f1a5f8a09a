"""pairs.parquet and pairs.dropped.parquet: written atomically, read back field by field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
import shapely

from harvest.backends.base import AssetRef, SceneRef
from harvest.errors import InputFileError
from harvest.geoio import read_harvest_metadata
from harvest.pairing import DroppedRoi, DropReason, PairCandidate
from harvest.tables import (
    PAIRS_SCHEMA,
    PairRow,
    SearchMetadata,
    dropped_path,
    read_dropped,
    read_pairs,
    write_pairs,
)


def _scene(item_id: str, collection: str, when: datetime, cloud: float | None) -> SceneRef:
    return SceneRef(
        item_id=item_id,
        collection=collection,
        provider="demo",
        datetime=when,
        geometry=shapely.box(-93.6, 42.0, -93.5, 42.1),
        assets={
            "B04": AssetRef("/data/b04.tif", scale=1e-4, offset=-0.1, nodata=0.0, dtype="uint16"),
            "red": AssetRef("https://x.blob.core.windows.net/naip/a.tif", band_index=1),
        },
        cloud_cover_pct=cloud,
        epsg=32615,
        processing_baseline="04.00" if cloud is not None else None,
        mgrs_tile="15TVG" if cloud is not None else None,
        gsd_m=10.0,
    )


def _row(roi: str, rank: int) -> PairRow:
    lr = _scene(f"S2_{roi}_{rank}", "sentinel-2-l2a", datetime(2021, 7, 10, 16, tzinfo=UTC), 3.5)
    hr = _scene(f"naip_{roi}", "naip", datetime(2021, 7, 10, tzinfo=UTC), None)
    pair = PairCandidate(roi, lr, hr, -16.0 - rank, 100.0, 99.5, 3.5, 0.0, rank)
    return PairRow(
        roi_id=roi,
        lon_deg=-93.55,
        lat_deg=42.03,
        utm_epsg=32615,
        pair=pair,
        mgrs_tile="15TVG",
        chip_id="32615_453840_4653850",
        chip_epsg=32615,
        chip_transform=(10.0, 0.0, 453840.0, 0.0, -10.0, 4653850.0),
        chip_px=121,
    )


META = SearchMetadata(
    recipe="sen2naip",
    recipe_hash="abc",
    catalog="demo",
    provider="demo",
    start="2011-01-01",
    end="2026-11-22",
    n_requests=2,
    n_rois=3,
    all_candidates=True,
    harvest_version="0.0.0",
)


def test_pairs_round_trip_field_by_field(tmp_path: Path) -> None:
    rows = [_row("ROI_000001", 0), _row("ROI_000001", 1), _row("ROI_000002", 0)]
    dropped = [DroppedRoi("ROI_000003", DropReason.NO_HR_SCENE, 2, 0, "no NAIP")]
    out, other = write_pairs(tmp_path / "pairs.parquet", rows, dropped, META)
    assert other == tmp_path / "pairs.dropped.parquet" == dropped_path(out)
    table = read_pairs(out)
    assert table.rows == tuple(rows)
    assert table.metadata == META
    assert [r.roi_id for r in table.chosen()] == ["ROI_000001", "ROI_000002"]
    assert table.roi_ids == ("ROI_000001", "ROI_000002")
    assert read_dropped(out) == tuple(dropped) == read_dropped(other)
    # GeoParquet that geopandas reads: ROI points in EPSG:4326.
    frame = gpd.read_parquet(out)
    assert frame.crs.to_epsg() == 4326
    assert frame.geometry.x.tolist() == [-93.55] * 3
    meta = read_harvest_metadata(out)
    assert meta["stage"] == "search" and meta["recipe"] == "sen2naip" and meta["n_requests"] == 2
    assert not list(tmp_path.glob(".*tmp"))


def test_empty_tables_keep_their_schema(tmp_path: Path) -> None:
    out, _ = write_pairs(tmp_path / "p.parquet", [], [], META)
    assert pq.read_schema(out).names == PAIRS_SCHEMA.names
    assert read_pairs(out).rows == ()
    assert read_dropped(out) == ()


def test_bad_inputs_are_input_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        read_pairs(tmp_path / "missing.parquet")
    rois = tmp_path / "rois.parquet"
    gpd.GeoDataFrame({"roi_id": ["a"]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_parquet(
        rois
    )
    with pytest.raises(InputFileError, match="not a pairs table"):
        read_pairs(rois)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputFileError, match="cannot read"):
        read_pairs(tmp_path / "junk.parquet")
    with pytest.raises(InputFileError, match="is a folder"):
        write_pairs(tmp_path, [], [], META)
