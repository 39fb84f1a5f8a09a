"""Reflectance-to-noise matrix: exact lookup, equality with the published sampler, estimator."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy import stats

from degradation.errors import DegradationError
from degradation.noise import (
    SEN2NAIP_NOISE_VALUES,
    SEN2NAIP_REFLECTANCE_EDGES,
    NoiseMatrix,
    estimate_noise_matrix,
)
from degradation.pretrained import load_sen2naip
from degradation.psf import blur


@pytest.fixture(scope="module")
def published_matrix() -> NoiseMatrix:
    model = load_sen2naip(components=("noise",))
    assert model.noise is not None
    return model.noise


def test_rows_equal_numpy_digitize_including_edges(published_matrix: NoiseMatrix) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-0.1, 0.7, 100_000),
            SEN2NAIP_REFLECTANCE_EDGES,
            np.nextafter(SEN2NAIP_REFLECTANCE_EDGES, -1),
            np.nextafter(SEN2NAIP_REFLECTANCE_EDGES, 1),
            [-5.0, 0.0, 0.5, 9.0],
        ]
    )
    np.testing.assert_array_equal(
        published_matrix.rows(x), np.digitize(x, SEN2NAIP_REFLECTANCE_EDGES)
    )
    uneven = NoiseMatrix(np.array([0.0, 0.001, 0.3, 0.31]), [-1.0, 1.0], np.ones((5, 2)))
    np.testing.assert_array_equal(uneven.rows(x), np.digitize(x, uneven.reflectance_edges))


def test_identical_draws_to_the_published_sampler(
    published_matrix: NoiseMatrix, published: Callable[[str], ModuleType]
) -> None:
    noise_mod = published("naipd.noise")
    x = np.random.default_rng(1).uniform(-0.02, 0.6, (4, 40, 40)).astype(np.float32)
    np.random.seed(3)  # the published sampler uses numpy's global generator
    ref = noise_mod.create_noisy_1(torch.from_numpy(x)).numpy()
    # np.vectorize calls the sampler once more on the first pixel to find the output type, so
    # the published draws start at the second uniform of the stream.
    rs = np.random.RandomState(3)
    rs.random_sample()
    ours = published_matrix.sample(x, rs)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


def test_same_distribution_as_published_with_independent_seeds(
    published_matrix: NoiseMatrix, published: Callable[[str], ModuleType]
) -> None:
    noise_mod = published("naipd.noise")
    x = np.full((1, 60, 60), 0.1234, dtype=np.float32)
    np.random.seed(11)
    ref = noise_mod.create_noisy_1(torch.from_numpy(x)).numpy().reshape(-1)
    ours = np.asarray(published_matrix.sample(x, np.random.default_rng(12))).reshape(-1)
    values = SEN2NAIP_NOISE_VALUES.astype(np.float32)
    table = np.stack([[np.sum(a == v) for v in values] for a in (ref, ours)])
    table = table[:, table.sum(axis=0) > 0]
    p = stats.chi2_contingency(table).pvalue
    assert p > 0.01
    assert stats.ks_2samp(ref, ours).pvalue > 0.01
    row = published_matrix.rows(np.array([0.1234]))[0]
    assert abs(ours.std() - published_matrix.std()[row]) / published_matrix.std()[row] < 0.05


def test_at_least_100x_faster_than_the_published_sampler(
    published_matrix: NoiseMatrix, published: Callable[[str], ModuleType]
) -> None:
    noise_mod = published("naipd.noise")
    rng = np.random.default_rng(2)
    small = rng.uniform(0, 0.5, (4, 50, 50)).astype(np.float32)
    np.random.seed(0)
    t0 = time.perf_counter()
    noise_mod.create_noisy_1(torch.from_numpy(small))
    theirs_per_px = (time.perf_counter() - t0) / small.size
    big = rng.uniform(0, 0.5, (4, 275, 275)).astype(np.float32)
    best = np.inf
    for seed in range(5):
        t0 = time.perf_counter()
        published_matrix.sample(big, seed)
        best = min(best, time.perf_counter() - t0)
    assert theirs_per_px / (best / big.size) >= 100


def test_sampling_is_seeded_typed_and_shaped(published_matrix: NoiseMatrix) -> None:
    x = torch.rand(2, 4, 30, 30, generator=torch.Generator().manual_seed(0)) * 0.4
    a = published_matrix.sample(x, torch.Generator().manual_seed(4))
    b = published_matrix.sample(x, torch.Generator().manual_seed(4))
    assert isinstance(a, torch.Tensor) and a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, published_matrix.sample(x, torch.Generator().manual_seed(5)))
    np.testing.assert_array_equal(
        published_matrix.sample(x.numpy(), 7), published_matrix.sample(x.numpy(), 7)
    )
    with pytest.raises(DegradationError, match="random source"):
        published_matrix.sample(x, None)  # type: ignore[arg-type]
    with pytest.raises(DegradationError, match="NaN"):
        published_matrix.sample(np.full((1, 2, 2), np.nan, np.float32), 0)


def _scene(seed: int, size: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.asarray(blur(rng.random((4, size, size), dtype=np.float32), 8.0))
    lo, hi = smooth.min(), smooth.max()
    return ((smooth - lo) / (hi - lo) * 0.45).astype(np.float32)


def _true_std(x: np.ndarray) -> np.ndarray:
    return 0.0005 + 0.006 * x  # noise grows with reflectance


@pytest.mark.parametrize("with_reference", [True, False])
def test_estimator_recovers_a_reflectance_dependent_std(with_reference: bool) -> None:
    rng = np.random.default_rng(5)
    clean = [_scene(s) for s in range(6)]
    noisy = [c + rng.standard_normal(c.shape).astype(np.float32) * _true_std(c) for c in clean]
    est = estimate_noise_matrix(noisy, clean if with_reference else None, min_count=500)
    assert est.probabilities.shape == (101, 101)
    np.testing.assert_allclose(est.probabilities.sum(axis=1), 1.0)
    centres = (SEN2NAIP_REFLECTANCE_EDGES[:-1] + SEN2NAIP_REFLECTANCE_EDGES[1:]) / 2
    well = np.flatnonzero(est.n_samples[1:-1] >= 2000)
    assert well.size > 40
    truth = _true_std(centres[well])
    rtol = 0.1 if with_reference else 0.2
    np.testing.assert_allclose(est.std()[well + 1], truth, rtol=rtol)


def test_estimator_and_matrix_validation() -> None:
    with pytest.raises(DegradationError, match="probabilities has shape"):
        NoiseMatrix(np.array([0.0, 0.1]), np.array([-1.0, 1.0]), np.ones((2, 2)))
    with pytest.raises(DegradationError, match="non-negative"):
        NoiseMatrix(np.array([0.0]), np.array([-1.0, 1.0]), np.array([[1.0, -1.0], [1, 1]]))
    with pytest.raises(DegradationError, match="increasing"):
        NoiseMatrix(np.array([0.1, 0.0]), np.array([-1.0, 1.0]), np.ones((3, 2)))
    x = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(DegradationError, match="references"):
        estimate_noise_matrix([x, x], [x])
    with pytest.raises(DegradationError, match="min_count"):
        estimate_noise_matrix(x, min_count=10_000)
