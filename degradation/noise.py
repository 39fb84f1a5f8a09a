"""Noise n: the simple signal-scaled Gaussian model and a noise level estimator.

Simple model: zero-mean Gaussian noise whose standard deviation is ``std`` times a reflectance
scale, added at LR resolution (after Phi, as in SEN2NAIP's equation). Two scalings:

- ``"pixel_rms"`` (the paper): per pixel, ``sqrt(mean over bands of x**2)``; ``std = 0.012``.
- ``"band_rms"`` (opensr-degradation's ``gaussian_noise``): per band, the root mean square of
  the band over the image; the package uses ``std = 0.025``.
- ``"none"``: constant ``std``.

Randomness comes only from an explicit ``torch.Generator``, ``numpy.random.Generator`` or integer
seed; draws on the CPU generator are the same for any thread count.

Estimator (:func:`estimate_noise_std`): Immerkaer's (1996) Laplacian-difference residual. The
3 x 3 mask ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` cancels planes and gently curved surfaces;
on white Gaussian noise of std ``s`` its response has std ``6 s``. We take a robust scale of the
response, ``1.4826 * median(|r|) / 6``, so edges and texture (a minority of pixels) barely move
it; the estimate is per band.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from degradation._tensor import to_batched
from degradation.errors import DegradationError

PAPER_NOISE_STD = 0.012
PACKAGE_NOISE_STD = 0.025
SCALINGS = ("pixel_rms", "band_rms", "none")

RandomSource = torch.Generator | np.random.Generator | int

_LAPLACE_DIFF = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
_MAD_TO_STD = 1.482602218505602


def standard_normal(shape: tuple[int, ...], rng: RandomSource, like: torch.Tensor) -> torch.Tensor:
    """Draw standard normal values with the given random source, on ``like``'s device/dtype."""
    if isinstance(rng, bool) or not isinstance(rng, torch.Generator | np.random.Generator | int):
        raise DegradationError(
            "pass an explicit random source: a torch.Generator, a numpy Generator or an int seed"
        )
    if isinstance(rng, int):
        rng = np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        draw = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    else:
        draw = torch.randn(shape, generator=rng, device=rng.device, dtype=torch.float32)
    return draw.to(device=like.device, dtype=like.dtype)


def simple_noise(
    x: np.ndarray | torch.Tensor,
    rng: RandomSource,
    *,
    std: float = PAPER_NOISE_STD,
    scaling: str = "pixel_rms",
) -> np.ndarray | torch.Tensor:
    """Draw the simple noise for image ``x`` (returned alone; add it to ``x`` yourself).

    Args:
        x: LR reflectance [C, H, W] or [B, C, H, W].
        rng: explicit random source (torch.Generator, numpy Generator or int seed).
        std: relative standard deviation (0.012 paper, 0.025 package).
        scaling: "pixel_rms", "band_rms" or "none" (see module doc).

    Returns:
        Noise with the shape and type of ``x``.

    Raises:
        DegradationError: on an unknown scaling or a negative std.
    """
    if scaling not in SCALINGS:
        raise DegradationError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if not std >= 0:
        raise DegradationError(f"std must be >= 0, got {std}")
    t, restore = to_batched(x)
    z = standard_normal(tuple(t.shape), rng, t)
    ref = t.detach()
    if scaling == "pixel_rms":
        scale = ref.square().mean(dim=1, keepdim=True).sqrt()
    elif scaling == "band_rms":
        scale = ref.square().mean(dim=(2, 3), keepdim=True).sqrt()
    else:
        scale = torch.ones((1, 1, 1, 1), dtype=t.dtype, device=t.device)
    return restore(z * (std * scale))


def estimate_noise_std(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Estimate the per-band standard deviation of additive white noise (see module doc).

    Args:
        x: [C, H, W] or [B, C, H, W], at least 3 x 3 pixels.

    Returns:
        float64 [C] (or [B, C]).
    """
    t, _ = to_batched(x)
    if t.shape[-1] < 3 or t.shape[-2] < 3:
        raise DegradationError(f"the image needs at least 3 x 3 pixels, got {tuple(t.shape)}")
    b, c = t.shape[:2]
    with torch.no_grad():
        mask = torch.tensor(_LAPLACE_DIFF, dtype=t.dtype, device=t.device)
        r = F.conv2d(t.reshape(b * c, 1, *t.shape[-2:]), mask[None, None])
        med = r.abs().reshape(b * c, -1).median(dim=1).values
    out = (_MAD_TO_STD / 6.0 * med).double().cpu().numpy().reshape(b, c)
    return out[0] if x.ndim == 3 else out
