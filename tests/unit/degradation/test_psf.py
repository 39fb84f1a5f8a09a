"""PSF blur + downsample: exactness against torchvision/scipy, threads, gradients, speed path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from scipy import ndimage
from torch.nn import functional as F  # noqa: N812

from degradation.errors import DegradationError
from degradation.psf import (
    SEN2NAIP_PSF,
    SEN2NAIP_SIGMA_PX,
    blur,
    blur_downsample,
    gaussian_kernel,
    kernel_radius,
)


def _torchvision_reference(x: torch.Tensor, sigmas: tuple[float, ...], k: int) -> torch.Tensor:
    bands = [
        torchvision.transforms.GaussianBlur(k, sigma=s)(x[:, i : i + 1])
        for i, s in enumerate(sigmas)
    ]
    return F.interpolate(torch.cat(bands, 1), scale_factor=0.25, mode="bilinear", antialias=False)


@pytest.mark.parametrize("size", [(484, 484), (101, 97), (64, 60)])
def test_kernel_13_reproduces_torchvision_blur_then_interpolate(size: tuple[int, int]) -> None:
    x = torch.rand(2, 4, *size, generator=torch.Generator().manual_seed(0))
    ref = _torchvision_reference(x, SEN2NAIP_SIGMA_PX, 13)
    out = blur_downsample(x, SEN2NAIP_SIGMA_PX, kernel_size=13)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(SEN2NAIP_PSF(x), ref, atol=1e-6, rtol=0)


def test_default_truncation_matches_scipy_gaussian_filter() -> None:
    # scipy's "mirror" is torch's "reflect"; its radius int(4 s + 0.5) equals ceil(4 s) here.
    x = np.random.default_rng(0).random((4, 80, 90)).astype(np.float32)
    out = blur(x, SEN2NAIP_SIGMA_PX)
    assert isinstance(out, np.ndarray)
    for c, s in enumerate(SEN2NAIP_SIGMA_PX):
        ref = ndimage.gaussian_filter(x[c].astype(np.float64), s, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(out[c], ref, atol=2e-6)


def test_blur_downsample_equals_full_blur_then_sampling() -> None:
    x = torch.rand(1, 4, 120, 88, generator=torch.Generator().manual_seed(3))
    full = blur(x, (1.0, 2.0, 3.0, 4.5))
    assert isinstance(full, torch.Tensor)
    ref = F.interpolate(full, scale_factor=0.25, mode="bilinear", antialias=False)
    torch.testing.assert_close(blur_downsample(x, (1.0, 2.0, 3.0, 4.5)), ref, atol=1e-6, rtol=0)


def test_kernel_radius_rule_and_normalisation() -> None:
    assert kernel_radius(3.0) == 12 and kernel_radius(3.4) == 14 and kernel_radius(0.0) == 0
    k = gaussian_kernel(3.4)
    assert k.size == 29 and abs(k.sum() - 1) < 1e-12 and np.argmax(k) == 14
    k13 = gaussian_kernel(3.4, kernel_size=13)
    assert k13.size == 13
    np.testing.assert_array_equal(gaussian_kernel(0.0, kernel_size=5), [0, 0, 1, 0, 0])
    # A constant image stays constant (normalised kernels, reflect padding).
    out = blur_downsample(np.full((4, 44, 44), 0.3, dtype=np.float32))
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_same_result_on_one_and_two_threads() -> None:
    x = torch.rand(1, 4, 1100, 1100, generator=torch.Generator().manual_seed(5))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = blur_downsample(x)
        torch.set_num_threads(2)
        two = blur_downsample(x)
    finally:
        torch.set_num_threads(before)
    assert isinstance(one, torch.Tensor) and isinstance(two, torch.Tensor)
    assert torch.equal(one, two)


def test_gradients_flow_through_the_fused_path() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 4, 64, 64, generator=g)
    up = torch.rand(1, 4, 16, 16, generator=g)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    out = blur_downsample(xa, SEN2NAIP_SIGMA_PX, kernel_size=13)
    assert isinstance(out, torch.Tensor)
    (out * up).sum().backward()
    (_torchvision_reference(xb, SEN2NAIP_SIGMA_PX, 13) * up).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=0)


def test_bad_sigma_and_kernel_size() -> None:
    x = np.zeros((4, 32, 32), dtype=np.float32)
    with pytest.raises(DegradationError, match="sigma"):
        blur_downsample(x, -1.0)
    with pytest.raises(DegradationError, match="odd"):
        blur_downsample(x, 2.0, kernel_size=12)
    with pytest.raises(DegradationError, match="one per band"):
        blur_downsample(x, (1.0, 2.0))
    with pytest.raises(DegradationError, match="padding"):
        blur_downsample(x, 1.0, padding="wrap")


def _load_published_blur() -> object:
    """The published blur module, loaded from its file (it only needs torch and torchvision)."""
    spec = importlib.util.find_spec("opensr_degradation")
    if spec is None or spec.origin is None:
        pytest.fail("opensr-degradation is not installed: pip install -e '.[test]'")
    path = Path(spec.origin).parent / "naipd" / "blur.py"
    mod_spec = importlib.util.spec_from_file_location("_published_naipd_blur", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module
    mod_spec.loader.exec_module(module)
    return module


def test_matches_the_published_opensr_degradation_blur() -> None:
    published = _load_published_blur()
    x = torch.rand(4, 484, 484, generator=torch.Generator().manual_seed(7))
    ref = published.blur(x, {})  # type: ignore[attr-defined]
    out = SEN2NAIP_PSF(x)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape == (4, 121, 121)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
