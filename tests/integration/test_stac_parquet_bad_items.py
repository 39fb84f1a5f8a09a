"""One broken item in a stac-geoparquet snapshot is skipped with a warning, not fatal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import stac_geoparquet.arrow as sga

from harvest.backends.profiles import load_profile
from harvest.backends.stac_parquet.catalog import StacParquetCatalog
from harvest.errors import CatalogError


def _clean_table(stac_data: Any) -> pa.Table:
    table = sga.parse_stac_items_to_arrow([dict(i) for i in stac_data.items])
    return table.read_all() if hasattr(table, "read_all") else table


def _set_row(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    col = table.column(column).combine_chunks()
    values = col.to_pylist()
    values[row] = value
    return table.set_column(
        table.schema.get_field_index(column), table.schema.field(column), pa.array(values, col.type)
    )


def test_broken_items_are_skipped_named_and_counted(
    stac_data: Any, cases: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prof = load_profile("planetary-computer")
    table = _clean_table(stac_data)
    clean = tmp_path / "clean.parquet"
    pq.write_table(table, clean)
    request = cases["naip-and-s2-cloud40"].request()
    good = StacParquetCatalog(clean, prof).search(request)
    assert len(good.scenes) >= 3 and good.stats.n_invalid == 0
    victims = [good.scenes[0].item_id, good.scenes[-1].item_id]
    ids = table.column("id").to_pylist()
    wkb_row, bbox_row = ids.index(victims[0]), ids.index(victims[1])

    broken = _set_row(table, "geometry", wkb_row, b"\x01\x03\x00\x00garbage")
    bbox = broken.column("bbox").combine_chunks().to_pylist()
    bbox[bbox_row] = {**bbox[bbox_row], "xmin": float("nan")}
    broken = broken.set_column(
        broken.schema.get_field_index("bbox"),
        broken.schema.field("bbox"),
        pa.array(bbox, broken.schema.field("bbox").type),
    )
    assert pc.is_nan(broken.column("bbox").combine_chunks().field("xmin")).to_pylist()[bbox_row]
    path = tmp_path / "broken.parquet"
    pq.write_table(broken, path)

    with caplog.at_level(logging.WARNING, logger="harvest.backends.stac_parquet.catalog"):
        result = StacParquetCatalog(path, prof).search(request)
    assert {s.item_id for s in result.scenes} == {s.item_id for s in good.scenes} - set(victims)
    assert result.stats.n_invalid == 2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"skipping item {victims[0]}" in warned and "WKB" in warned
    assert f"skipping item {victims[1]}" in warned and "bbox" in warned


def test_a_wholly_unreadable_snapshot_is_still_an_error(tmp_path: Path, cases: Any) -> None:
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"PAR1" + np.random.default_rng(0).bytes(200) + b"PAR1")
    with pytest.raises(CatalogError) as info:
        StacParquetCatalog(path, load_profile("planetary-computer")).search(
            cases["naip-and-s2-cloud40"].request()
        )
    assert "\n" not in str(info.value)
