"""Fitting the PSF: the per-band Gaussian sigma that best turns HR into the observed LR."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from degradation._optimize import minimize_bands
from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.psf import DEFAULT_TRUNCATE, blur_downsample


@dataclass(frozen=True)
class SigmaFit:
    """Result of :func:`fit_sigma`.

    Attributes:
        sigma_px: fitted sigma per band, in HR pixels.
        mae: mean absolute error per band at the fitted sigma.
        evaluations: number of blur + downsample passes used.
    """

    sigma_px: tuple[float, ...]
    mae: tuple[float, ...]
    evaluations: int


def fit_sigma(
    hr: np.ndarray | torch.Tensor,
    lr: np.ndarray | torch.Tensor,
    factor: int = 4,
    *,
    bounds_px: tuple[float, float] = (0.25, 6.0),
    kernel_size: int | None = None,
    truncate: float = DEFAULT_TRUNCATE,
    tol_px: float = 1e-3,
    grid_points: int = 12,
    margin_px: int = 0,
    forward: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None,
) -> SigmaFit:
    """Find, per band, the Gaussian sigma minimising MAE(blur_downsample(hr, sigma), lr).

    The objective is evaluated for all bands at once (one blur + downsample per step): a uniform
    grid over ``bounds_px`` brackets the minimum, golden-section search refines it to ``tol_px``.
    With a batch of pairs the MAE is pooled over the batch, so one sigma per band is fitted to
    all pairs together. HR and LR must already be co-registered and radiometrically comparable
    (harmonise first).

    Args:
        hr: HR image(s), [C, H, W] or [B, C, H, W].
        lr: LR image(s), [C, H // factor, W // factor] (batched like ``hr``).
        factor: HR/LR pixel-size ratio.
        bounds_px: search interval for sigma, in HR pixels.
        kernel_size: fixed odd kernel size (13 for the published model) or None (radius rule).
        truncate: standard deviations kept when ``kernel_size`` is None.
        tol_px: final bracket width.
        grid_points: points of the initial grid.
        margin_px: LR pixels left out of the MAE at every edge (where the blur sees beyond the
            chip through padding, or a registration shift reads clamped samples).
        forward: replaces the forward model: maps the batched HR [B, C, H, W] and one sigma per
            band [C] to the LR prediction [B, C, h, w] (e.g. blur + downsample that also
            applies a known misregistration); None uses :func:`blur_downsample`.

    Returns:
        The fitted :class:`SigmaFit`.

    Raises:
        DegradationError: if the shapes do not match or the bounds are invalid.
    """
    h, _ = to_batched(hr, "hr")
    lo, _ = to_batched(lr, "lr")
    expected = (h.shape[0], h.shape[1], h.shape[2] // factor, h.shape[3] // factor)
    if tuple(lo.shape) != expected:
        raise DegradationError(
            f"lr has shape {tuple(lo.shape)} but hr {tuple(h.shape)} downsampled by {factor} "
            f"gives {expected}; crop both to matching extents"
        )
    if not 0 <= bounds_px[0] < bounds_px[1]:
        raise DegradationError(f"bounds_px must be (low, high) with 0 <= low < high: {bounds_px}")
    m = int(margin_px)
    if m < 0 or 2 * m >= min(lo.shape[-2:]):
        raise DegradationError(
            f"margin_px={margin_px} leaves no LR pixel of {tuple(lo.shape[-2:])}; use a smaller one"
        )
    lo = lo.to(h.dtype)
    inner = (..., slice(m, lo.shape[-2] - m), slice(m, lo.shape[-1] - m))

    def objective(sigmas: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            if forward is None:
                pred = blur_downsample(
                    h, sigmas, factor, kernel_size=kernel_size, truncate=truncate
                )
            else:
                pred = forward(h, sigmas)
            assert isinstance(pred, torch.Tensor)
            err = (pred[inner] - lo[inner]).abs().double().mean(dim=(0, 2, 3))
        return err.cpu().numpy()

    sigma, mae, calls = minimize_bands(
        objective,
        bounds_px[0],
        bounds_px[1],
        h.shape[1],
        grid_points=grid_points,
        tol=tol_px,
    )
    return SigmaFit(tuple(float(s) for s in sigma), tuple(float(m) for m in mae), calls)
