"""`harvest evaluate PRED REF [--mask M] [-o report.json]` as a user runs it.

GeoTIFFs written with rasterio and Zarr stores written with xarray; the report's values are
checked against :func:`harvest.metrics.evaluate_image` on the same arrays, so the command must
read bands, nodata, masks, band names and time steps right.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from harvest.metrics import evaluate_image

HARVEST = str(Path(sys.executable).parent / "harvest")
BANDS = ("B04", "B03", "B02", "B08")


def harvest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARVEST, *args, "--no-progress"], capture_output=True, text=True, timeout=120
    )


def _images(seed: int = 0, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = 0.05 + 0.4 * np.kron(rng.random((4, size // 8, size // 8)), np.ones((8, 8)))
    pred = ref + rng.normal(0, 0.01, ref.shape)
    return pred.astype(np.float32), ref.astype(np.float32)


def _tif(path: Path, data: np.ndarray, *, names: bool = True, x0: float = 500000.0,
         nodata: float | None = None) -> Path:  # fmt: skip
    profile = {
        "driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2],
        "count": data.shape[0], "dtype": str(data.dtype), "crs": "EPSG:32615",
        "transform": from_origin(x0, 4600000.0, 2.5, 2.5), "nodata": nodata,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if names:
            for i, name in enumerate(BANDS[: data.shape[0]], start=1):
                dst.set_band_description(i, name)
    return path


def test_two_geotiffs_give_the_benchmark_report_with_nodata_and_mask(tmp_path: Path) -> None:
    pred, ref = _images()
    ref[:, 3, 5] = -9999.0  # the reference's nodata
    mask = np.ones((1, 40, 40), np.uint8)
    mask[0, 20:, :] = 0
    p = _tif(tmp_path / "pred.tif", pred)
    r = _tif(tmp_path / "ref.tif", ref, nodata=-9999.0)
    m = _tif(tmp_path / "mask.tif", mask, names=False)
    out = tmp_path / "reports" / "report.json"
    res = harvest("evaluate", str(p), str(r), "--mask", str(m), "-o", str(out), "--ratio", "0.5")
    assert res.returncode == 0, res.stderr
    assert "NDVI" in res.stdout and "ERGAS" in res.stdout
    report = json.loads(out.read_text())
    assert report["bands"] == list(BANDS) and report["ndvi_bands"] == ["B04", "B08"]
    valid = (mask[0] != 0) & (ref[0] != -9999.0)
    want = evaluate_image(pred, np.where(ref == -9999.0, np.nan, ref), valid, BANDS, red=0,
                          nir=3, ratio=0.5).to_dict()  # fmt: skip
    assert report["scores"]["all"]["pixels"] == int(valid.sum()) == 20 * 40 - 1
    for stratum in ("all", "low_gradient_50", "high_gradient_25"):
        got = report["scores"][stratum]
        assert got["pixels"] == want[stratum]["pixels"]
        for band in BANDS:
            for metric, value in want[stratum]["bands"][band].items():
                # None: undefined there (flat fields have no gradient to correlate).
                expected = value if value is None else pytest.approx(value, rel=1e-6)
                assert got["bands"][band][metric] == expected, (stratum, band, metric)
        assert got["ndvi"]["ce90"] == pytest.approx(want[stratum]["ndvi"]["ce90"], rel=1e-6)
        assert got["ergas"] == pytest.approx(want[stratum]["ergas"], rel=1e-6)
        assert got["sam_deg"] == pytest.approx(want[stratum]["sam_deg"], rel=1e-6)


def test_inputs_off_the_grid_or_unreadable_fail_in_one_line_and_write_nothing(
    tmp_path: Path,
) -> None:
    pred, ref = _images(1)
    r = _tif(tmp_path / "ref.tif", ref)
    moved = _tif(tmp_path / "moved.tif", pred, x0=500002.5)
    out = tmp_path / "report.json"
    res = harvest("evaluate", str(moved), str(r), "-o", str(out))
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert "not on the grid" in res.stderr and "transform" in res.stderr
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not a tiff")
    res = harvest("evaluate", str(broken), str(r), "-o", str(out))
    assert res.returncode == 1 and "cannot read PRED" in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.tif", "moved.tif", "ref.tif",
    ]  # fmt: skip


def test_bands_without_names_take_red_and_nir_from_the_options(tmp_path: Path) -> None:
    pred, ref = _images(2)
    p = _tif(tmp_path / "p.tif", pred, names=False)
    r = _tif(tmp_path / "r.tif", ref, names=False)
    out = tmp_path / "r.json"
    assert harvest("evaluate", str(p), str(r), "-o", str(out)).returncode == 0
    assert json.loads(out.read_text())["scores"]["all"]["ndvi"] is None
    res = harvest("evaluate", str(p), str(r), "-o", str(out), "--red", "1", "--nir", "4")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["ndvi_bands"] == ["band1", "band4"]
    want = evaluate_image(pred, ref, None, red=0, nir=3).to_dict()["all"]["ndvi"]
    assert report["scores"]["all"]["ndvi"]["rmse"] == pytest.approx(want["rmse"], rel=1e-6)


def _zarr(path: Path, data: np.ndarray, x0: float = 500000.0) -> Path:
    t, c, h, w = data.shape
    ds = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), data)},
        coords={
            "time": np.array(["2020-05-01", "2020-05-21"][:t], dtype="datetime64[ns]"),
            "band": list(BANDS[:c]),
            "y": 4600000.0 - 2.5 * (np.arange(h) + 0.5),
            "x": x0 + 2.5 * (np.arange(w) + 0.5),
        },
    )
    ds.to_zarr(path, mode="w")
    return path


def test_zarr_stacks_are_scored_per_time_step_and_averaged(tmp_path: Path) -> None:
    (p0, r0), (p1, r1) = _images(3), _images(4)
    pred = _zarr(tmp_path / "pred.zarr", np.stack([p0, p1]))
    ref = _zarr(tmp_path / "ref.zarr", np.stack([r0, r1]))
    out = tmp_path / "stack.json"
    res = harvest("evaluate", str(pred), str(ref), "-o", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert len(report["times"]) == 2 and len(report["per_time"]) == 2
    first = evaluate_image(p0, r0, None, BANDS, red=0, nir=3).to_dict()
    second = evaluate_image(p1, r1, None, BANDS, red=0, nir=3).to_dict()
    got = report["per_time"][report["times"][1]]["all"]["bands"]["B02"]["mae"]
    assert got == pytest.approx(second["all"]["bands"]["B02"]["mae"], rel=1e-6)
    mean = report["scores"]["high_gradient_25"]["ndvi"]["ce99"]
    assert mean == pytest.approx(
        (first["high_gradient_25"]["ndvi"]["ce99"] + second["high_gradient_25"]["ndvi"]["ce99"])
        / 2,
        rel=1e-6,
    )
    # A stack on other x coordinates, or a GeoTIFF against a Zarr store, is refused.
    moved = _zarr(tmp_path / "moved.zarr", np.stack([p0, p1]), x0=500010.0)
    res = harvest("evaluate", str(moved), str(ref))
    assert res.returncode == 1 and "x coordinates" in res.stderr
    tif = _tif(tmp_path / "one.tif", p0)
    res = harvest("evaluate", str(tif), str(ref))
    assert res.returncode == 1 and "two GeoTIFFs or two Zarr stores" in res.stderr
