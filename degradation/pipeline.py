"""The Degrader: HR image -> (harmonised HR, Sentinel-2-like LR), as in SEN2NAIP.

    S2like = Phi(Upsilon(HR)) downsampled + n

Modes available here (the learned ones, deterministic and variational, come later):

- ``"raw"``: no harmonisation, antialiased bilinear downsampling, no noise (the paper's "Raw").
- ``"statistical"``: per-band gamma ``x ** (1 / gamma)`` with gamma either the model's per-band
  percentile or a per-sample draw from its normal model, then the PSF blur + bilinear
  downsampling without antialias, then the simple noise added at LR resolution.

Randomness comes only from the ``rng`` passed to each call (a numpy Generator, a
``torch.Generator`` or an int seed), so a DataLoader that derives one seed per sample (e.g. from
a run seed and the sample index) gets the same output for any worker count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.harmonize.gamma import SEN2NAIP_GAMMA, GammaModel, apply_gamma
from degradation.noise import PAPER_NOISE_STD, RandomSource, simple_noise
from degradation.psf import GaussianPSF
from degradation.resample import downsample

MODES = ("raw", "statistical")


@dataclass(frozen=True)
class DegradedPair:
    """Output of :class:`Degrader`.

    Attributes:
        hr: the harmonised HR image (the input itself in raw mode).
        lr: the Sentinel-2-like LR image.
        mode: the mode that produced it.
        gamma: per-band gammas used ([C] or [B, C]); None in raw mode.
    """

    hr: np.ndarray | torch.Tensor
    lr: np.ndarray | torch.Tensor
    mode: str
    gamma: np.ndarray | None


def _numpy_rng(rng: RandomSource) -> np.random.Generator:
    """A numpy Generator drawn from any accepted random source (consumes it deterministically)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng, device=rng.device).item())
        return np.random.default_rng(seed)
    if isinstance(rng, int) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise DegradationError(
        "pass an explicit random source: a numpy Generator, a torch.Generator or an int seed"
    )


@dataclass(frozen=True)
class Degrader:
    """Turn HR images into (HR_h, S2-like LR) pairs.

    Attributes:
        mode: "raw" or "statistical".
        psf: blur + downsampling operator (its ``factor`` is the HR/LR ratio).
        gamma_model: normal model of per-band gammas.
        percentile: per-band percentile of ``gamma_model`` applied to every sample (the paper
            uses 50), or None to draw a gamma vector per sample.
        noise_std: relative noise std (0.012 in the paper; 0 disables noise).
        noise_scaling: "pixel_rms" (paper), "band_rms" (package) or "none".
    """

    mode: str = "statistical"
    psf: GaussianPSF = field(default_factory=GaussianPSF)
    gamma_model: GammaModel = SEN2NAIP_GAMMA
    percentile: float | None = 50.0
    noise_std: float = PAPER_NOISE_STD
    noise_scaling: str = "pixel_rms"

    def __post_init__(self) -> None:
        """Validate the configuration."""
        if self.mode not in MODES:
            raise DegradationError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise DegradationError(f"percentile must be in (0, 100) or None: {self.percentile}")

    def __call__(self, hr: np.ndarray | torch.Tensor, rng: RandomSource) -> DegradedPair:
        """Degrade ``hr`` ([C, H, W] or [B, C, H, W] reflectance in [0, 1]).

        Args:
            hr: the HR image(s).
            rng: explicit random source for the gamma draw and the noise.

        Returns:
            The :class:`DegradedPair`, with arrays of the input's type and rank.
        """
        t, restore = to_batched(hr, "hr")
        if self.mode == "raw":
            lr = downsample(t, self.psf.factor, antialias=True)
            assert isinstance(lr, torch.Tensor)
            return DegradedPair(restore(t), restore(lr), self.mode, None)
        b, c = t.shape[:2]
        if len(self.gamma_model.mean) != c:
            raise DegradationError(
                f"the gamma model has {len(self.gamma_model.mean)} bands, the image has {c}"
            )
        gen = _numpy_rng(rng)
        if self.percentile is None:
            gamma = self.gamma_model.sample(gen, b)
        else:
            gamma = np.broadcast_to(self.gamma_model.percentile(self.percentile), (b, c)).copy()
        hr_h = apply_gamma(t, gamma)
        assert isinstance(hr_h, torch.Tensor)
        lr = self.psf(hr_h)
        assert isinstance(lr, torch.Tensor)
        if self.noise_std > 0:
            noise = simple_noise(lr, gen, std=self.noise_std, scaling=self.noise_scaling)
            assert isinstance(noise, torch.Tensor)
            lr = lr + noise
        return DegradedPair(
            restore(hr_h), restore(lr), self.mode, gamma[0] if hr.ndim == 3 else gamma
        )
