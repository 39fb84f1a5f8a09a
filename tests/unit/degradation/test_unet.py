"""Deterministic method: the paper's composition, our trainable U-Net, pickling."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from degradation.errors import DegradationError
from degradation.harmonize.histogram import match_histograms
from degradation.harmonize.unet import SmallUNet, UNetHarmonizer, train_unet
from degradation.resample import downsample


def _pairs(n: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(n, 4, size, size, generator=g) * 0.5, 3, 1, 1)
    gamma = torch.tensor([0.5, 0.6, 0.7, 0.8]).view(1, 4, 1, 1)
    return x, x ** (1 / gamma) * 0.8 + 0.02  # a per-band radiometric change


def test_train_unet_overfits_a_tiny_set_and_is_seeded() -> None:
    x, y = _pairs()
    net, log = train_unet(x, y, epochs=60, seed=0, width=8, depth=2)
    assert log.last_loss < 0.1 * log.first_loss
    with torch.no_grad():
        mae = float((net(x) - y).abs().mean())
        identity = float((x - y).abs().mean())
    assert mae < 0.2 * identity
    again, log2 = train_unet(x, y, epochs=3, seed=0, width=8, depth=2)
    other, log3 = train_unet(x, y, epochs=3, seed=1, width=8, depth=2)
    _, log2b = train_unet(x, y, epochs=3, seed=0, width=8, depth=2)
    assert log2.losses == log2b.losses and log2.losses != log3.losses


def test_harmonizer_is_downsample_then_network_then_histogram_matching() -> None:
    torch.manual_seed(0)  # only to fill random test weights
    net = SmallUNet(width=8, depth=2).eval()
    hr = torch.rand(2, 4, 100, 100, generator=torch.Generator().manual_seed(1)) * 0.5
    out = UNetHarmonizer(net, factor=4, pad_multiple=4)(hr)
    lr = downsample(hr, 4, antialias=True)
    with torch.no_grad():
        # 25 x 25 is padded to 28 x 28 by reflection inside the harmonizer, then cropped.
        padded = net(F.pad(lr, (0, 3, 0, 3), mode="reflect"))[..., :25, :25]
    expected = match_histograms(hr, padded)
    assert isinstance(out, torch.Tensor) and out.shape == hr.shape
    # Exact up to float32 reassociation inside the convolutions (oneDNN may pick another
    # algorithm between calls).
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    single = UNetHarmonizer(net, factor=4, pad_multiple=4)(hr[0].numpy())
    assert isinstance(single, np.ndarray) and single.shape == (4, 100, 100)
    np.testing.assert_allclose(single, expected[0].numpy(), atol=1e-5)
    # The output has the network's radiometry: its quantiles, the HR's spatial order.
    order = hr[0, 0].flatten().argsort()
    assert bool((out[0, 0].flatten()[order].diff() >= 0).all())


def test_torchscript_harmonizer_pickles() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torch.jit.trace(SmallUNet(width=4, depth=1).eval(), torch.rand(1, 4, 20, 20))
    harm = UNetHarmonizer(net, factor=2, pad_multiple=2)
    copy = pickle.loads(pickle.dumps(harm))
    assert isinstance(copy.net, torch.jit.ScriptModule)
    hr = torch.rand(4, 40, 40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(copy(hr), harm(hr))  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    x, y = _pairs(2, 30)
    with pytest.raises(DegradationError, match="multiples"):
        train_unet(x, y, epochs=1, depth=2)
    with pytest.raises(DegradationError, match="shape"):
        train_unet(x, y[:1], epochs=1, depth=1)
    with pytest.raises(DegradationError, match="pad_mode"):
        UNetHarmonizer(SmallUNet(), pad_mode="wrap")
    with pytest.raises(DegradationError, match="factor"):
        UNetHarmonizer(SmallUNet(), factor=0)
