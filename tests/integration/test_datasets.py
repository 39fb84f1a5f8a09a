"""`harvest.datasets.SEN2NAIP` on the demo build: modes, nesting, determinism, workers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from degradation.resample import downsample
from harvest.datasets import SEN2NAIP, DatasetError
from harvest.errors import HarvestError


def _decoded(stored: np.ndarray) -> np.ndarray:
    """Reflectance as the dataset decodes it: uint16 x 10000, uint8 DN / 255, float as is."""
    if stored.dtype == np.uint16:
        return stored.astype(np.float32) * np.float32(1e-4)
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1 / 255)
    return np.nan_to_num(stored)


def test_modes_shapes_and_what_each_item_holds(demo_build: Path) -> None:
    kept = gpd.read_parquet(demo_build / "manifest.parquet").query("status == 'kept'")
    n_images = len(list((demo_build / "synthetic").glob("*/*/HR.tif")))
    with rasterio.open(SEN2NAIP(demo_build, split="all").samples[0].hr) as src:
        side = src.height  # the demo build's synthetic chips: 400 px (1,100 px in the paper)
        assert src.width == side and side % 4 == 0
    for mode in ("raw", "statistical", "deterministic", "variational", "all"):
        ds = SEN2NAIP(demo_build, split="all", mode=mode)
        assert len(ds) == n_images
        item = ds[0]
        assert item["hr"].dtype == torch.float32 and item["lr"].dtype == torch.float32
        assert tuple(item["hr"].shape) == (4, side, side)
        assert tuple(item["lr"].shape) == (4, side // 4, side // 4)
        assert item["roi_id"] in set(kept.roi_id)
        expected = ("statistical", "deterministic", "variational") if mode == "all" else (mode,)
        assert item["mode"] in expected
    # raw: the HR as written, the LR its antialiased bilinear downsampling, no noise.
    raw = SEN2NAIP(demo_build, split="all", mode="raw")[0]
    with rasterio.open(raw_path := SEN2NAIP(demo_build, split="all").samples[0].hr) as src:
        assert np.array_equal(raw["hr"].numpy(), _decoded(src.read()))
    assert raw_path.name == "HR.tif"
    again = downsample(raw["hr"][None], 4, antialias=True)[0]
    torch.testing.assert_close(raw["lr"], again)
    # real: the chip's own LR.
    real = SEN2NAIP(demo_build, split="all", mode="real")
    assert len(real) == len(kept)
    with rasterio.open(demo_build / "cross-sensor" / real[0]["roi_id"] / "LR.tif") as src:
        assert np.array_equal(real[0]["lr"].numpy(), np.nan_to_num(src.read()))


def test_splits_follow_the_chips(demo_build: Path) -> None:
    counts = json.loads((demo_build / "dataset.json").read_text())["counts"]
    train = SEN2NAIP(demo_build, split="train", mode="real")
    assert len(train) == counts["kept_train"]
    if counts["kept_test"] == 0:
        with pytest.raises(DatasetError, match="no test sample"):
            SEN2NAIP(demo_build, split="test", mode="real")


def test_crops_stay_nested(demo_build: Path) -> None:
    raw = SEN2NAIP(demo_build, split="all", mode="raw", crop=32, seed=3)
    item = raw[1 % len(raw)]
    assert tuple(item["lr"].shape) == (4, 32, 32) and tuple(item["hr"].shape) == (4, 128, 128)
    torch.testing.assert_close(item["lr"], downsample(item["hr"][None], 4, antialias=True)[0])
    # real: the HR window sits exactly over the LR window (found again in the whole images).
    real = SEN2NAIP(demo_build, split="all", mode="real", crop=16, seed=5)
    whole = SEN2NAIP(demo_build, split="all", mode="real")
    for i in range(len(real)):
        crop, full = real[i], whole[i]
        lr, hr = full["lr"].numpy(), full["hr"].numpy()
        hits = [
            (y, x)
            for y in range(lr.shape[1] - 15)
            for x in range(lr.shape[2] - 15)
            if np.array_equal(lr[:, y : y + 16, x : x + 16], crop["lr"].numpy())
        ]
        assert hits
        y, x = hits[0]
        assert np.array_equal(hr[:, 4 * y : 4 * y + 64, 4 * x : 4 * x + 64], crop["hr"].numpy())
    with pytest.raises(DatasetError, match="larger than an LR image"):
        SEN2NAIP(demo_build, split="all", mode="raw", crop=500)[0]


def test_deterministic_per_seed_epoch_and_index_whatever_the_workers(demo_build: Path) -> None:
    ds = SEN2NAIP(demo_build, split="all", mode="all", crop=24, seed=7)
    a, b = ds[0], ds[0]
    torch.testing.assert_close(a["lr"], b["lr"])
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["lr"], c["lr"])  # new noise (and crop) in a new epoch
    ds.set_epoch(0)
    copy = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(copy[0]["lr"], a["lr"])

    def batches(workers: int) -> list[dict[str, object]]:
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=workers)
        return list(loader)

    one, two = batches(0), batches(2)
    assert len(one) == len(two) == len(ds)
    for x, y in zip(one, two, strict=True):
        assert x["roi_id"] == y["roi_id"] and x["mode"] == y["mode"]
        torch.testing.assert_close(x["lr"], y["lr"])
        torch.testing.assert_close(x["hr"], y["hr"])


def test_bad_options_are_one_line(demo_build: Path, tmp_path: Path) -> None:
    for kwargs, expected in (
        ({"mode": "bicubic"}, "mode 'bicubic' is not one of"),
        ({"split": "val"}, "split 'val' is not one of"),
        ({"noise": "pink"}, "noise 'pink' is not one of"),
        ({"crop": 0}, "crop 0"),
    ):
        with pytest.raises(DatasetError, match=expected) as exc:
            SEN2NAIP(demo_build, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(exc.value) and isinstance(exc.value, HarvestError)
    with pytest.raises(DatasetError, match="no HR images"):
        SEN2NAIP(tmp_path)
    with pytest.raises(DatasetError, match="is not a folder"):
        SEN2NAIP(tmp_path / "nope")


def _write_image(root: Path, data: np.ndarray, nodata: float | None = None) -> None:
    folder = root / "synthetic" / "ROI_000001" / "image"
    folder.mkdir(parents=True)
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 4,
        "dtype": str(data.dtype), "crs": "EPSG:32615", "nodata": nodata,
        "transform": rasterio.transform.from_origin(450000, 4650000, 2.5, 2.5),
        "compress": "zstd", "predictor": 3 if data.dtype == np.float32 else 2,
    }  # fmt: skip
    with rasterio.open(folder / "HR.tif", "w", **profile) as dst:
        dst.write(data)


@pytest.mark.parametrize("coded", ["uint16", "uint8"])
def test_integer_and_float_images_give_the_same_items(tmp_path: Path, coded: str) -> None:
    rng = np.random.default_rng(0)
    if coded == "uint16":
        # What harvest build writes for the synthetic HR: reflectance x 10000 (a nodata code too).
        counts = rng.integers(0, 6000, size=(4, 132, 132)).astype(np.uint16)
        counts[:, :3, :4] = 65535
        nodata: float | None = 65535
        reflectance = _decoded(counts)
        reflectance[counts == 65535] = 0.0
    else:
        counts = rng.integers(0, 256, size=(4, 132, 132)).astype(np.uint8)  # NAIP-like DN
        nodata = None
        reflectance = _decoded(counts)
    _write_image(tmp_path / "coded", counts, nodata)
    _write_image(tmp_path / "float", reflectance)
    for mode, crop in (("statistical", None), ("statistical", 16), ("raw", None), ("all", None)):
        a = SEN2NAIP(tmp_path / "coded", split="all", mode=mode, crop=crop, seed=3)
        b = SEN2NAIP(tmp_path / "float", split="all", mode=mode, crop=crop, seed=3)
        for epoch in (0, 1):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            x, y = a[0], b[0]
            assert x["mode"] == y["mode"]
            assert torch.equal(x["hr"], y["hr"])  # decoding + gamma by table lookup: bitwise
            torch.testing.assert_close(x["lr"], y["lr"], atol=1e-6, rtol=0)
    # The same sample as the Degrader makes it (the path of __call__, with the conv1d PSF).
    ds = SEN2NAIP(tmp_path / "coded", split="all", mode="statistical", seed=3)
    ref = ds._get_degrader()(reflectance, ds.item_rng(0))
    item = ds[0]
    assert np.array_equal(item["hr"].numpy(), ref.hr)
    np.testing.assert_allclose(item["lr"].numpy(), ref.lr, atol=2e-6, rtol=0)
