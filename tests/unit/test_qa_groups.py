"""QA of band groups as recipes describe them: correspondence, extra groups, SAR, checks."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from harvest.errors import QaError
from harvest.qa import (
    ALL_CHECKS,
    GroupImage,
    QaThresholds,
    Reason,
    area_resample,
    band_pairs,
    block_mean,
    evaluate_chip,
    evaluate_groups,
)
from harvest.recipes import load_recipe

N = 64


def _texture(seed: int, n: int, bands: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.5)
    own = ndimage.gaussian_filter(rng.normal(size=(bands, n, n)), (0, 1.5, 1.5))
    img = 0.8 * common[None] / common.std() + 0.2 * own / own.std()
    return 0.1 + 0.05 * np.arange(bands)[:, None, None] * 0.2 + 0.02 * img


def _upsample(img: np.ndarray, k: int, seed: int) -> np.ndarray:
    fine = np.repeat(np.repeat(img, k, axis=-2), k, axis=-1)
    return fine + np.random.default_rng(seed).normal(0, 0.001, fine.shape)


def _venus_like(seed: int = 3) -> tuple[list[GroupImage], list[GroupImage]]:
    """SEN2VENuS's groups: S2 10 m (4 bands) and 20 m (4 bands) over VENuS 5 m (7 bands)."""
    recipe = load_recipe("sen2venus")
    (g10, g20), (g5,) = recipe.lr.groups, recipe.hr.groups
    truth5 = _upsample(_texture(seed, 2 * N, 7), 1, seed)  # VENuS at 5 m: B3 B4 B7 B11 B8 B9 B10
    lr10 = area_resample(truth5[:4], 2)  # B02 B03 B04 B08 <- B3 B4 B7 B11
    lr20 = area_resample(truth5[[4, 5, 6, 3]], 4)  # B05 B06 B07 B8A <- B8 B9 B10 B11
    lr = [
        GroupImage("lr", g10.name, g10.bands, 10.0, lr10.astype(np.float32)),
        GroupImage("lr", g20.name, g20.bands, 20.0, lr20.astype(np.float32)),
    ]
    hr = [GroupImage("hr", g5.name, g5.bands, 5.0, truth5.astype(np.float32))]
    return lr, hr


def _evaluate(lr, hr, recipe_name: str = "sen2venus", **kw):
    recipe = load_recipe(recipe_name)
    args = {
        "checks": {c.value for c in recipe.qa.checks},
        "correspondence": recipe.qa.correspondence,
    } | kw
    return evaluate_groups(lr, hr, **args)


def test_band_pairs_follow_the_correspondence_in_lr_order() -> None:
    venus = load_recipe("sen2venus")
    corr = venus.qa.correspondence
    assert band_pairs(venus.lr.groups[0].bands, venus.hr.bands, corr) == (
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
    )
    # B8A shares VENuS B11 with B08.
    assert band_pairs(venus.lr.groups[1].bands, venus.hr.bands, corr) == (
        (0, 4),
        (1, 5),
        (2, 6),
        (3, 3),
    )
    assert band_pairs(("VV",), ("B04", "B03", "B02"), {}) == ()


def test_every_group_of_a_clean_chip_passes() -> None:
    lr, hr = _venus_like()
    res = _evaluate(lr, hr)
    assert res.kept, res.reasons
    assert [(g.role, g.name) for g in res.groups] == [("lr", "10m"), ("hr", "5m"), ("lr", "20m")]
    angles = {g.name: g.spectral_angle_deg for g in res.groups}
    assert angles["10m"] < 1.0 and angles["20m"] < 1.0 and math.isnan(angles["5m"])
    # QA_2 is the largest angle over the LR groups.
    assert res.qa2_deg == max(angles["10m"], angles["20m"])
    assert res.qa1_px < 0.1


def test_spectral_qa_compares_corresponding_bands_only() -> None:
    lr, hr = _venus_like()
    # VENuS bands no S2 band of the 10 m group corresponds to can be anything.
    odd = hr[0].data.copy()
    odd[4:] = odd[4:, ::-1, :]
    kept = _evaluate(lr[:1], [GroupImage("hr", "5m", hr[0].bands, 5.0, odd)])
    assert kept.kept, kept.reasons
    # A wrong correspondence (B02 <-> B11, a NIR band upside down) is caught.
    flipped = hr[0].data.copy()
    flipped[3] = flipped[3].max() + flipped[3].min() - flipped[3]
    wrong = _evaluate(lr[:1], [GroupImage("hr", "5m", hr[0].bands, 5.0, flipped)])
    assert Reason.SPECTRAL in wrong.reasons


