"""Conversion between the accepted array types and the batched torch layout used inside.

Every public function takes a numpy array or a torch tensor shaped [C, H, W] or [B, C, H, W] and
returns the same type and rank it was given. numpy arrays are wrapped without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from degradation.errors import DegradationError


def to_batched(x: np.ndarray | torch.Tensor, name: str = "image") -> tuple[torch.Tensor, Callable]:
    """Return ``x`` as a float tensor [B, C, H, W] and a function restoring the input form.

    Args:
        x: numpy array or torch tensor, [C, H, W] or [B, C, H, W], floating point.
        name: what to call the argument in error messages.

    Returns:
        The batched tensor (a view of ``x`` where possible) and ``restore(tensor) -> same type and
        rank as x``.

    Raises:
        DegradationError: if ``x`` is not a 3-D or 4-D floating-point array.
    """
    was_numpy = isinstance(x, np.ndarray)
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise DegradationError(
                f"{name} has dtype {x.dtype}; convert it to float32 reflectance first "
                "(for example x.astype(np.float32) / 10000)"
            )
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        if not torch.is_floating_point(x):
            raise DegradationError(
                f"{name} has dtype {x.dtype}; convert it to float32 reflectance first "
                "(for example x.float() / 10000)"
            )
        t = x
    else:
        raise DegradationError(f"{name} must be a numpy array or a torch tensor, not {type(x)}")
    if t.ndim not in (3, 4):
        raise DegradationError(
            f"{name} has shape {tuple(t.shape)}; expected [C, H, W] or [B, C, H, W]"
        )
    squeeze = t.ndim == 3
    if squeeze:
        t = t.unsqueeze(0)

    def restore(out: torch.Tensor) -> np.ndarray | torch.Tensor:
        if squeeze:
            out = out.squeeze(0)
        if was_numpy:
            return out.detach().cpu().numpy()
        return out

    return t, restore


def per_band(
    values: float | np.ndarray | torch.Tensor | Sequence[float],
    n_bands: int,
    name: str,
) -> np.ndarray:
    """Broadcast a scalar or a per-band sequence to a float64 array of length ``n_bands``.

    Raises:
        DegradationError: if a sequence does not have one value per band.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(n_bands, float(arr[0]))
    if arr.size != n_bands:
        raise DegradationError(
            f"{name} has {arr.size} values but the image has {n_bands} bands; "
            "give one value or one per band"
        )
    return arr
