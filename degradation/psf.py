"""The point-spread function Phi: a per-band Gaussian blur, optionally fused with downsampling.

Kernel radius rule: by default a band's kernel has radius ``ceil(truncate * sigma)`` pixels with
``truncate = 4``, so it drops less than 7e-5 of the Gaussian's mass before renormalising. Passing
``kernel_size=K`` (odd) instead reproduces ``torchvision.transforms.GaussianBlur(K, sigma)``
exactly (same taps, reflect padding): the published SEN2NAIP model uses ``K = 13``, which cuts
the sigma 3.4 kernel at about 1.8 sigma and so blurs less than the nominal sigma.

``blur_downsample`` is Phi followed by bilinear downsampling *without* antialias, as in
SEN2NAIP; it is computed as one strided pass per axis with the combined kernel (see
:mod:`degradation.resample`), never as a full-resolution blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from degradation._tensor import per_band, to_batched
from degradation.errors import DegradationError
from degradation.resample import apply_separable, apply_separable_blocks, build_operator

#: Fitted PSF sigmas of SEN2NAIP (NAIP at 2.5 m to Sentinel-2 10 m), in HR pixels, R G B NIR.
SEN2NAIP_SIGMA_PX: tuple[float, float, float, float] = (3.0, 2.9, 2.9, 3.4)
#: Kernel size of the published opensr-degradation blur (torchvision GaussianBlur(13, sigma)).
SEN2NAIP_KERNEL_SIZE = 13
DEFAULT_TRUNCATE = 4.0


def kernel_radius(sigma_px: float, truncate: float = DEFAULT_TRUNCATE) -> int:
    """Radius in pixels of a Gaussian kernel truncated at ``truncate`` standard deviations.

    Args:
        sigma_px: standard deviation in pixels (>= 0).
        truncate: number of standard deviations kept on each side.

    Returns:
        ``ceil(truncate * sigma_px)``; 0 for sigma 0 (the identity kernel).
    """
    return int(math.ceil(truncate * sigma_px - 1e-9)) if sigma_px > 0 else 0


def gaussian_kernel(
    sigma_px: float, *, kernel_size: int | None = None, truncate: float = DEFAULT_TRUNCATE
) -> np.ndarray:
    """Normalised 1-D Gaussian kernel, float64, odd length, centred.

    Args:
        sigma_px: standard deviation in pixels; 0 gives the identity kernel ``[1.0]``.
        kernel_size: odd length (torchvision's convention: taps at ``-(K-1)/2 .. (K-1)/2``);
            None uses the radius rule :func:`kernel_radius`.
        truncate: standard deviations kept when ``kernel_size`` is None.

    Returns:
        The kernel, summing to 1.

    Raises:
        DegradationError: on a negative or non-finite sigma or an even/non-positive kernel size.
    """
    if not math.isfinite(sigma_px) or sigma_px < 0:
        raise DegradationError(f"sigma must be a finite number >= 0 pixels, got {sigma_px}")
    if kernel_size is None:
        radius = kernel_radius(sigma_px, truncate)
    else:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise DegradationError(f"kernel_size must be odd and positive, got {kernel_size}")
        radius = (kernel_size - 1) // 2
    if sigma_px == 0:
        k = np.zeros(2 * radius + 1)
        k[radius] = 1.0
        return k
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return k / k.sum()


def gaussian_kernels(
    sigma_px: Sequence[float] | np.ndarray,
    *,
    kernel_size: int | None = None,
    truncate: float = DEFAULT_TRUNCATE,
) -> np.ndarray:
    """Per-band kernels [C, K], zero-padded symmetrically to the longest one."""
    ks = [gaussian_kernel(float(s), kernel_size=kernel_size, truncate=truncate) for s in sigma_px]
    width = max(k.size for k in ks)
    out = np.zeros((len(ks), width))
    for c, k in enumerate(ks):
        pad = (width - k.size) // 2
        out[c, pad : pad + k.size] = k
    return out


def blur_downsample(
    x: np.ndarray | torch.Tensor,
    sigma_px: float | Sequence[float] | np.ndarray = SEN2NAIP_SIGMA_PX,
    factor: int = 4,
    *,
    kernel_size: int | None = None,
    truncate: float = DEFAULT_TRUNCATE,
    padding: str = "reflect",
) -> np.ndarray | torch.Tensor:
    """Per-band Gaussian blur, then bilinear downsampling by ``factor`` without antialias.

    Equal (to float rounding) to blurring each band with its Gaussian and then calling
    ``F.interpolate(scale_factor=1/factor, mode="bilinear", align_corners=False,
    antialias=False)``, but computed only where the bilinear sampler reads.

    Args:
        x: [C, H, W] or [B, C, H, W] float numpy array or torch tensor (any device; gradients
            flow through torch inputs).
        sigma_px: one sigma or one per band, in input pixels.
        factor: integer downsampling factor (1: blur only).
        kernel_size: odd kernel size for every band (13 reproduces opensr-degradation), or None
            for the radius rule.
        truncate: standard deviations kept when ``kernel_size`` is None.
        padding: "reflect" (torchvision's GaussianBlur) or "replicate".

    Returns:
        Same type and rank as ``x``, spatial size ``floor(H / factor) x floor(W / factor)``.
    """
    t, restore = to_batched(x)
    sig = per_band(sigma_px, t.shape[1], "sigma_px")
    kern = gaussian_kernels(sig, kernel_size=kernel_size, truncate=truncate)
    rows = build_operator(t.shape[-2], factor, antialias=False, prefilter=kern, padding=padding)
    cols = build_operator(t.shape[-1], factor, antialias=False, prefilter=kern, padding=padding)
    return restore(apply_separable(t, rows, cols))


def blur_downsample_blocks(
    x: np.ndarray | torch.Tensor,
    sigma_px: float | Sequence[float] | np.ndarray = SEN2NAIP_SIGMA_PX,
    factor: int = 4,
    *,
    kernel_size: int | None = None,
    truncate: float = DEFAULT_TRUNCATE,
    padding: str = "reflect",
) -> np.ndarray | torch.Tensor:
    """:func:`blur_downsample` as dense block matrix products, for CPU inference (issue 16).

    The same linear map (same taps, same boundary handling), equal to float rounding: per band,
    ``A_rows @ x @ A_cols.T`` with banded matrices built once per (size, sigma, factor) and
    applied by BLAS in row blocks (:func:`~degradation.resample.apply_separable_blocks`), about
    three times faster than the strided convolutions on one CPU thread. Arguments and result as
    :func:`blur_downsample`.
    """
    t, restore = to_batched(x)
    sig = per_band(sigma_px, t.shape[1], "sigma_px")
    kern = gaussian_kernels(sig, kernel_size=kernel_size, truncate=truncate)
    rows = build_operator(t.shape[-2], factor, antialias=False, prefilter=kern, padding=padding)
    cols = build_operator(t.shape[-1], factor, antialias=False, prefilter=kern, padding=padding)
    return restore(apply_separable_blocks(t, rows, cols))


def blur(
    x: np.ndarray | torch.Tensor,
    sigma_px: float | Sequence[float] | np.ndarray = SEN2NAIP_SIGMA_PX,
    *,
    kernel_size: int | None = None,
    truncate: float = DEFAULT_TRUNCATE,
    padding: str = "reflect",
) -> np.ndarray | torch.Tensor:
    """Per-band separable Gaussian blur at full resolution (see :func:`blur_downsample`)."""
    return blur_downsample(
        x, sigma_px, 1, kernel_size=kernel_size, truncate=truncate, padding=padding
    )


@dataclass(frozen=True)
class GaussianPSF:
    """A fitted or published per-band Gaussian PSF followed by bilinear downsampling.

    Attributes:
        sigma_px: per-band standard deviation in HR pixels.
        factor: downsampling factor HR -> LR.
        kernel_size: fixed odd kernel size, or None for the radius rule.
        truncate: standard deviations kept when ``kernel_size`` is None.
    """

    sigma_px: tuple[float, ...] = SEN2NAIP_SIGMA_PX
    factor: int = 4
    kernel_size: int | None = None
    truncate: float = DEFAULT_TRUNCATE

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Blur and downsample ``x`` ([C, H, W] or [B, C, H, W])."""
        return blur_downsample(
            x,
            self.sigma_px,
            self.factor,
            kernel_size=self.kernel_size,
            truncate=self.truncate,
        )


#: The PSF exactly as the published opensr-degradation package applies it.
SEN2NAIP_PSF = GaussianPSF(SEN2NAIP_SIGMA_PX, 4, SEN2NAIP_KERNEL_SIZE)
