"""harvest.cog: the chip COG encoder, checked against GDAL (the reader every user has).

GDAL must decode every sample bit for bit (so the predictors and the ZSTD frames are right),
see the georeferencing, band names and nodata, and recognise the layout as a COG; the file's
structure must keep the promises its ghost header makes (IFD before the data, each tile led by
its size and trailed by its last 4 bytes).
"""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from rasterio.io import MemoryFile

from harvest.cog import encode_cog

UTM_TRANSFORM = Affine(2.5, 0.0, 345140.0, 0.0, -2.5, 4202290.0)


def _reflectance(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Float32 reflectance like a chip's: quantized area averages, NaN holes, odd values."""
    rng = np.random.default_rng(seed)
    data = (rng.integers(0, 6376, shape) / 6375.0).astype(np.float32)
    data[0, :7, :11] = np.nan
    data[-1, -1, -1] = -0.0123  # S2 L2A after the baseline offset can be negative
    data[-1, 0, 1] = np.float32(1e-42)  # subnormal
    data[-1, 0, 2] = np.inf
    return data


def _open(blob: bytes, tmp_path: Path, name: str = "x.tif") -> rasterio.DatasetReader:
    path = tmp_path / name
    path.write_bytes(blob)
    return rasterio.open(path)


def test_float_chip_decodes_bit_for_bit_with_its_georeferencing(tmp_path: Path) -> None:
    # 300 x 200 on 128 px tiles: 3 x 2 tiles, partial in both directions.
    data = _reflectance((4, 200, 300))
    blob = encode_cog(
        data,
        epsg=32614,
        transform=UTM_TRANSFORM,
        band_names=["red", "green", "blue", "n<i>r & co \"q\" 'a'"],
        nodata=np.nan,
        tile=128,
    )
    with _open(blob, tmp_path) as ds:
        back = ds.read()
        assert ds.crs.to_epsg() == 32614
        assert ds.transform == UTM_TRANSFORM
        assert ds.descriptions == ("red", "green", "blue", "n<i>r & co \"q\" 'a'")
        assert np.isnan(ds.nodata)
        assert ds.block_shapes == [(128, 128)] * 4
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
    blob = encode_cog(
        data, epsg=32633, transform=UTM_TRANSFORM, band_names=["a", "b"], nodata=0, tile=64
    )
    with _open(blob, tmp_path) as ds:
        assert ds.dtypes == (dtype, dtype)
        assert ds.nodata == 0
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == ("3" if info is None else "2")
        np.testing.assert_array_equal(ds.read(), data)


def test_one_band_uint8_like_scl(tmp_path: Path) -> None:
    scl = np.random.default_rng(2).integers(0, 12, (1, 121, 121)).astype(np.uint8)
    blob = encode_cog(
        scl, epsg=32614, transform=UTM_TRANSFORM, band_names=["SCL"], nodata=0, tile=128
    )
    with _open(blob, tmp_path) as ds:
        assert ds.count == 1 and ds.descriptions == ("SCL",) and ds.nodata == 0
        np.testing.assert_array_equal(ds.read(), scl)


@pytest.mark.parametrize("epsg", [4326, 3857, 32755])
def test_geographic_and_projected_codes(tmp_path: Path, epsg: int) -> None:
    transform = Affine(0.001, 0, -70.5, 0, -0.001, -12.25) if epsg == 4326 else UTM_TRANSFORM
    data = _reflectance((1, 32, 48))
    blob = encode_cog(data, epsg=epsg, transform=transform, band_names=["b"], tile=16)
    with _open(blob, tmp_path) as ds:
        assert ds.crs.to_epsg() == epsg
        assert ds.transform == transform
        assert ds.nodata is None


def test_a_rotated_transform_is_kept(tmp_path: Path) -> None:
    rotated = Affine(2.0, 0.5, 1000.0, 0.25, -2.0, 5000.0)
    data = _reflectance((1, 32, 32))
    blob = encode_cog(data, epsg=32614, transform=rotated, band_names=["b"], tile=16)
    with _open(blob, tmp_path) as ds:
        assert ds.transform.almost_equals(rotated, precision=1e-12)


def test_layout_keeps_the_ghost_header_promises() -> None:
    data = _reflectance((4, 484, 484))
    blob = encode_cog(data, epsg=32614, transform=UTM_TRANSFORM, band_names=list("abcd"))
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
    declared = int(ghost.split("=")[1].split()[0])
    header_line = ghost.index("\n") + 1
    assert len(ghost.rstrip("\0")) == header_line + declared
    with tifffile.TiffFile(io.BytesIO(blob)) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        ends = [tag.valueoffset + tag.valuebytecount for tag in page.tags.values()]
    assert ifd_offset % 2 == 0
    assert len(offsets) == 4  # 2 x 2 tiles of 256 px, row-major, one after another
    assert max(ends) <= min(offsets) - 4  # every IFD value lies before the first tile
    assert list(offsets) == sorted(offsets)
    for off, count in zip(offsets, counts, strict=True):
        (leader,) = struct.unpack_from("<I", blob, off - 4)
        assert leader == count
        assert blob[off + count : off + count + 4] == blob[off + count - 4 : off + count]
    assert offsets[-1] + counts[-1] + 4 == len(blob)


def test_same_tags_as_gdals_cog_driver() -> None:
    """Everything GDAL's COG driver writes for a chip, but the optional citation strings."""
    data = _reflectance((4, 121, 121))
    names = ["B04", "B03", "B02", "B08"]
    ours = encode_cog(
        data, epsg=32614, transform=UTM_TRANSFORM, band_names=names, nodata=np.nan, tile=128
    )
    with MemoryFile() as mem:
        profile = {
            "driver": "COG", "width": 121, "height": 121, "count": 4, "dtype": "float32",
            "crs": "EPSG:32614", "transform": UTM_TRANSFORM, "nodata": np.nan,
            "compress": "ZSTD", "level": 1, "predictor": 3, "blocksize": 128,
            "overviews": "NONE",
        }  # fmt: skip
        with mem.open(**profile) as dst:
            dst.write(data)
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
        gdals = mem.read()

    def tags(blob: bytes) -> dict[int, object]:
        with tifffile.TiffFile(io.BytesIO(blob)) as tif:
            return {
                code: tag.value
                for code, tag in tif.pages[0].tags.items()
                if code not in (324, 325, 34735, 34737)  # offsets, sizes, geokeys, citations
            }

    assert tags(ours) == tags(gdals)
    assert abs(len(ours) - len(gdals)) < 0.01 * len(gdals)  # same codec, same level


def test_threads_encode_the_same_bytes() -> None:
    data = [_reflectance((4, 121, 121), seed=s) for s in range(6)]
    expected = [
        encode_cog(d, epsg=32614, transform=UTM_TRANSFORM, band_names=list("abcd"), tile=128)
        for d in data
    ]
    got: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = encode_cog(
                data[i], epsg=32614, transform=UTM_TRANSFORM, band_names=list("abcd"), tile=128
            )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(6)] == expected


