"""SEN2VENuS pair processing and its published layout, on a pair simulated with known truth.

The landscape is 8 smooth random bands at 2.5 m; VENuS is each band's 2 x 2 area mean times a
known gain plus offset (VENuS B11 standing for both NIR bands, as in the paper's mapping); S2 is
the landscape through a Gaussian matched to the MTF at Nyquist, moved by a known sub-pixel
shift. The processing must recover the shift, the inverse of the gains and offsets, and keep
the patches that are valid everywhere.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from harvest import sen2venus as sv
from harvest.errors import QaError

N = 1024  # 2.5 m pixels: 512 at 5 m, 256 at 10 m, 128 at 20 m
S2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A")
#: VENuS band -> the landscape band it sees.
VENUS_SOURCE = {"B3": "B02", "B4": "B03", "B7": "B04", "B11": "B08", "B8": "B05", "B9": "B06",
                "B10": "B07"}  # fmt: skip
GAIN = {b: 1.0 + 0.02 * i for i, b in enumerate(VENUS_SOURCE)}
OFFSET = {b: 0.003 * (i - 3) for i, b in enumerate(VENUS_SOURCE)}
SHIFT_PX = (0.6, -0.4)  # S2 content displaced 0.6 px east and 0.4 px north, 10 m px


def _field(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    f = sum(ndimage.gaussian_filter(r.normal(size=(N, N)), s) * s for s in (2, 6, 20))
    return 0.05 + 0.4 * (f - f.min()) / (f.max() - f.min())


@pytest.fixture(scope="module")
def pair() -> sv.PairImages:
    land = {b: _field(i) for i, b in enumerate(S2_BANDS)}
    land["B8A"] = land["B08"]  # the narrow and broad NIR see the same surface (VENuS B11 both)

    def s2(band: str, factor: int) -> np.ndarray:
        dx, dy = SHIFT_PX[0] * 4, SHIFT_PX[1] * 4  # in 2.5 m px
        return sv.mtf_downsample(
            ndimage.shift(land[band], (dy, dx), order=3, mode="mirror"), factor
        )

    venus_bands = tuple(VENUS_SOURCE)
    venus = np.stack(
        [GAIN[b] * land[VENUS_SOURCE[b]].reshape(512, 2, 512, 2).mean(axis=(1, 3)) + OFFSET[b]
         for b in venus_bands]
    )  # fmt: skip
    rng = np.random.default_rng(9)
    s2_10 = np.stack([s2(b, 4) for b in S2_BANDS[:4]]) + rng.normal(0, 0.002, (4, 256, 256))
    s2_20 = np.stack([s2(b, 8) for b in S2_BANDS[4:]]) + rng.normal(0, 0.002, (4, 128, 128))
    valid_v = np.ones((512, 512), bool)
    valid_v[300:340, 40:100] = False  # a VENuS cloud in the bottom-left patch
    valid_20 = np.ones((128, 128), bool)
    valid_20[10, 100] = False  # one S2 20 m pixel in the top-right patch
    return sv.PairImages(
        s2_10, s2_20, venus, venus_bands, np.ones((256, 256), bool), valid_20, valid_v
    )


def test_registration_recovers_the_shift_from_sift_on_the_blue_band(pair: sv.PairImages) -> None:
    est = sv.register(pair)
    assert est.ok and est.n_matches >= 100
    assert est.dx_px == pytest.approx(SHIFT_PX[0], abs=0.05)
    assert est.dy_px == pytest.approx(SHIFT_PX[1], abs=0.05)


def test_process_pair_keeps_the_valid_patches_and_maps_venus_onto_s2(pair: sv.PairImages) -> None:
    out = sv.process_pair(pair, np.random.default_rng(0))
    # Patches of 256 px at 5 m: 2 x 2; bottom-left has the VENuS cloud, top-right the S2 pixel.
    assert out.n_grid == 2 and out.patches == ((0, 0), (256, 256))
    assert out.venus_10m.shape == (2, 4, 256, 256) and out.s2_10m.shape == (2, 4, 128, 128)
    assert out.venus_20m.shape == (2, 4, 256, 256) and out.s2_20m.shape == (2, 4, 64, 64)
    # S2 = (VENuS - offset) / gain: the fitted map's diagonal and intercepts (the extra 2 x 2 area
    # mean of VENuS makes it blurrier than the filter assumes: within 1.5 %).
    for w, bands in ((out.mapping_10m, sv.VENUS_10M_BANDS), (out.mapping_20m, sv.VENUS_20M_BANDS)):
        want_gain = np.array([1 / GAIN[b] for b in bands])
        want_offset = np.array([-OFFSET[b] / GAIN[b] for b in bands])
        assert np.allclose(np.diag(w[:4]), want_gain, rtol=0.015), np.diag(w[:4])
        assert np.allclose(w[4], want_offset, atol=0.003), w[4]
        off_diagonal = w[:4] - np.diag(np.diag(w[:4]))
        assert np.abs(off_diagonal).max() < 0.02
    assert all(e <= sv.KEEP_RMSE_MAX for e in out.rmse)
    # The S2 patch is the registered S2: it matches the mapped VENuS brought to 10 m.
    v = sv.mtf_downsample(out.venus_10m[1], 2)
    assert np.sqrt(np.mean((v - out.s2_10m[1]) ** 2)) < 0.005


def test_selection_caps_the_patches_at_random_and_drops_the_ones_that_disagree() -> None:
    rng = np.random.default_rng(1)
    s2 = 0.1 + ndimage.gaussian_filter(rng.random((4, 64, 64)), (0, 4, 4))
    venus = np.kron(s2, np.ones((2, 2)))
    grid = [(r, c) for r in range(0, 128, 32) for c in range(0, 128, 32)]  # 16 patches of 32 px
    venus[:, 0:32, 32:64] += 0.1  # patch (0, 32) disagrees
    kept, errors = sv.select_patches(grid, s2, venus, np.random.default_rng(0), patch_px=32)
    assert (0, 32) not in kept and len(kept) == 15
    capped, _ = sv.select_patches(
        grid, s2, venus, np.random.default_rng(0), max_patches=5, rmse_max=1.0, patch_px=32
    )
    again, _ = sv.select_patches(
        grid, s2, venus, np.random.default_rng(0), max_patches=5, rmse_max=1.0, patch_px=32
    )
    assert len(capped) == 5 and capped == again and capped == sorted(capped)


def test_a_pair_whose_grids_do_not_nest_is_refused() -> None:
    z = np.zeros
    with pytest.raises(QaError, match="venus has shape"):
        sv.PairImages(z((4, 8, 8)), z((4, 4, 4)), z((7, 8, 8)), tuple(VENUS_SOURCE),
                      z((8, 8), bool), z((4, 4), bool), z((16, 16), bool))  # fmt: skip


def test_the_published_layout_reads_back_with_torch_load(
    pair: sv.PairImages, tmp_path: pytest.TempPathFactory
) -> None:
    import geopandas as gpd

    from harvest.writers.sen2venus import INDEX_COLUMNS, PairInfo, write_pair

    out = sv.process_pair(pair, np.random.default_rng(0))
    info = PairInfo("FR-LAM", "31TCJ", "2019-05-12", "VENUS-XS_20190512", "S2A_MSIL2A_20190512",
                    5.3, "EPSG:32631", (360000.0, 4820000.0))  # fmt: skip
    root = tmp_path / "sen2venus"  # type: ignore[operator]
    write_pair(root, info, out)
    site = root / "FR-LAM"
    pid = "FR-LAM_31TCJ_2019-05-12"
    shapes = {"05m_b2b3b4b8": (2, 4, 256, 256), "10m_b2b3b4b8": (2, 4, 128, 128),
              "05m_b5b6b7b8a": (2, 4, 256, 256), "20m_b5b6b7b8a": (2, 4, 64, 64)}  # fmt: skip
    for suffix, shape in shapes.items():
        t = torch.load(site / f"{pid}_{suffix}.pt")
        assert t.dtype == torch.int16 and tuple(t.shape) == shape
    s2 = torch.load(site / f"{pid}_10m_b2b3b4b8.pt").numpy()
    assert np.array_equal(s2, np.rint(out.s2_10m * 10000).astype(np.int16))
    frame = gpd.read_file(site / f"{pid}_patches.gpkg")
    assert frame.crs.to_epsg() == 32631 and len(frame) == 2
    # Patch 1 starts at 5 m row 256, column 256: 1280 m east and south of the origin.
    assert frame.geometry[1].bounds == pytest.approx((361280.0, 4817440.0, 362560.0, 4818720.0))
    with (site / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert tuple(rows[0]) == INDEX_COLUMNS
    assert (
        rows[0]["nb_patches"] == "2"
        and rows[0]["tensor_20m_b5b6b7b8a"] == f"{pid}_20m_b5b6b7b8a.pt"
    )
    # Writing the pair again replaces its row; another date adds one, in date order.
    write_pair(root, info, out)
    later = PairInfo(*[*info.__dict__.values()][:2], "2019-06-01", "V2", "S2B", None,
                     "EPSG:32631", (360000.0, 4820000.0))  # fmt: skip
    write_pair(root, later, out)
    with (site / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["date"] for r in rows] == ["2019-05-12", "2019-06-01"]
    assert rows[1]["venus_zenith_angle"] == ""
    assert not [p for p in site.iterdir() if ".tmp" in p.name or p.name.startswith(".")]


def test_a_site_name_that_could_leave_the_output_folder_is_refused(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from harvest.errors import UnsafeIdError
    from harvest.stages._sen2venus import read_sites

    path = tmp_path / "sites.geojson"
    gpd.GeoDataFrame({"site_id": ["ok-site", "../x"]}, geometry=[box(0, 0, 1, 1)] * 2,
                     crs=4326).to_file(path)  # fmt: skip
    with pytest.raises(UnsafeIdError, match="site_id") as exc:
        read_sites(path)
    assert "\n" not in str(exc.value)