def test_defects_in_an_extra_group_reject_the_chip() -> None:
    lr, hr = _venus_like()
    g20 = lr[1]
    nod = g20.data.copy()
    nod[:, 0, 0] = np.nan
    res = _evaluate([lr[0], GroupImage("lr", "20m", g20.bands, 20.0, nod)], hr)
    assert Reason.NODATA in res.reasons
    assert res.nodata_fraction == pytest.approx(1 / (N // 2) ** 2)
    blank = g20.data.copy()
    blank[:, :19, :19] = 0.2
    res = _evaluate([lr[0], GroupImage("lr", "20m", g20.bands, 20.0, blank)], hr)
    assert Reason.BLANK in res.reasons and res.blank_fraction_lr > 0


def test_a_check_the_recipe_leaves_out_measures_but_never_rejects() -> None:
    lr, hr = _venus_like()
    scl = np.full((N, N), 4, np.uint8)
    scl[5:10, 5:10] = 9
    cloudy = _evaluate(lr, hr, scl=scl)
    assert Reason.CLOUD in cloudy.reasons
    recipe = load_recipe("sen2venus")
    checks = {c.value for c in recipe.qa.checks} - {"cloud"}
    res = _evaluate(lr, hr, scl=scl, checks=checks)
    assert res.kept and res.cloud_fraction == pytest.approx(25 / N**2)


def _sen12_like(seed: int = 5) -> tuple[list[GroupImage], list[GroupImage]]:
    recipe = load_recipe("sen12")
    rng = np.random.default_rng(seed)
    # sigma0 in dB: speckled, around -12 dB; nothing like reflectance.
    vv = (-12.0 + 3.0 * rng.standard_normal((1, N, N))).astype(np.float32)
    rgb = _texture(seed, N, 3).astype(np.float32)
    lr = [GroupImage("lr", "vv", recipe.lr.bands, 10.0, vv, sar=True)]
    hr = [GroupImage("hr", "rgb", recipe.hr.bands, 10.0, rgb)]
    return lr, hr


def test_sar_groups_get_sar_checks_not_spectral_or_reflectance_ones() -> None:
    lr, hr = _sen12_like()
    scl = np.full((N, N), 4, np.uint8)
    res = _evaluate(lr, hr, "sen12", scl=scl, scl_role="hr")
    # Negative dB values are fine for SAR; no band corresponds: no shift, no spectral angle.
    assert res.kept, res.reasons
    assert math.isnan(res.qa1_px) and math.isnan(res.qa2_deg) and res.shift.method == "none"
    bright = lr[0].data.copy()
    bright[0, 3, 3] = 60.0  # no backscatter is 60 dB
    res = _evaluate([GroupImage("lr", "vv", ("VV",), 10.0, bright, sar=True)], hr, "sen12")
    assert res.reasons == (Reason.IMPLAUSIBLE_BACKSCATTER,)
    # The same values read as optical reflectance would be implausible everywhere.
    optical = evaluate_groups(
        [GroupImage("lr", "vv", ("VV",), 10.0, lr[0].data)],
        hr,
        checks=ALL_CHECKS,
        correspondence={},
    )
    assert Reason.IMPLAUSIBLE_REFLECTANCE in optical.reasons


def test_the_scl_of_the_hr_sensor_counts_cloud_and_nodata_there() -> None:
    lr, hr = _sen12_like()
    scl = np.full((N, N), 4, np.uint8)
    scl[:4, :4] = 8
    scl[-1, -1] = 0
    res = _evaluate(lr, hr, "sen12", scl=scl, scl_role="hr")
    assert set(res.reasons) == {Reason.CLOUD, Reason.NODATA}
    with pytest.raises(QaError, match="hr grid"):
        _evaluate(lr, hr, "sen12", scl=scl[:10], scl_role="hr")


def test_non_integer_ratio_groups_are_checked() -> None:
    # Sentinel-HR: S2 at 12.5 m over VENuS at 5 m (ratio 5/2).
    truth = _texture(9, 80, 4).astype(np.float32)
    lr_data = area_resample(truth, Fraction(5, 2)).astype(np.float32)
    lr = [GroupImage("lr", "12m5", ("B02", "B03", "B04", "B08"), 12.5, lr_data)]
    hr = [GroupImage("hr", "5m", ("B3", "B4", "B7", "B11"), 5.0, truth)]
    corr = {"B02": "B3", "B03": "B4", "B04": "B7", "B08": "B11"}
    res = evaluate_groups(lr, hr, checks=ALL_CHECKS - {"backscatter_range"}, correspondence=corr)
    assert res.kept, res.reasons
    assert res.qa1_px < 0.05 and res.qa2_deg < 0.5


def test_one_group_pair_gives_exactly_evaluate_chip_numbers() -> None:
    # The SEN2NAIP path: evaluate_groups of one LR and one HR group is evaluate_chip.
    lr_data = _texture(2, 32, 4).astype(np.float32)
    hr_data = _upsample(lr_data, 4, 3).astype(np.float32)
    scl = np.full((32, 32), 4, np.uint8)
    scl[0, :3] = 9
    scl[5, 5] = 1
    lr_data[:, 7, 7] = np.nan
    hr_data[:, 0, 0] = 1.0
    t = QaThresholds(max_cloud_fraction=0.5)
    bands = ("B04", "B03", "B02", "B08")
    hr_bands = ("red", "green", "blue", "nir")
    groups = evaluate_groups(
        [GroupImage("lr", "rgbnir", bands, 10.0, lr_data)],
        [GroupImage("hr", "rgbnir", hr_bands, 2.5, hr_data, saturation=0.9)],
        checks=ALL_CHECKS,
        correspondence=dict(zip(bands, hr_bands, strict=True)),
        scl=scl,
        thresholds=t,
    )
    single = evaluate_chip(
        lr_data,
        block_mean(hr_data, 4),
        hr=hr_data,
        scl=scl,
        hr_saturation=0.9,
        gsd_m=10.0,
        thresholds=t,
    )
    a, b = groups.as_row(), single.as_row()
    assert a.keys() == b.keys()
    for key in a:
        same_nan = isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key])
        assert a[key] == b[key] or same_nan, key
    assert groups.reasons == single.reasons == (Reason.NODATA, Reason.SATURATED)
