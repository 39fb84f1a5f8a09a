import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import Polygon

HARVEST = str(Path(sys.executable).parent / "harvest")


def harvest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARVEST, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_sample_writes_geoparquet_and_is_reproducible(tmp_path: Path) -> None:
    args = ["sample", "--n", "2000", "--region", "conus", "--seed", "7", "--no-progress"]
    first = harvest(*args, "-o", "a.parquet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "wrote 2000 ROIs" in first.stdout
    again = harvest(*args, "-o", "b.parquet", cwd=tmp_path)
    other = harvest(*args[:-3], "--seed", "8", "--no-progress", "-o", "c.parquet", cwd=tmp_path)
    assert again.returncode == 0 and other.returncode == 0
    a = gpd.read_parquet(tmp_path / "a.parquet")
    b = gpd.read_parquet(tmp_path / "b.parquet")
    c = gpd.read_parquet(tmp_path / "c.parquet")
    assert a.crs.to_epsg() == 4326 and (a.geom_type == "Point").all()
    assert len(a) == 2000 and a["roi_id"].is_unique
    assert a["mgrs_tile"].str.match(r"^\d{2}[C-X][A-Z]{2}$").all()
    assert a["mgrs_tile"].str[:2].astype(int).add(32600).eq(a["utm_epsg"]).all()
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b))
    assert not a.geometry.x.isin(c.geometry.x).any()
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]


def test_exclude_continues_ids(tmp_path: Path) -> None:
    base = ["sample", "--min-distance-km", "25", "--no-progress"]
    assert harvest(*base, "--n", "100", "-o", "old.parquet", cwd=tmp_path).returncode == 0
    proc = harvest(
        *base,
        "--n",
        "50",
        "--seed",
        "1",
        "--exclude",
        "old.parquet",
        "-o",
        "new.parquet",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    new = gpd.read_parquet(tmp_path / "new.parquet")
    assert new["roi_id"].tolist()[0] == "ROI_000101" and new["roi_id"].tolist()[-1] == "ROI_000150"


def test_progress_bar_on_stderr(tmp_path: Path) -> None:
    proc = harvest("sample", "--n", "500", "--progress", "-o", "p.parquet", cwd=tmp_path)
    assert proc.returncode == 0
    assert "500/500" in proc.stderr


def test_impossible_n_is_one_line_exit_1(tmp_path: Path) -> None:
    proc = harvest("sample", "--n", "5000000", "-o", "x.parquet", cwd=tmp_path)
    line = assert_one_line_error(proc, 1)
    assert "at most about" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("atlantis", "unknown region"),
        ("missing.geojson", "not found"),
        ("bowtie.geojson", "invalid polygon"),
    ],
)
def test_bad_region_is_one_line_exit_1(tmp_path: Path, region: str, message: str) -> None:
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    (tmp_path / "bowtie.geojson").write_text(
        json.dumps({"type": "Feature", "properties": {}, "geometry": bowtie.__geo_interface__})
    )
    proc = harvest("sample", "--n", "10", "--region", region, "-o", "x.parquet", cwd=tmp_path)
    assert message in assert_one_line_error(proc, 1)
    assert not (tmp_path / "x.parquet").exists()


def test_missing_exclude_is_exit_1(tmp_path: Path) -> None:
    proc = harvest(
        "sample", "--n", "10", "--exclude", "nope.parquet", "-o", "x.parquet", cwd=tmp_path
    )
    assert "ROI table not found" in assert_one_line_error(proc, 1)


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--n", "0", "-o", "x.parquet"],
        ["sample", "-o", "x.parquet"],
        ["sample", "--n", "10"],
        ["sample", "--n", "10", "--min-distance-km", "0", "-o", "x.parquet"],
    ],
)
def test_bad_usage_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = harvest(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.parquet").exists()
