"""The fits on in-memory pairs: shifts per scene, the joint gamma/sigma/shift/noise fit, Table 2.

No files: the pairs are :class:`PairChip` values built from arrays, rendered with a known PSF,
power law, misregistration and noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.fit import (
    TRAINABLE,
    PairChip,
    RegisteredPSF,
    fit_pairs,
    registration_shifts,
    table2,
    train_networks,
)
from degradation.pretrained import load_model
from degradation.psf import blur

GSD_M = 2.5
SIGMA_PX = np.array([2.5, 2.8, 3.0, 3.3])
GAMMA = np.array([0.40, 0.42, 0.45, 0.50])
SHIFT_M = (3.0, -2.0)
NOISE = 0.002


def _chip(roi: str, scene: str, shift_m: tuple[float, float], corrected: bool = False) -> PairChip:
    z = np.zeros((4, 8, 8), np.float32)
    return PairChip(roi, scene, "train", z, z[:, :2, :2], shift_m, corrected, GSD_M)


def _rendered_pairs(n: int, seed: int = 0) -> list[PairChip]:
    """Chips of one scene: LR = blur(HR ** (1 / gamma)) moved by SHIFT_M, plus noise."""
    rng = np.random.default_rng(seed)
    chips = []
    for k in range(n):
        hr = np.asarray(blur(rng.random((4, 128, 128), dtype=np.float32), 1.5))
        hr = (0.05 + 0.5 * (hr - hr.min()) / (hr.max() - hr.min())).astype(np.float32)
        hr_h = torch.from_numpy((hr ** (1 / GAMMA[:, None, None]))[None].astype(np.float32))
        lr = RegisteredPSF((SHIFT_M,), GSD_M, 4, (128, 128))(hr_h, SIGMA_PX)[0].numpy()
        lr = (lr + rng.normal(0, NOISE, lr.shape)).astype(np.float32)
        # The fetch stage's estimate is a few decimetres off: the fit refines it.
        estimate = (SHIFT_M[0] + 0.3, SHIFT_M[1] - 0.2)
        chips.append(PairChip(f"ROI_{k}", "S2A_scene", "train", hr, lr, estimate, False, GSD_M))
    return chips


def test_scene_shifts_are_the_median_of_the_scene_and_corrected_chips_get_none() -> None:
    chips = [
        _chip("a", "s1", (1.0, 0.0)),
        _chip("b", "s1", (3.0, 2.0)),
        _chip("c", "s1", (2.0, 9.0)),
        _chip("d", "s2", (-1.0, -1.0)),
        _chip("e", "s2", (5.0, 5.0), corrected=True),
    ]
    assert registration_shifts(chips, "scene") == [
        (2.0, 2.0),
        (2.0, 2.0),
        (2.0, 2.0),
        (-1.0, -1.0),
        (0.0, 0.0),
    ]
    assert registration_shifts(chips, "chip")[1:] == [(3.0, 2.0), (2.0, 9.0), (-1.0, -1.0), (0, 0)]
    assert registration_shifts(chips, "none") == [(0.0, 0.0)] * 5
    with pytest.raises(DegradationError, match="shift mode must be one of"):
        registration_shifts(chips, "median")


def test_fit_pairs_recovers_sigma_gamma_shift_and_noise_from_arrays() -> None:
    chips = _rendered_pairs(2)
    calls: list[None] = []
    fit = fit_pairs(chips, iterations=1, progress=lambda: calls.append(None))
    assert len(calls) == 1  # one scene, one round
    np.testing.assert_allclose(fit.sigma_px, SIGMA_PX, atol=0.1)
    np.testing.assert_allclose(fit.gammas, np.stack([GAMMA, GAMMA]), atol=0.005)
    (scene,) = fit.scenes
    assert scene.roi_ids == ("ROI_0", "ROI_1")
    assert np.hypot(scene.shift_m[0] - SHIFT_M[0], scene.shift_m[1] - SHIFT_M[1]) <= 0.1
    np.testing.assert_allclose(fit.noise_std, NOISE, rtol=0.2)


def test_fit_pairs_and_train_networks_refuse_bad_arguments() -> None:
    chips = [_chip("a", "s1", (0.0, 0.0))]
    with pytest.raises(DegradationError, match="iterations must be >= 1"):
        fit_pairs(chips, iterations=0)
    with pytest.raises(DegradationError, match="cannot train"):
        train_networks(chips, ("gan",))
    assert TRAINABLE == ("unet", "vae")


def test_table2_scores_every_method_with_the_callers_metrics_in_their_order() -> None:
    chips = _rendered_pairs(1, seed=3)
    model = load_model("sen2naip")

    def bias(pred: np.ndarray, ref: np.ndarray) -> float:
        return float(np.mean(pred - ref))

    def mae(pred: np.ndarray, ref: np.ndarray) -> float:
        assert pred.dtype == np.float64 and pred.shape == ref.shape == (4, 32, 32)
        return float(np.mean(np.abs(pred - ref)))

    table = table2(model, chips, {"mae": mae, "bias": bias}, methods=("raw", "statistical"))
    assert list(table) == ["raw", "statistical"]
    assert all(list(row) == ["mae", "bias"] for row in table.values())
    # Raw leaves the HR's radiometry: the power law of the statistical method is closer.
    assert table["statistical"]["mae"] < table["raw"]["mae"]
    with pytest.raises(DegradationError, match="at least one pair and one metric"):
        table2(model, chips, {})


def test_table2_statistical_rows_are_gamma_percentiles_with_simple_noise_by_default() -> None:
    chips = _rendered_pairs(1, seed=4)
    model = load_model("sen2naip")

    def mean(pred: np.ndarray, ref: np.ndarray) -> float:
        return float(np.mean(pred))

    rows = ("statistical_p10", "statistical_p50", "statistical_p90", "statistical")
    table = table2(model, chips, {"mean": mean}, methods=rows)
    # x ** (1 / gamma) on reflectance < 1: a larger gamma brightens the image.
    assert table["statistical_p10"]["mean"] < table["statistical_p50"]["mean"]
    assert table["statistical_p50"]["mean"] < table["statistical_p90"]["mean"]
    assert table["statistical"]["mean"] == table["statistical_p50"]["mean"]  # the default
    # The noise: simple by default; the model's matrix on request gives other draws.
    matrix = table2(model, chips, {"mean": mean}, methods=rows[:1], noise="matrix")
    assert matrix["statistical_p10"]["mean"] != table["statistical_p10"]["mean"]
    with pytest.raises(DegradationError, match="noise must be one of"):
        table2(model, chips, {"mean": mean}, noise="pink")
    with pytest.raises(DegradationError, match="unknown Table 2 row"):
        table2(model, chips, {"mean": mean}, methods=("statistical_pxx",))


@pytest.mark.parametrize("seed", range(4))
def test_registered_psf_interior_equals_the_cropped_full_model(seed: int) -> None:
    # Per-chip shifts of any sign and fraction, sigmas from sharp to wide, two chip shapes.
    rng = np.random.default_rng(seed)
    size = (96, 128) if seed % 2 else (128, 96)
    x = torch.from_numpy(rng.random((3, 4, *size), dtype=np.float32))
    shifts = tuple((float(e), float(n)) for e, n in rng.uniform(-9.0, 9.0, (3, 2)))
    op = RegisteredPSF(shifts, GSD_M, 4, size)
    sigma = rng.uniform(0.4, 3.5, 4)
    full = op(x, sigma)
    m = 6
    assert op.axes(sigma, m, x.dtype) is not None  # the fast pass, not the fallback
    got = op.interior(x, sigma, m)
    assert got.shape == (3, 4, size[0] // 4 - 2 * m, size[1] // 4 - 2 * m)
    assert float((got - full[..., m:-m, m:-m]).abs().max()) < 1e-5


def test_registered_psf_interior_falls_back_when_the_margin_is_too_narrow() -> None:
    # A 1-pixel margin cannot hold a sigma-3 blur plus a 9 m shift: the full model's crop.
    x = torch.from_numpy(np.random.default_rng(5).random((1, 2, 64, 64), dtype=np.float32))
    op = RegisteredPSF(((9.0, -9.0),), GSD_M, 4, (64, 64))
    sigma = np.array([3.0, 3.0])
    assert op.axes(sigma, 1, x.dtype) is None
    got = op.interior(x, sigma, 1)
    assert torch.equal(got, op(x, sigma)[..., 1:-1, 1:-1])


def test_minimize_near_searches_the_whole_range_when_the_start_is_far() -> None:
    from degradation._optimize import minimize_near

    truth = np.array([0.5, 2.0, 5.0])

    def objective(x: np.ndarray) -> np.ndarray:
        return np.abs(x - truth)

    # Near: found inside the bracket with few calls.
    near, calls_near = minimize_near(objective, truth + 0.1, 0.3, (0.25, 6.0), 3, tol=1e-3)
    assert np.all(np.abs(near - truth) < 2e-3)
    # Far (the third start is 2 away): the bracket's edge is hit, the whole range searched.
    far, calls_far = minimize_near(
        objective, np.array([0.5, 2.0, 3.0]), 0.3, (0.25, 6.0), 3, tol=1e-3
    )
    assert np.all(np.abs(far - truth) < 2e-3)
    assert calls_far > calls_near
