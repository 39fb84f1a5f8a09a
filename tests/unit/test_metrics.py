"""Metrics on tiny arrays whose values can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harvest import metrics
from harvest.metrics import MetricInputError


def test_rmse_mae_psnr_by_hand() -> None:
    ref = np.zeros((1, 2, 2))
    pred = np.array([[[1.0, -1.0], [3.0, 0.0]]])
    assert metrics.mae(pred, ref) == pytest.approx(5 / 4)
    assert metrics.rmse(pred, ref) == pytest.approx(math.sqrt(11 / 4))
    # MSE 0.01 with data range 1 -> 20 dB.
    assert metrics.psnr(np.full((2, 2), 0.1), np.zeros((2, 2)), 1.0) == pytest.approx(20.0)
    assert metrics.psnr(ref, ref) == math.inf


def test_sam_in_degrees() -> None:
    # Two-band spectra: (1, 0) vs (1, 1) is 45 degrees; (0, 2) vs (0, 5) is 0 degrees.
    pred = np.array([[1.0, 0.0], [0.0, 2.0]])  # [bands, pixels]
    ref = np.array([[1.0, 0.0], [1.0, 5.0]])
    assert metrics.sam(pred, ref) == pytest.approx(22.5)
    # All-zero spectra are skipped.
    pred_z = np.array([[1.0, 0.0], [0.0, 0.0]])
    ref_z = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert metrics.sam(pred_z, ref_z) == pytest.approx(45.0)


def test_ergas_by_hand() -> None:
    ref = np.array([[[2.0, 2.0]], [[4.0, 4.0]]])  # band means 2 and 4
    pred = ref + np.array([[[1.0, -1.0]], [[2.0, 2.0]]])  # band RMSE 1 and 2
    # 100 * 0.25 * sqrt(mean(1/4, 4/16)) = 25 * 0.5
    assert metrics.ergas(pred, ref, ratio=0.25) == pytest.approx(12.5)


def test_uiqi_pearson_pbias_by_hand() -> None:
    ref = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert metrics.uiqi(ref, ref) == pytest.approx(1.0)
    assert metrics.pearson(2 * ref + 1, ref) == pytest.approx(1.0)
    assert metrics.pearson(-ref, ref) == pytest.approx(-1.0)
    # Shifted by +1: cov = var = 1.25, means 2.5 and 3.5 -> 4*1.25*2.5*3.5/(2.5*(6.25+12.25)).
    assert metrics.uiqi(ref + 1, ref) == pytest.approx(4 * 1.25 * 2.5 * 3.5 / (2.5 * 18.5))
    assert metrics.pbias(ref * 1.1, ref) == pytest.approx(10.0)
    assert metrics.pbias(ref - 0.5, ref) == pytest.approx(-20.0)


def test_compare_collects_everything_and_errors_are_one_line() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((4, 8, 8)) + 0.1
    out = metrics.compare(ref, ref)
    assert out.rmse == 0 and out.mae == 0 and out.psnr_db == math.inf and out.pearson == 1
    assert out.sam_deg == pytest.approx(0.0, abs=1e-6) and out.pbias_pct == 0
    with pytest.raises(MetricInputError, match="differ in shape"):
        metrics.rmse(ref, ref[:3])
    with pytest.raises(MetricInputError, match="constant"):
        metrics.pearson(np.ones((1, 4)), ref[:1, 0, :4])


def test_pearson_joint_sees_the_relation_between_bands() -> None:
    ref = np.array([[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]])
    # Each band right up to a gain, but the bands' proportions swapped: per band perfect,
    # jointly not.
    pred = np.stack([ref[0] * 5.0, ref[1] * 0.2])
    assert metrics.pearson(pred, ref) == pytest.approx(1.0)
    assert metrics.pearson_joint(pred, ref) < 0.5
    assert metrics.pearson_joint(ref * 3.0 + 1.0, ref) == pytest.approx(1.0)
    # By hand: [1, 2, 3, 4] and [2, 4, 6, 9] (means 2.5, 5.25): 11.5 / sqrt(5 * 26.75).
    a = np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 1, 2)
    b = np.array([2.0, 4.0, 6.0, 9.0]).reshape(2, 1, 2)
    assert metrics.pearson_joint(a, b) == pytest.approx(11.5 / math.sqrt(5 * 26.75))


def test_opensr_test_pbias_and_image_angle_by_hand() -> None:
    ref = np.array([[[0.1, 0.2], [0.4, 0.0]]])  # one band, 2 x 2; one zero pixel
    pred = np.array([[[0.2, 0.2], [0.3, 0.0]]])
    # ratios |p - r| / r: 1.0, 0 -> clamped 0.01, 0.25, 0 / 0 -> 0.01
    assert metrics.pbias_ratio(pred, ref) == pytest.approx((1.0 + 0.01 + 0.25 + 0.01) / 4)
    # A huge error is clamped to 100; a negative reference counts as the lower clamp.
    assert metrics.pbias_ratio(np.array([[50.0]]), np.array([[0.1]])) == pytest.approx(100.0)
    assert metrics.pbias_ratio(np.array([[0.2]]), np.array([[-0.1]])) == pytest.approx(0.01)
    assert metrics.pbias_ratio(ref, ref) == pytest.approx(0.01)  # the best possible value

    a = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two bands, two pixels
    b = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])
    # Per pixel the spectra are orthogonal (90 degrees each); flattened, (1,0,0,1) and
    # (0,1,1,0) are orthogonal too. Another pair tells the two apart:
    assert metrics.sam_image(a, b) == pytest.approx(90.0)
    c = np.array([[[1.0, 1.0]], [[0.0, 0.0]]])
    d = np.array([[[1.0, 2.0]], [[0.0, 0.0]]])
    # per pixel both spectra point the same way (0 degrees); flattened, (1,1,0,0) vs (1,2,0,0)
    assert metrics.sam(c, d) == pytest.approx(0.0, abs=1e-6)
    expected = math.degrees(math.acos(3.0 / (math.sqrt(2.0) * math.sqrt(5.0))))
    assert metrics.sam_image(c, d) == pytest.approx(expected)
    with pytest.raises(MetricInputError, match="all zeros"):
        metrics.sam_image(np.zeros((2, 1, 2)), d)
