import math

import numpy as np
import pytest
from scipy import ndimage

from harvest.errors import QaError
from harvest.qa import (
    QaThresholds,
    Reason,
    ShiftEstimate,
    blank_fraction,
    blank_windows,
    block_mean,
    cloud_fractions,
    correct_shift,
    evaluate_chip,
    implausible_fraction,
    local_variance,
    nodata_fraction,
    phase_correlation,
    saturated_fraction,
    sift_shift,
    spectral_angle_deg,
    spectral_qa,
)

N = 121


def _texture(seed: int, n: int = N, bands: int = 4) -> np.ndarray:
    """Reflectance-like texture: shared structure at two scales plus per-band detail."""
    rng = np.random.default_rng(seed)
    common = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.5) + 0.5 * ndimage.gaussian_filter(
        rng.normal(size=(n, n)), 6.0
    )
    own = ndimage.gaussian_filter(rng.normal(size=(bands, n, n)), (0, 1.5, 1.5))
    img = 0.8 * common[None] / common.std() + 0.2 * own / own.std()
    levels = np.array([0.12, 0.14, 0.1, 0.3])[:bands, None, None]
    return levels + 0.02 * img


def _fourier_shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Move the content by (dx, dy) pixels: ``out(x) = img(x - d)`` (periodic)."""
    ky = np.fft.fftfreq(img.shape[-2])[:, None]
    kx = np.fft.fftfreq(img.shape[-1])[None, :]
    ramp = np.exp(-2j * np.pi * (kx * dx + ky * dy))
    return np.fft.ifft2(np.fft.fft2(img) * ramp).real


def _shifted_pair(seed: int, dx: float, dy: float, noise: float = 0.0005):
    rng = np.random.default_rng(seed + 1000)
    hr_at_lr = _texture(seed)
    lr = _fourier_shift(hr_at_lr, dx, dy) + rng.normal(0.0, noise, hr_at_lr.shape)
    return lr, hr_at_lr


# ------------------------------------------------------------------ nodata, cloud, range


def test_nodata_fraction_nan_fill_value_and_mask() -> None:
    img = np.full((4, 10, 10), 0.2)
    assert nodata_fraction(img) == 0.0
    img[2, 0, :5] = np.nan  # one band missing counts
    assert nodata_fraction(img) == pytest.approx(5 / 100)
    img[:, 9, :] = 0.0
    assert nodata_fraction(img, nodata=0.0) == pytest.approx(15 / 100)
    mask = np.zeros((10, 10), bool)
    mask[5, 5] = True
    assert nodata_fraction(img, nodata=0.0, invalid=mask) == pytest.approx(16 / 100)
    dn = np.ones((2, 4, 5), dtype=np.uint16)
    dn[:, 0, 0] = 0
    assert nodata_fraction(dn, nodata=0) == pytest.approx(1 / 20)


def test_cloud_and_shadow_fractions_from_scl_and_masks() -> None:
    scl = np.full((10, 10), 4, dtype=np.uint8)  # vegetation
    scl[0, :3] = [8, 9, 10]  # cloud medium, high, cirrus
    scl[1, :2] = 3  # shadow
    scl[2, :4] = [2, 5, 6, 7]  # dark area, bare, water, unclassified: none count
    cloud, shadow = cloud_fractions(scl)
    assert (cloud, shadow) == (pytest.approx(0.03), pytest.approx(0.02))
    extra = np.zeros((10, 10), bool)
    extra[9, 9] = True
    extra[0, 0] = True  # already cloudy in SCL: counted once
    assert cloud_fractions(scl, cloud=extra)[0] == pytest.approx(0.04)
    assert cloud_fractions(cloud=extra, shadow=extra) == (pytest.approx(0.02), pytest.approx(0.02))
    assert cloud_fractions() == (0.0, 0.0)
    with pytest.raises(QaError, match="shape"):
        cloud_fractions(scl, cloud=np.zeros((5, 5), bool))


def test_implausible_and_saturated_fractions() -> None:
    img = np.full((2, 10, 10), 0.3)
    assert implausible_fraction(img) == 0.0
    img[0, 0, 0] = -0.01
    img[1, 0, 1] = 1.3
    assert implausible_fraction(img) == pytest.approx(2 / 200)
    img[1, 0, 2] = 1.2  # the range ends are plausible
    assert implausible_fraction(img) == pytest.approx(2 / 200)
    assert saturated_fraction(img) == 0.0
    assert saturated_fraction(img, saturation=1.0) == pytest.approx(2 / 100)
    mask = np.zeros((10, 10), bool)
    mask[5] = True
    assert saturated_fraction(img, saturated=mask) == pytest.approx(0.1)


def test_block_mean_area_averages() -> None:
    hr = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    out = block_mean(hr, 4)
    assert out.shape == (2, 2, 2)
    assert out[1, 1, 0] == hr[1, 4:8, 0:4].mean()
    with pytest.raises(QaError, match="multiples"):
        block_mean(hr, 3)


# ------------------------------------------------------------------ blank detection


def _brute_variance(band: np.ndarray, k: int) -> np.ndarray:
    h, w = band.shape
    out = np.empty((h - k + 1, w - k + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.var(band[i : i + k, j : j + k].astype(np.float64))
    return out


def test_local_variance_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    dn = rng.integers(0, 10_000, (30, 34), dtype=np.uint16)
    np.testing.assert_allclose(local_variance(dn, 7), _brute_variance(dn, 7), rtol=1e-12)
    refl = dn / 10_000.0
    np.testing.assert_allclose(local_variance(refl, 7), _brute_variance(refl, 7), rtol=1e-9)


def test_constant_patch_is_exactly_zero_despite_large_values() -> None:
    rng = np.random.default_rng(2)
    dn = rng.integers(9_000, 12_000, (60, 60), dtype=np.uint16)
    dn[10:29, 20:39] = 11_111  # exactly 19 x 19
    var = local_variance(dn, 19)
    assert var[10, 20] == 0.0
    assert np.count_nonzero(var == 0.0) == 1
    assert var[var > 0].min() >= 1 / 19**4  # textured windows are never (nearly) zero
    # The same in float reflectance whose values are not integers (0.3 is inexact in binary).
    refl = (dn / 10_000.0).astype(np.float32)
    refl[10:29, 20:39] = 0.3
    var = local_variance(refl, 19)
    assert var[10, 20] == 0.0 and np.count_nonzero(var == 0.0) == 1
    # One pixel a hair off makes the window textured, however small the difference.
    refl[20, 30] = np.nextafter(np.float32(0.3), np.float32(1.0))
    assert np.count_nonzero(local_variance(refl, 19) == 0.0) == 0


def test_blank_detection_rules() -> None:
    rng = np.random.default_rng(3)
    # Integer NAIP-like DN with smooth texture: never blank.
    smooth = ndimage.gaussian_filter(rng.normal(size=(3, 484, 484)), (0, 3, 3))
    dn = np.clip(120 + 400 * smooth, 0, 255).round().astype(np.uint8)
    assert np.unique(dn).size > 50
    assert blank_fraction(dn) == 0.0
    # A constant 18 x 18 patch is smaller than the window: not flagged.
    small = dn.copy()
    small[:, 100:118, 200:218] = 0
    assert blank_fraction(small) == 0.0
    # 19 x 19: flagged (exactly one window position).
    big = dn.copy()
    big[:, 100:119, 200:219] = 0
    windows = blank_windows(big)
    assert windows.sum() == 1 and windows[100, 200]
    # Constant in one band only: a blank window under "any_band", not under "all_bands".
    one = dn.copy()
    one[2, 300:340, 300:340] = 255
    assert blank_fraction(one, rule="all_bands") == 0.0
    assert blank_windows(one, rule="any_band").sum() == (40 - 18) ** 2


def test_non_finite_windows_are_not_blank() -> None:
    img = np.full((40, 40), 0.25)
    img[0, 0] = np.nan
    var = local_variance(img, 19)
    assert math.isnan(var[0, 0])
    assert var[21, 21] == 0.0


# ------------------------------------------------------------------ shift estimation


@pytest.mark.parametrize(("dx", "dy"), [(0.3, -0.45), (-0.7, 0.2), (1.4, 0.6)])
def test_phase_correlation_recovers_sub_pixel_shifts(dx: float, dy: float) -> None:
    lr, hr = _shifted_pair(4, dx, dy)
    est = phase_correlation(lr, hr)
    assert abs(est.dx_px - dx) < 0.1 and abs(est.dy_px - dy) < 0.1
    assert est.magnitude_px == pytest.approx(math.hypot(dx, dy), abs=0.1)


@pytest.mark.parametrize(("dx", "dy"), [(0.3, -0.45), (-0.7, 0.2)])
def test_sift_recovers_sub_pixel_shifts(dx: float, dy: float) -> None:
    lr, hr = _shifted_pair(5, dx, dy)
    est = sift_shift(lr, hr)
    assert est.method == "sift" and est.n_matches >= 20
    assert abs(est.dx_px - dx) < 0.1 and abs(est.dy_px - dy) < 0.1


def test_masked_estimators_ignore_invalid_pixels() -> None:
    dx, dy = 0.3, -0.45
    lr, hr = _shifted_pair(6, dx, dy)
    valid = np.ones((N, N), bool)
    valid[:, 40:56] = False  # a band of invalid pixels (e.g. a nodata stripe)
    lr[:, ~valid] = 0.0  # garbage there, identical in every chip: it would pin the shift to 0
    hr[:, 60:70, ~valid[0]] = 0.9
    for est in (phase_correlation(lr, hr, valid), sift_shift(lr, hr, valid)):
        assert abs(est.dx_px - dx) < 0.1 and abs(est.dy_px - dy) < 0.1, est
    # NaN marks invalid pixels too.
    lr_nan = lr.copy()
    lr_nan[:, ~valid] = np.nan
    est = phase_correlation(lr_nan, hr)
    assert abs(est.dx_px - dx) < 0.1 and abs(est.dy_px - dy) < 0.1


def test_sign_convention() -> None:
    # LR content displaced 1 column east and half a row north of where HR has it.
    lr, hr = _shifted_pair(7, 1.0, -0.5)
    bump = np.zeros((1, N, N))
    bump[0, 60, 60] = 1.0
    moved = _fourier_shift(bump, 1.0, -0.5)[0]
    # The Fourier shift itself puts the feature east (higher column) and north (lower row).
    cy, cx = ndimage.center_of_mass(np.maximum(moved, 0) ** 4)
    assert cx > 60.5 and cy < 59.8
    for est in (phase_correlation(lr, hr), sift_shift(lr, hr)):
        assert est.dx_px == pytest.approx(1.0, abs=0.1)
        assert est.dy_px == pytest.approx(-0.5, abs=0.1)
        assert est.east_m == pytest.approx(10.0, abs=1.0)
        assert est.north_m == pytest.approx(5.0, abs=1.0)
    # Integer displacement by np.roll: 2 columns east, 1 row north.
    rolled = np.roll(hr, (-1, 2), axis=(-2, -1))
    est = phase_correlation(rolled, hr)
    assert (est.dx_px, est.dy_px) == (pytest.approx(2.0, abs=0.05), pytest.approx(-1.0, abs=0.05))


def test_correction_reduces_the_residual() -> None:
    lr, hr = _shifted_pair(8, 0.6, -0.8, noise=0.0)
    est = phase_correlation(lr, hr)
    fixed = correct_shift(lr, est)
    inner = (slice(None), slice(5, -5), slice(5, -5))

    def rmse(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean((x[inner] - hr[inner]) ** 2)))

    assert rmse(fixed) < 0.1 * rmse(lr)
    assert phase_correlation(fixed, hr).magnitude_px < 0.05
    with pytest.raises(QaError, match="failed"):
        correct_shift(lr, ShiftEstimate(math.nan, math.nan, 10.0, "sift"))


def test_estimators_fail_cleanly_without_texture() -> None:
    flat = np.full((4, N, N), 0.2)
    assert not phase_correlation(flat, flat).ok
    sift = sift_shift(flat, flat)
    assert not sift.ok and sift.n_matches == 0
    mostly_invalid = np.zeros((N, N), bool)
    mostly_invalid[:10] = True
    lr, hr = _shifted_pair(9, 0.2, 0.2)
    assert not phase_correlation(lr, hr, mostly_invalid).ok


# ------------------------------------------------------------------ spectral


def test_spectral_angle_known_values() -> None:
    a = np.zeros((3, 5, 5))
    a[0] = 1.0
    b = np.zeros((3, 5, 5))
    b[0], b[1] = 1.0, 1.0
    assert spectral_angle_deg(a, b) == pytest.approx(45.0)
    theta = np.radians(10.0)
    c = np.zeros((3, 5, 5))
    c[0], c[2] = np.cos(theta), np.sin(theta)
    # Half the pixels at 10 degrees, half identical: the mean is 5 degrees.
    c[:, :, :2] = a[:, :, :2]
    expected = (10.0 * 15 + 0.0 * 10) / 25
    assert spectral_angle_deg(a * 0.3, c) == pytest.approx(expected)
    assert spectral_angle_deg(a, a * 7.0) == pytest.approx(0.0, abs=1e-6)


def test_spectral_qa_after_histogram_matching() -> None:
    lr = _texture(10)
    assert spectral_qa(lr, lr) == pytest.approx(0.0, abs=1e-6)
    # Per-band gains and offsets (another sensor's radiometry): matching removes them.
    gains = np.array([1.6, 0.7, 2.0, 0.9])[:, None, None]
    offsets = np.array([0.02, 0.05, -0.01, 0.1])[:, None, None]
    hr = gains * lr + offsets
    assert spectral_angle_deg(lr, hr) > 2.0
    assert spectral_qa(lr, hr) == pytest.approx(0.0, abs=1e-4)
    # An inverted red pattern (another scene, a wrong band) cannot be matched away.
    wrong = lr.copy()
    wrong[0] = -lr[0]
    assert spectral_qa(lr, wrong) > 2.0


# ------------------------------------------------------------------ evaluate_chip


def _clean_pair(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lr, hr_at_lr = _shifted_pair(seed, 0.2, -0.1)
    hr = np.repeat(np.repeat(hr_at_lr, 4, axis=-2), 4, axis=-1)
    hr = hr + np.random.default_rng(seed).normal(0, 0.002, hr.shape)
    return lr, hr_at_lr, hr


def test_clean_chip_is_kept_with_every_metric() -> None:
    lr, hr_at_lr, hr = _clean_pair()
    scl = np.full((N, N), 4, dtype=np.uint8)
    res = evaluate_chip(lr, hr_at_lr, hr=hr, scl=scl)
    assert res.kept and res.reasons == ()
    assert res.qa1_px == pytest.approx(math.hypot(0.2, 0.1), abs=0.05)
    assert res.qa2_deg < 2.0
    assert res.nodata_fraction == res.cloud_fraction == res.blank_fraction_hr == 0.0
    row = res.as_row()
    assert row["kept"] is True and row["reasons"] == ""
    assert row["shift_method"] == "phase" and row["qa1_px"] == res.qa1_px
    sift = evaluate_chip(lr, hr_at_lr, thresholds=QaThresholds(shift_method="sift"))
    assert sift.kept and sift.shift.n_matches >= 5
    assert sift.qa1_px == pytest.approx(res.qa1_px, abs=0.1)


def test_each_defect_gives_its_reason_code() -> None:
    lr, hr_at_lr, hr = _clean_pair()
    scl = np.full((N, N), 4, dtype=np.uint8)

    def reasons(**kw) -> set[Reason]:
        args = {"lr": lr, "hr_at_lr": hr_at_lr, "hr": hr, "scl": scl} | kw
        return set(evaluate_chip(**args).reasons)

    cloudy = scl.copy()
    cloudy[3, 3] = 9
    assert reasons(scl=cloudy) == {Reason.CLOUD}
    shadowy = scl.copy()
    shadowy[3, 3] = 3
    assert reasons(scl=shadowy) == {Reason.CLOUD_SHADOW}
    nod = lr.copy()
    nod[:, 0, :] = np.nan
    assert reasons(lr=nod) == {Reason.NODATA}
    scl_nodata = scl.copy()
    scl_nodata[0, 0] = 0
    assert reasons(scl=scl_nodata) == {Reason.NODATA}
    blank = hr.copy()
    blank[:, 200:219, 200:219] = 0.1
    assert reasons(hr=blank) == {Reason.BLANK}
    far = _fourier_shift(hr_at_lr, 1.3, 0.9)
    assert reasons(lr=far) == {Reason.SHIFT}
    wrong = hr_at_lr.copy()
    wrong[0] = hr_at_lr[0].max() + hr_at_lr[0].min() - hr_at_lr[0]
    assert reasons(hr_at_lr=wrong) == {Reason.SPECTRAL}
    bright = hr_at_lr.copy()
    bright[:, 5, 5] = 1.5
    assert Reason.IMPLAUSIBLE_REFLECTANCE in reasons(hr_at_lr=bright)
    assert reasons(hr_saturation=0.35) == {Reason.SATURATED}  # NIR peaks above 0.35
    assert reasons(lr=np.full_like(lr, 0.2)) >= {Reason.BLANK, Reason.REGISTRATION_FAILED}
    # Looser thresholds accept the same defects.
    loose = QaThresholds(max_cloud_fraction=0.01, max_shift_px=2.0)
    assert evaluate_chip(lr, hr_at_lr, scl=cloudy, thresholds=loose).kept
    assert evaluate_chip(far, hr_at_lr, thresholds=loose).kept


def test_evaluate_rejects_mismatched_shapes() -> None:
    lr, hr_at_lr, _ = _clean_pair()
    with pytest.raises(QaError, match="LR grid"):
        evaluate_chip(lr, hr_at_lr[:, :100])
    with pytest.raises(QaError, match="scl"):
        evaluate_chip(lr, hr_at_lr, scl=np.zeros((60, 60), np.uint8))


def test_blank_windows_agree_with_zero_local_variance() -> None:
    rng = np.random.default_rng(12)
    dn = rng.integers(0, 4, (2, 70, 80)).astype(np.uint16)  # few levels: some constant windows
    dn[:, 5:30, 7:40] = 3
    dn[1, 40:62, 50:75] = 1
    for img in (dn, dn / 7.0):  # integer and non-integer floats
        for b in range(2):
            zero = local_variance(img[b], 19) == 0.0
            assert zero.any()
            np.testing.assert_array_equal(blank_windows(img[b]), zero)
