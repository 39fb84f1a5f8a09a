"""`harvest export DATASET --format taco -o FILE`, read back with tacoreader."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
TACO_PYTHON = REPO / ".venv-taco" / "bin" / "python"
# Run by tacoreader's own environment (duckdb<2): every sample, its metadata and its files.
READ_BACK = """
import json, os, sys
import tacoreader
ds = tacoreader.load(sys.argv[1])
samples = ds.data.to_arrow().to_pylist()
children = [ds.read(i).to_arrow().to_pylist() for i in range(len(samples))]
print(json.dumps({"id": ds.id, "version": ds.version, "licenses": ds.licenses,
                  "samples": samples, "children": children}, default=str))
sys.stdout.flush()
# The reader's native threads (DuckDB, obstore) sometimes abort at interpreter exit
# ("terminate called without an active exception", once in a few runs): its work is done.
os._exit(0)
"""


def export(dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", "export", str(dataset), "--format", "taco",
         "-o", str(out), *extra],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def read_back(path: Path) -> dict:
    if not TACO_PYTHON.exists():
        pytest.fail("the TACO reader is not installed: run tests/integration/setup_taco_reader.sh")
    res = subprocess.run(
        [str(TACO_PYTHON), "-c", READ_BACK, str(path)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def subfile(vsi: str) -> tuple[int, int, Path]:
    """``/vsisubfile/OFFSET_SIZE,PATH`` -> offset, size, path."""
    spec, path = vsi.removeprefix("/vsisubfile/").split(",", 1)
    offset, size = (int(v) for v in spec.split("_"))
    return offset, size, Path(path)


@pytest.mark.parametrize("product", ["cross-sensor", "synthetic"])
def test_export_reads_back_with_tacoreader(demo_build: Path, tmp_path: Path, product: str) -> None:
    out = tmp_path / f"{product}.tacozip"
    res = export(demo_build, out, "--product", product)
    assert res.returncode == 0, res.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    back = read_back(out)
    record = json.loads((demo_build / "dataset.json").read_text())
    assert back["version"] == record["version"] and back["licenses"] == ["various"]

    manifest = gpd.read_parquet(demo_build / "manifest.parquet").set_index("roi_id")
    if product == "cross-sensor":
        folders = sorted(p for p in (demo_build / "cross-sensor").iterdir() if p.is_dir())
        ids = [p.name for p in folders]
    else:
        folders = sorted(p for p in (demo_build / "synthetic").glob("*/*") if p.is_dir())
        ids = [f"{p.parent.name}-{p.name}" for p in folders]
    assert [s["id"] for s in back["samples"]] == ids
    for sample, folder, children in zip(back["samples"], folders, back["children"], strict=True):
        roi = sample["roi_id"]
        assert sample["split"] == manifest.loc[roi, "split"]
        assert sample["qa1_px"] == pytest.approx(manifest.loc[roi, "qa1_px"])
        files = sorted(p for p in folder.glob("*.tif"))
        assert [c["id"] for c in children] == [p.stem.lower() for p in files]
        for child, path in zip(children, files, strict=True):
            offset, size, container = subfile(child["internal:gdal_vsi"])
            with container.open("rb") as f:
                f.seek(offset)
                data = f.read(size)
            assert hashlib.sha256(data).digest() == hashlib.sha256(path.read_bytes()).digest()
            with rasterio.open(child["internal:gdal_vsi"]) as a, rasterio.open(path) as b:
                np.testing.assert_array_equal(a.read(), b.read())


def test_export_errors_are_one_line(demo_build: Path, tmp_path: Path) -> None:
    for args, expected in (
        (["--product", "kept"], "has no kept/ folder"),
        (["--format", "zarr"], "--format 'zarr' is not one of taco"),
    ):
        res = export(demo_build, tmp_path / "x.tacozip", *args)
        assert res.returncode == 1 and expected in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    res = export(demo_build, tmp_path / "x.txt")
    assert res.returncode == 1 and "ends in .tacozip" in res.stderr
    assert not list(tmp_path.iterdir())
