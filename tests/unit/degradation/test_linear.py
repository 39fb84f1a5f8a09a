"""Linear (SEN2VENuS) harmonisation: exact recovery of a known affine band map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.errors import DegradationError
from degradation.harmonize.linear import apply_linear, fit_linear
from degradation.resample import downsample


def test_recovers_a_known_affine_map_and_applies_it() -> None:
    rng = np.random.default_rng(0)
    hr = rng.random((4, 64, 64)).astype(np.float32)
    w = rng.normal(0, 0.5, (5, 4))
    w[4] = [0.01, -0.02, 0.03, 0.0]
    lr = apply_linear(downsample(hr, 4), w)
    assert isinstance(lr, np.ndarray) and lr.shape == (4, 16, 16)
    got = fit_linear(hr, lr)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, w, atol=1e-4)
    # Same-resolution pairs need no reduction; 4 -> 3 bands is allowed.
    got3 = fit_linear(hr, np.asarray(apply_linear(hr, w[:, :3])))
    np.testing.assert_allclose(got3, w[:, :3], atol=1e-4)


def test_batched_torch_fit_and_apply() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 4, 32, 32, generator=g)
    w = np.stack([np.eye(5, 4) * 0.5, np.eye(5, 4) * 2.0])
    lr = apply_linear(hr, w)
    assert isinstance(lr, torch.Tensor)
    torch.testing.assert_close(lr[1], hr[1] * 2.0)
    np.testing.assert_allclose(fit_linear(hr, lr), w, atol=1e-5)


def test_bad_shapes() -> None:
    with pytest.raises(DegradationError, match="integer multiple"):
        fit_linear(np.zeros((4, 30, 30), np.float32), np.zeros((4, 7, 7), np.float32))
    with pytest.raises(DegradationError, match="weights"):
        apply_linear(np.zeros((4, 8, 8), np.float32), np.zeros((4, 4)))
