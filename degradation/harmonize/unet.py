"""Deterministic harmonisation: a U-Net predicts Sentinel-2 radiometry, the HR takes its histogram.

As in SEN2NAIP: the HR image is degraded to 10 m (bilinear with antialias,
:func:`degradation.resample.downsample`), the U-Net maps it to an S2-like image, and the
original HR is histogram-matched to the U-Net output per band
(:func:`degradation.harmonize.histogram.match_histograms`): the HR keeps its texture and takes
the network's radiometry.

Inference accepts any torch module mapping [B, C, H, W] to [B, C, H, W] (the published
TorchScript U-Net, or :class:`SmallUNet`). The input is padded at the bottom and right to a
multiple of ``pad_multiple`` (32 for a 5-level encoder) and the output cropped back.

Training (:func:`train_unet`): the published network is segmentation-models-pytorch's U-Net
with an ImageNet EfficientNet-B0 encoder, which cannot be installed or downloaded here. Its
stand-in, :class:`SmallUNet`, is a plain U-Net of the same shape of computation at a CPU-sized
width: per level two 3 x 3 convolutions with GroupNorm and ReLU, 2 x 2 max-pool down,
bilinear x2 up with skip concatenation, and a 1 x 1 head; the head's output is added to the input
(the network learns a residual correction, which a radiometric mapping mostly is).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.harmonize.histogram import match_histograms
from degradation.harmonize.vae import TrainingLog, init_parameters, train_minibatches
from degradation.resample import downsample

PAD_MODES = ("constant", "reflect", "replicate")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    groups = 4 if c_out % 4 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """A small U-Net (see the module doc). Input sides must be multiples of ``2 ** depth``.

    Args:
        in_channels: input bands.
        out_channels: output bands.
        width: channels of the first level (doubled at each level down).
        depth: number of down-sampling steps.
    """

    def __init__(
        self, in_channels: int = 4, out_channels: int = 4, width: int = 16, depth: int = 3
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise DegradationError(f"depth and width must be >= 1, got {depth}, {width}")
        self.in_channels, self.out_channels, self.width, self.depth = (
            in_channels,
            out_channels,
            width,
            depth,
        )
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(in_channels, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def arch(self) -> dict[str, int]:
        """Constructor arguments (for a model card)."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "width": self.width,
            "depth": self.depth,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [B, in, H, W] to [B, out, H, W]."""
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        out: torch.Tensor = self.head(h)
        if self.in_channels == self.out_channels:
            out = out + x
        return out


def _pad_to(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect needs the pad to be smaller than the image
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def run_network(
    net: nn.Module, x: torch.Tensor, pad_multiple: int = 32, pad_mode: str = "reflect"
) -> torch.Tensor:
    """Run ``net`` on [B, C, H, W] without gradients, padded to ``pad_multiple`` and cropped."""
    if pad_mode not in PAD_MODES:
        raise DegradationError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    h, w = x.shape[-2:]
    param = next(iter(net.parameters()), None)
    dev = param.device if param is not None else x.device
    with torch.no_grad():
        out = net(_pad_to(x.to(dev, torch.float32), pad_multiple, pad_mode))
    if out.ndim != 4 or out.shape[-2] < h or out.shape[-1] < w:
        raise DegradationError(
            f"the U-Net returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
            "it must map [B, C, H, W] to [B, C, H, W]"
        )
    return out[..., :h, :w].to(x.device)


@dataclass(frozen=True, eq=False)
class UNetHarmonizer:
    """HR -> HR_h with a U-Net and histogram matching (the deterministic method).

    Pickles even when ``net`` is a TorchScript module (serialised to bytes in memory), so it
    can travel to DataLoader worker processes.

    Attributes:
        net: module mapping [B, C, h, w] to [B, C, h, w] (TorchScript or eager), eval mode.
        factor: HR/LR ratio; the HR is downsampled by it (antialiased bilinear) before the
            network (4 for NAIP 2.5 m -> 10 m, as in the paper); 1 runs the network on the HR
            itself, as opensr-degradation 1.0.1's code does.
        pad_multiple: the network input is padded to a multiple of it.
        pad_mode: "reflect" (default), "replicate" or "constant" (zeros, the published code).
    """

    net: nn.Module
    factor: int = 4
    pad_multiple: int = 32
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        """Validate the configuration; put the network in eval mode."""
        if not isinstance(self.factor, int) or self.factor < 1:
            raise DegradationError(f"factor must be a positive integer, got {self.factor!r}")
        if self.pad_multiple < 1:
            raise DegradationError(f"pad_multiple must be >= 1, got {self.pad_multiple}")
        if self.pad_mode not in PAD_MODES:
            raise DegradationError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        self.net.eval()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle support: TorchScript modules travel as their serialised bytes."""
        net: Any = self.net
        if isinstance(net, torch.jit.ScriptModule):
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 deprecates jit.save
                torch.jit.save(net, buf)
            net = buf.getvalue()
        return (_rebuild_unet, (net, self.factor, self.pad_multiple, self.pad_mode))

    def predict(self, hr: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The network's S2-like image at LR resolution, [B, C, H / factor, W / factor]."""
        t, _ = to_batched(hr, "hr")
        lr = downsample(t, self.factor, antialias=True) if self.factor > 1 else t
        assert isinstance(lr, torch.Tensor)
        return run_network(self.net, lr, self.pad_multiple, self.pad_mode)

    def __call__(self, hr: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Harmonise ``hr`` ([C, H, W] or [B, C, H, W]); same type, rank and dtype out."""
        pred = self.predict(hr)
        if isinstance(hr, np.ndarray):
            ref: np.ndarray | torch.Tensor = pred.cpu().numpy()
            return match_histograms(hr, ref if hr.ndim == 4 else ref[0])
        return match_histograms(hr, pred if hr.ndim == 4 else pred[0])


def _rebuild_unet(net: Any, factor: int, pad_multiple: int, pad_mode: str) -> UNetHarmonizer:
    if isinstance(net, bytes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 deprecates jit.load
            net = torch.jit.load(io.BytesIO(net), map_location="cpu")
    return UNetHarmonizer(net, factor, pad_multiple, pad_mode)


def _as_batch(x: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    if isinstance(x, np.ndarray | torch.Tensor):
        return to_batched(x)[0].float()
    return torch.cat([to_batched(v)[0].float() for v in x], dim=0)


def train_unet(
    pairs_hr_at_10m: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    s2: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    *,
    epochs: int = 50,
    seed: int = 0,
    learning_rate: float = 3e-3,
    batch_size: int = 8,
    width: int = 16,
    depth: int = 3,
) -> tuple[SmallUNet, TrainingLog]:
    """Train a :class:`SmallUNet` mapping HR degraded to 10 m onto Sentinel-2 (CPU, small).

    Loss: mean absolute error. Adam; initialisation and shuffling come only from a generator
    seeded by ``seed``, so two runs with one seed on one thread count give the same weights.

    Args:
        pairs_hr_at_10m: HR images already downsampled to the S2 grid (antialiased bilinear),
            [N, C, H, W] or a sequence of same-shaped [C, H, W] / [B, C, H, W] arrays.
        s2: the matching Sentinel-2 images, same shapes.
        epochs: passes over the data.
        seed: the only source of randomness.
        learning_rate: Adam step size.
        batch_size: images per step.
        width: channels of the first level.
        depth: down-sampling steps (sides must be multiples of ``2 ** depth``).

    Returns:
        The trained network (eval mode) and its :class:`TrainingLog`.
    """
    x, y = _as_batch(pairs_hr_at_10m), _as_batch(s2)
    if x.shape != y.shape:
        raise DegradationError(
            f"HR-at-10 m images {tuple(x.shape)} and S2 images {tuple(y.shape)} differ in shape"
        )
    if x.shape[-1] % 2**depth or x.shape[-2] % 2**depth:
        raise DegradationError(
            f"image sides {tuple(x.shape[-2:])} must be multiples of {2**depth} for depth "
            f"{depth}; crop the chips"
        )
    if epochs < 1:
        raise DegradationError(f"epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    net = SmallUNet(x.shape[1], y.shape[1], width, depth)
    init_parameters(net, gen)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = (net(x[idx]) - y[idx]).abs().mean()
        return loss, loss

    log = train_minibatches(
        net,
        x.shape[0],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        generator=gen,
        step=step,
    )
    return net, log
