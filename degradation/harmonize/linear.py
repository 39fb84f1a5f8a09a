"""Linear harmonisation (SEN2VENuS): per-pair least squares from HR bands to LR bands.

Each LR band is modelled as an affine combination of all HR bands,
``lr[k] = sum_c W[c, k] * hr[c] + W[C, k]``, so ``W`` is ``(C_hr + 1) x C_lr`` (5 x 4 for
RGBNIR): one row per HR band and a last row of intercepts. The fit is ordinary least squares over
the pixels of one co-registered pair at LR resolution.
"""

from __future__ import annotations

import numpy as np
import torch

from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.resample import downsample


def fit_linear(hr: np.ndarray | torch.Tensor, lr: np.ndarray | torch.Tensor) -> np.ndarray:
    """Least-squares affine map from HR bands to LR bands, per pair.

    Args:
        hr: HR reflectance [C, H, W] or [B, C, H, W]. If it is an integer multiple of the LR
            size it is first brought to the LR grid with antialiased bilinear downsampling.
        lr: LR reflectance [K, h, w] (batched like ``hr``); K may differ from C.

    Returns:
        float64 ``W`` [C + 1, K] (or [B, C + 1, K]); the last row holds the intercepts.

    Raises:
        DegradationError: on mismatched sizes or a pair with too few pixels.
    """
    h, _ = to_batched(hr, "hr")
    lo, _ = to_batched(lr, "lr")
    if h.shape[0] != lo.shape[0]:
        raise DegradationError(f"hr has {h.shape[0]} images and lr {lo.shape[0]}; pair them")
    if h.shape[-2:] != lo.shape[-2:]:
        factor = h.shape[-1] // lo.shape[-1]
        if factor < 1 or tuple(h.shape[-2:]) != (factor * lo.shape[-2], factor * lo.shape[-1]):
            raise DegradationError(
                f"hr {tuple(h.shape[-2:])} is not an integer multiple of lr "
                f"{tuple(lo.shape[-2:])}; crop both to matching extents"
            )
        reduced = downsample(h, factor, antialias=True)
        assert isinstance(reduced, torch.Tensor)
        h = reduced
    b, c = h.shape[:2]
    n = h.shape[-1] * h.shape[-2]
    if n <= c + 1:
        raise DegradationError(f"{n} pixels cannot determine {c + 1} coefficients per band")
    x = h.detach().cpu().double().numpy().reshape(b, c, n)
    y = lo.detach().cpu().double().numpy().reshape(b, lo.shape[1], n)
    out = np.empty((b, c + 1, lo.shape[1]))
    for i in range(b):
        design = np.concatenate([x[i].T, np.ones((n, 1))], axis=1)
        out[i] = np.linalg.lstsq(design, y[i].T, rcond=None)[0]
    return out[0] if hr.ndim == 3 else out


def apply_linear(
    x: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor
) -> np.ndarray | torch.Tensor:
    """Apply an affine band map ``W`` [C + 1, K] (or one per item, [B, C + 1, K]).

    Args:
        x: [C, H, W] or [B, C, H, W] at any resolution.
        weights: from :func:`fit_linear`.

    Returns:
        [K, H, W] or [B, K, H, W], same type as ``x``; differentiable for torch inputs.
    """
    t, restore = to_batched(x)
    w = torch.as_tensor(np.asarray(weights) if isinstance(weights, np.ndarray) else weights)
    w = w.to(dtype=t.dtype, device=t.device)
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or w.shape[1] != t.shape[1] + 1 or w.shape[0] not in (1, t.shape[0]):
        raise DegradationError(
            f"weights have shape {tuple(w.shape)}; expected [{t.shape[1] + 1}, K] or "
            f"[{t.shape[0]}, {t.shape[1] + 1}, K] for an image with {t.shape[1]} bands"
        )
    out = torch.einsum("bchw,bck->bkhw", t, w[:, :-1, :].expand(t.shape[0], -1, -1))
    return restore(out + w[:, -1, :].expand(t.shape[0], -1)[:, :, None, None])
