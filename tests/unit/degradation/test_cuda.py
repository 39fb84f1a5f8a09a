"""The torch paths on a CUDA device: same results as on CPU, gradients flow (needs a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from degradation.harmonize.gamma import apply_gamma
from degradation.harmonize.histogram import match_histograms
from degradation.pipeline import Degrader
from degradation.psf import SEN2NAIP_PSF, blur_downsample
from degradation.resample import downsample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_blur_downsample_on_cuda_matches_cpu_and_differentiates() -> None:
    x = torch.rand(2, 4, 484, 484, generator=torch.Generator().manual_seed(0))
    xg = x.cuda().requires_grad_(True)
    for kwargs in ({"kernel_size": 13}, {}):
        out = blur_downsample(xg, **kwargs)
        assert isinstance(out, torch.Tensor) and out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), blur_downsample(x, **kwargs), atol=1e-5, rtol=0)
    up = torch.rand(2, 4, 121, 121, device="cuda")
    out = SEN2NAIP_PSF(xg)
    assert isinstance(out, torch.Tensor)
    (out * up).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_antialiased_downsample_on_cuda_matches_interpolate() -> None:
    x = torch.rand(1, 4, 1100, 1100, device="cuda")
    ref = F.interpolate(x, scale_factor=0.25, mode="bilinear", antialias=True)
    torch.testing.assert_close(downsample(x, 4), ref, atol=1e-5, rtol=0)


def test_degrader_gamma_and_histograms_keep_the_device() -> None:
    x = torch.rand(2, 4, 256, 256, device="cuda") * 0.5
    g = torch.Generator(device="cuda").manual_seed(1)
    out = Degrader("statistical", percentile=None)(x, g)
    assert isinstance(out.lr, torch.Tensor) and out.lr.device.type == "cuda"
    again = Degrader("statistical", percentile=None)(
        x, torch.Generator(device="cuda").manual_seed(1)
    )
    assert torch.equal(out.lr, again.lr)
    y = apply_gamma(x, 0.4)
    assert isinstance(y, torch.Tensor) and y.device.type == "cuda"
    m = match_histograms(x, x[:, :, ::4, ::4])
    assert isinstance(m, torch.Tensor) and m.device.type == "cuda"
    np.testing.assert_allclose(
        m.cpu().numpy(), match_histograms(x.cpu().numpy(), x[:, :, ::4, ::4].cpu().numpy())
    )
