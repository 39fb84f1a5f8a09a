"""The Sentinel-HR benchmark's metrics: CE90/CE99, structural R, NDVI, gradient strata, the report.

Each metric against a case computed by hand and, where one exists, an independent
implementation (scikit-image, scikit-learn, numpy).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.filters import sobel as skimage_sobel
from skimage.metrics import peak_signal_noise_ratio
from sklearn.metrics import mean_absolute_error, mean_squared_error

from harvest import metrics
from harvest.metrics import MetricInputError, evaluate_image, gradient_strata


def _scene(seed: int = 0, size: int = 48) -> np.ndarray:
    """A smooth 4-band reflectance image with edges (fields of different brightness)."""
    rng = np.random.default_rng(seed)
    fields = np.kron(rng.random((4, size // 8, size // 8)), np.ones((8, 8)))
    return 0.05 + 0.4 * fields + rng.normal(0, 0.01, (4, size, size))


def test_ce90_and_ce99_are_percentiles_of_the_absolute_error_by_hand() -> None:
    ref = np.zeros((1, 100))
    pred = -np.arange(1, 101, dtype=float)[None]  # absolute errors 1..100
    # numpy's linear percentile: position 0.9 * 99 = 89.1 between 90 and 91.
    assert metrics.ce(pred, ref, 90) == pytest.approx(90.1)
    assert metrics.ce(pred, ref, 99) == pytest.approx(99.01)
    with pytest.raises(MetricInputError, match="percentile"):
        metrics.ce(pred, ref, 101)


def test_rmse_mae_psnr_match_scikit_learn_and_scikit_image() -> None:
    ref = _scene(1)
    pred = ref + np.random.default_rng(2).normal(0, 0.02, ref.shape)
    assert metrics.rmse(pred, ref) == pytest.approx(
        math.sqrt(mean_squared_error(ref.ravel(), pred.ravel()))
    )
    assert metrics.mae(pred, ref) == pytest.approx(mean_absolute_error(ref.ravel(), pred.ravel()))
    assert metrics.psnr(pred, ref, 1.0) == pytest.approx(
        peak_signal_noise_ratio(ref, pred, data_range=1.0)
    )


def test_structural_r_is_one_for_an_affine_copy_and_matches_scikit_image_sobel() -> None:
    ref = _scene(3)
    # A gain and an offset keep every edge: correlation of gradient magnitudes 1.
    assert metrics.structural_r(2.0 * ref + 0.1, ref) == pytest.approx(1.0)
    blurred = (ref + np.roll(ref, 1, axis=-1) + np.roll(ref, 1, axis=-2)) / 3
    got = metrics.structural_r(blurred, ref)
    assert 0.3 < got < 0.999
    # scikit-image's Sobel magnitude is ours times a constant away from the edges: on the
    # interior both give the same correlation.
    inner = np.zeros(ref.shape[-2:], bool)
    inner[2:-2, 2:-2] = True
    want = np.mean(
        [
            np.corrcoef(skimage_sobel(blurred[b])[inner], skimage_sobel(ref[b])[inner])[0, 1]
            for b in range(4)
        ]
    )
    assert metrics.structural_r(blurred, ref, inner) == pytest.approx(want, abs=1e-9)


def test_ndvi_by_hand_and_where_it_is_undefined() -> None:
    img = np.array([[[0.1, 0.0]], [[0.5, 0.0]]])  # band 0 red, band 1 nir; 1 x 2 pixels
    values, defined = metrics.ndvi(img, red=0, nir=1)
    assert values[0, 0] == pytest.approx((0.5 - 0.1) / (0.5 + 0.1))
    assert defined.tolist() == [[True, False]]
    with pytest.raises(MetricInputError, match="nir band index 5"):
        metrics.ndvi(img, red=0, nir=5)


def test_gradient_strata_hold_exact_shares_and_split_by_the_reference_gradient() -> None:
    ref = _scene(4)
    valid = np.ones(ref.shape[-2:], bool)
    valid[10:14, 20:30] = False
    strata = dict(gradient_strata(ref, valid))
    assert list(strata) == ["all", "low_gradient_50", "high_gradient_25"]
    assert strata["all"].sum() == valid.sum()
    # Ranked among pixels whose 3 x 3 neighbourhood is valid: 6 x 12 around the hole are not.
    trusted = valid.size - 6 * 12
    assert strata["low_gradient_50"].sum() == trusted // 2
    assert strata["high_gradient_25"].sum() == trusted // 4
    for name in ("low_gradient_50", "high_gradient_25"):
        assert not (strata[name] & ~valid).any()
        grown = np.zeros_like(valid)
        grown[9:15, 19:31] = True
        assert not (strata[name] & grown).any()
    g = metrics.gradient_magnitude(ref).mean(axis=0)
    assert g[strata["low_gradient_50"]].max() <= g[strata["high_gradient_25"]].min()


def test_evaluate_image_scores_every_band_stratum_and_ndvi() -> None:
    ref = _scene(5)
    pred = ref + np.random.default_rng(6).normal(0, 0.01, ref.shape)
    ev = evaluate_image(pred, ref, None, ["red", "green", "blue", "nir"], red=0, nir=3)
    by_name = {s.name: s for s in ev.strata}
    assert list(by_name) == list(metrics.STRATA)
    all_px = by_name["all"]
    assert all_px.pixels == 48 * 48
    red = dict(all_px.bands)["red"]
    assert red.rmse == pytest.approx(metrics.rmse(pred[:1], ref[:1]))
    assert red.ce99 == pytest.approx(np.percentile(np.abs(pred[0] - ref[0]), 99))
    assert red.uiqi == pytest.approx(metrics.uiqi(pred[:1], ref[:1]))
    assert all_px.sam_deg == pytest.approx(metrics.sam(pred, ref))
    assert all_px.ergas == pytest.approx(metrics.ergas(pred, ref, 0.25))
    nd_pred, _ = metrics.ndvi(pred, 0, 3)
    nd_ref, _ = metrics.ndvi(ref, 0, 3)
    assert all_px.ndvi is not None
    assert all_px.ndvi.mae == pytest.approx(np.mean(np.abs(nd_pred - nd_ref)))
    # The noise is the same everywhere but edges are large gradients: the structural
    # correlation is higher on the high-gradient stratum.
    high = dict(by_name["high_gradient_25"].bands)["red"]
    low = dict(by_name["low_gradient_50"].bands)["red"]
    assert high.struct_r > low.struct_r


def test_evaluate_image_masks_nan_and_reports_equal_images_as_infinite_psnr() -> None:
    ref = _scene(7)
    pred = ref.copy()
    pred[:, 0, 0] = np.nan
    ev = evaluate_image(pred, ref)
    assert ev.strata[0].pixels == 48 * 48 - 1
    out = ev.to_dict()
    assert out["all"]["bands"]["band1"]["psnr_db"] == "inf"
    assert out["all"]["bands"]["band1"]["rmse"] == 0.0
    assert out["all"]["ndvi"] is None
    # A constant band has no UIQI or structure: None in the report, not an error.
    flat = np.ones((1, 16, 16)) * 0.2
    bands = evaluate_image(flat + 0.01, flat).to_dict()["all"]["bands"]["band1"]
    assert (
        bands["uiqi"] is None and bands["struct_r"] is None and bands["rmse"] == pytest.approx(0.01)
    )
    with pytest.raises(MetricInputError, match="no pixel is valid"):
        evaluate_image(pred, ref, np.zeros((48, 48), bool))
