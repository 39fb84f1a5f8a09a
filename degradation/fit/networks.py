"""Training the harmonisation networks on pairs: the U-Net and the histogram VAE, on CPU.

Both learn from the HR downsampled to the LR grid with antialias (what the LR would be without
the sensor's radiometry): the U-Net (:func:`degradation.harmonize.unet.train_unet`) maps it to
the LR, chips cropped to a multiple of ``2 ** depth`` pixels; the VAE
(:func:`degradation.harmonize.vae.train_vae`) maps its 120-bin histograms to the LR's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from degradation.errors import DegradationError
from degradation.fit.pairs import PairChip
from degradation.harmonize.unet import SmallUNet, train_unet
from degradation.harmonize.vae import HistogramVAE, input_histograms, train_vae
from degradation.resample import downsample

#: The networks :func:`train_networks` can train.
TRAINABLE = ("unet", "vae")


def _crop_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    h, w = x.shape[-2:]
    return x[..., : h - h % multiple, : w - w % multiple]


def train_networks(
    chips: Sequence[PairChip],
    which: Sequence[str],
    *,
    factor: int = 4,
    seed: int = 0,
    unet_epochs: int = 30,
    vae_epochs: int = 200,
) -> tuple[SmallUNet | None, HistogramVAE | None, dict[str, Any]]:
    """Train the U-Net and/or the VAE on CPU (see the module doc).

    Args:
        chips: the training pairs.
        which: networks to train, a subset of :data:`TRAINABLE`.
        factor: HR/LR pixel ratio.
        seed: the only source of randomness of both trainings.
        unet_epochs: U-Net epochs.
        vae_epochs: VAE epochs.

    Returns:
        ``(unet, vae, logs)``: a network is None when not asked for; ``logs`` holds per network
        its epochs and first and last loss.

    Raises:
        DegradationError: a network that is not in :data:`TRAINABLE`.
    """
    bad = set(which) - set(TRAINABLE)
    if bad:
        raise DegradationError(f"cannot train {sorted(bad)}; choose from {', '.join(TRAINABLE)}")
    hr10 = []
    for c in chips:
        d = downsample(torch.from_numpy(c.hr), factor, antialias=True)
        assert isinstance(d, torch.Tensor)
        hr10.append(d.numpy())
    lrs = [c.lr for c in chips]
    unet: SmallUNet | None = None
    vae: HistogramVAE | None = None
    logs: dict[str, Any] = {}
    if "unet" in which:
        depth = 3
        x = np.stack([_crop_multiple(h, 2**depth) for h in hr10])
        y = np.stack([_crop_multiple(lr, 2**depth) for lr in lrs])
        unet, log = train_unet(x, y, epochs=unet_epochs, seed=seed, depth=depth)
        logs["unet"] = {
            "epochs": unet_epochs,
            "first_loss": log.first_loss,
            "last_loss": log.last_loss,
        }
    if "vae" in which:
        hx = input_histograms(np.stack(hr10)).numpy()
        hy = input_histograms(np.stack(lrs)).numpy()
        vae, vlog = train_vae(hx, hy, epochs=vae_epochs, seed=seed)
        logs["vae"] = {
            "epochs": vae_epochs,
            "first_loss": vlog.first_loss,
            "last_loss": vlog.last_loss,
        }
    return unet, vae, logs