@pytest.mark.parametrize(
    ("data", "names", "tile", "message"),
    [
        (np.zeros((2, 8, 8), np.float32), ["a"], 16, r"expected \[1, rows, cols\]"),
        (np.zeros((8, 8), np.float32), ["a"], 16, "expected"),
        (np.zeros((1, 8, 8), np.float32), ["a"], 20, "multiple of 16"),
        (np.zeros((1, 8, 8), np.complex64), ["a"], 16, "cannot write complex64"),
        (np.zeros((1, 8, 8), bool), ["a"], 16, "cannot write bool"),
        (np.broadcast_to(np.float64(0), (1, 2**15, 2**14)), ["a"], 16, "too large"),
    ],
)
def test_bad_input_is_refused(data: np.ndarray, names: list[str], tile: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_cog(data, epsg=32614, transform=UTM_TRANSFORM, band_names=names, tile=tile)


def test_big_endian_input_is_written_little_endian(tmp_path: Path) -> None:
    data = _reflectance((2, 40, 40)).astype(">f4")
    blob = encode_cog(data, epsg=32614, transform=UTM_TRANSFORM, band_names=["a", "b"], tile=32)
    with _open(blob, tmp_path) as ds:
        np.testing.assert_array_equal(ds.read(), data.astype("<f4"))
