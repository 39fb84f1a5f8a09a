"""harvest.store.write_cog: the chip COGs, checked against GDAL (the reader every user has).

GDAL must decode every sample bit for bit, see the georeferencing, band names and nodata, and
recognise the layout as a COG; the file must keep the promises its ghost header makes (IFD
before the data, each tile led by its size and trailed by its last 4 bytes); the returned
SHA-256 is the file's; a full disk is a one-line DiskWriteError naming the file.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine

from harvest.errors import DiskWriteError, StoreError
from harvest.grid import ChipGrid
from harvest.store import write_cog

UTM_TRANSFORM = Affine(2.5, 0.0, 345140.0, 0.0, -2.5, 4202290.0)


def _grid(data: np.ndarray, epsg: int = 32614, transform: Affine = UTM_TRANSFORM) -> ChipGrid:
    return ChipGrid(epsg, transform, data.shape[2], data.shape[1], transform.a)


def _reflectance(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Float32 reflectance like a chip's: quantized area averages, NaN holes, odd values."""
    rng = np.random.default_rng(seed)
    data = (rng.integers(0, 6376, shape) / 6375.0).astype(np.float32)
    data[0, :7, :11] = np.nan
    data[-1, -1, -1] = -0.0123  # S2 L2A after the baseline offset can be negative
    data[-1, 0, 1] = np.float32(1e-42)  # subnormal
    data[-1, 0, 2] = np.inf
    return data


def test_float_chip_decodes_bit_for_bit_with_its_georeferencing(tmp_path: Path) -> None:
    # 300 x 200 on 256 px tiles: 2 x 1 tiles, partial in both directions.
    data = _reflectance((4, 200, 300))
    names = ["red", "green", "blue", "n<i>r & co \"q\" 'a'"]
    path = tmp_path / "HR.tif"
    digest = write_cog(path, data, _grid(data), names, np.nan)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with rasterio.open(path) as ds:
        back = ds.read()
        assert ds.crs.to_epsg() == 32614
        assert ds.transform == UTM_TRANSFORM
        assert ds.descriptions == tuple(names)
        assert np.isnan(ds.nodata)
        assert ds.block_shapes == [(256, 256)] * 4
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        assert structure["LAYOUT"] == "COG"
        assert structure["COMPRESSION"] == "ZSTD"
        assert structure["PREDICTOR"] == "3"
        assert structure["INTERLEAVE"] == "PIXEL"
        assert ds.overviews(1) == []
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.view(np.uint32), data.view(np.uint32))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float64"])
def test_other_sample_types_decode_exactly(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        data = rng.integers(info.min, info.max, (2, 70, 150), endpoint=True).astype(dtype)
    else:
        data = rng.normal(size=(2, 70, 150)).astype(dtype)
    write_cog(tmp_path / "x.tif", data, _grid(data), ["a", "b"], 0)
    with rasterio.open(tmp_path / "x.tif") as ds:
        assert ds.dtypes == (dtype, dtype)
        assert ds.nodata == 0
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == ("3" if info is None else "2")
        np.testing.assert_array_equal(ds.read(), data)


def test_one_band_uint8_like_scl_on_one_128_px_tile(tmp_path: Path) -> None:
    scl = np.random.default_rng(2).integers(0, 12, (1, 121, 121)).astype(np.uint8)
    write_cog(tmp_path / "SCL.tif", scl, _grid(scl), ["SCL"], 0)
    with rasterio.open(tmp_path / "SCL.tif") as ds:
        assert ds.count == 1 and ds.descriptions == ("SCL",) and ds.nodata == 0
        assert ds.block_shapes == [(128, 128)]
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(ds.read(), scl)


@pytest.mark.parametrize("epsg", [4326, 3857, 32755])
def test_geographic_and_projected_codes(tmp_path: Path, epsg: int) -> None:
    transform = Affine(0.001, 0, -70.5, 0, -0.001, -12.25) if epsg == 4326 else UTM_TRANSFORM
    data = _reflectance((1, 32, 48))
    write_cog(tmp_path / "x.tif", data, _grid(data, epsg, transform), ["b"])
    with rasterio.open(tmp_path / "x.tif") as ds:
        assert ds.crs.to_epsg() == epsg
        assert ds.transform == transform
        assert ds.nodata is None


def test_big_endian_input_is_written_exactly(tmp_path: Path) -> None:
    data = _reflectance((2, 40, 40)).astype(">f4")
    write_cog(tmp_path / "x.tif", data, _grid(data), ["a", "b"])
    with rasterio.open(tmp_path / "x.tif") as ds:
        np.testing.assert_array_equal(ds.read(), data.astype("<f4"))


def test_layout_keeps_the_ghost_header_promises(tmp_path: Path) -> None:
    data = _reflectance((4, 484, 484))
    write_cog(tmp_path / "HR.tif", data, _grid(data), list("abcd"), np.nan)
    blob = (tmp_path / "HR.tif").read_bytes()
    assert blob[:4] == b"II*\0"
    (ifd_offset,) = struct.unpack_from("<I", blob, 4)
    ghost = blob[8:ifd_offset].decode()
    assert ghost.startswith("GDAL_STRUCTURAL_METADATA_SIZE=")
    for line in (
        "LAYOUT=IFDS_BEFORE_DATA",
        "BLOCK_ORDER=ROW_MAJOR",
        "BLOCK_LEADER=SIZE_AS_UINT4",
        "BLOCK_TRAILER=LAST_4_BYTES_REPEATED",
    ):
        assert line in ghost
    with tifffile.TiffFile(io.BytesIO(blob)) as tif:
        assert len(tif.pages) == 1  # no overviews, no mask
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        ends = [tag.valueoffset + tag.valuebytecount for tag in page.tags.values()]
    assert len(offsets) == 4  # 2 x 2 tiles of 256 px, row-major, one after another
    assert max(ends) <= min(offsets) - 4  # every IFD value lies before the first tile
    assert list(offsets) == sorted(offsets)
    for off, count in zip(offsets, counts, strict=True):
        (leader,) = struct.unpack_from("<I", blob, off - 4)
        assert leader == count
        assert blob[off + count : off + count + 4] == blob[off + count - 4 : off + count]


def test_threads_write_the_same_bytes(tmp_path: Path) -> None:
    data = [_reflectance((4, 121, 121), seed=s) for s in range(6)]
    expected = [
        write_cog(tmp_path / f"seq{i}.tif", d, _grid(d), list("abcd"), np.nan)
        for i, d in enumerate(data)
    ]
    got: dict[int, list[str]] = {}

    def work(i: int) -> None:
        got[i] = [
            write_cog(tmp_path / f"t{i}-{k}.tif", data[i], _grid(data[i]), list("abcd"), np.nan)
            for k in range(5)
        ]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(6)] == [[e] * 5 for e in expected]


def test_an_array_off_the_grid_is_refused(tmp_path: Path) -> None:
    data = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(StoreError, match=r"LR.tif: array \(2, 8, 8\) does not match 1 bands"):
        write_cog(tmp_path / "LR.tif", data, _grid(data), ["a"])
    assert not (tmp_path / "LR.tif").exists()


def test_a_full_disk_is_one_error_naming_the_file(
    tmp_path: Path, disk_full_after: Callable[[int], None]
) -> None:
    data = _reflectance((4, 121, 121))
    disk_full_after(0)
    with pytest.raises(DiskWriteError) as caught:
        write_cog(tmp_path / "LR.tif", data, _grid(data), list("abcd"), np.nan)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "LR.tif") in message and "No space left on device" in message
    assert "free space" in message
