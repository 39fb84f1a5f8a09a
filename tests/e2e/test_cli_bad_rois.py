"""An ROI table with impossible coordinates is a one-line error, not a GEOS traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_cli_fetch import harvest
from test_cli_unsafe_ids import one_line_error, tree

from harvest.geoio import write_points_geoparquet


@pytest.mark.parametrize(
    ("lon", "lat", "shown"),
    [(200.0, 45.0, "lon 200, lat 45"), (10.0, -95.0, "lon 10, lat -95"), (np.nan, 1.0, "nan")],
)
def test_search_refuses_rois_off_the_globe(
    demo_world: Path, tmp_path: Path, lon: float, lat: float, shown: str
) -> None:
    ids = ["ROI_000001", "ROI_000002"]
    write_points_geoparquet(
        tmp_path / "rois.parquet", np.array([10.0, lon]), np.array([45.0, lat]), {"roi_id": ids}
    )
    before = tree(tmp_path)
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", str(demo_world),
        "-o", "pairs.parquet", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(proc)
    assert "rois.parquet row 2 (roi_id ROI_000002)" in line
    assert shown in line and "-180..180" in line
    assert tree(tmp_path) == before
