"""Exact per-band histogram matching, band histograms, and matching to a given histogram.

Matching follows scikit-image's ``match_histograms`` definition exactly: a source value ``v`` has
quantile ``q(v) = #{source <= v} / n`` and becomes ``interp(q(v), q_ref, ref_values)``, where
``q_ref`` is the same empirical CDF of the reference evaluated at its distinct values. Ties in the
source therefore map to one value.

Speed: the ranks come from one sort per band of float64 keys that carry the value in their high
bits and the pixel index in the low 29 bits (a float32 widened to float64 leaves those bits zero),
so a single SIMD value sort yields both the order and the permutation (numpy's ``argsort`` is
several times slower). Integer sources (uint8 / uint16 codes, e.g. 8-bit NAIP before scaling)
take a lookup-table path instead: one ``bincount`` gives the exact CDF of every code, and the
output is one table lookup per pixel (float32 out). Bands (and batch items) run in parallel
threads. Works on numpy arrays and torch tensors (computed on CPU, returned on the input's
device; not differentiable).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from degradation._tensor import to_batched
from degradation.errors import DegradationError

N_BINS = 120
_INDEX_BITS = 29
_INDEX_MASK = np.uint64((1 << _INDEX_BITS) - 1)


def _source_ranks(src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort one band: return ``(perm, ends, distinct_values)``.

    ``perm`` maps sorted position to pixel index (int64), ``ends`` holds the last sorted position
    of every distinct value, ``distinct_values`` the values (float64), in increasing order.
    """
    n = src.size
    if src.dtype.itemsize <= 4 and n <= int(_INDEX_MASK) + 1:
        keys = src.astype(np.float64).view(np.uint64)
        keys |= np.arange(n, dtype=np.uint64)
        # Distinct float32 values differ above bit 29, so the index bits never reorder them.
        keys = np.sort(keys.view(np.float64)).view(np.uint64)
        perm = (keys & _INDEX_MASK).view(np.int64)
        values = (keys & ~_INDEX_MASK).view(np.float64)
    else:  # float64 input has no spare bits: plain argsort
        perm = np.argsort(src, kind="stable")
        values = src[perm].astype(np.float64)
    last = np.empty(n, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=last[:-1])
    last[-1] = True
    ends = np.flatnonzero(last)
    return perm, ends, values[ends]


def _match_band(
    src: np.ndarray, inverse_cdf: Callable[[np.ndarray], np.ndarray], out: np.ndarray
) -> None:
    """Write into ``out`` the band ``src`` remapped through its quantiles and ``inverse_cdf``."""
    flat = src.reshape(-1)
    perm, ends, _ = _source_ranks(flat)
    mapped = inverse_cdf((ends + 1) / flat.size).astype(out.dtype)
    if ends.size != flat.size:
        mapped = np.repeat(mapped, np.diff(ends, prepend=-1))
    np.put(out.reshape(-1), perm, mapped)  # releases the GIL, unlike fancy assignment


def _match_codes(
    codes: np.ndarray, inverse_cdf: Callable[[np.ndarray], np.ndarray], out: np.ndarray
) -> None:
    """Lookup-table version of :func:`_match_band` for unsigned integer codes."""
    flat = codes.reshape(-1)
    counts = np.bincount(flat, minlength=1)
    # Every pixel of code k has quantile #{codes <= k} / n, exactly as in the sorted path.
    lut = inverse_cdf(np.cumsum(counts) / flat.size).astype(out.dtype)
    np.take(lut, flat, out=out.reshape(-1))


def _reference_inverse_cdf(ref: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    values, counts = np.unique(ref.reshape(-1), return_counts=True)
    quantiles = np.cumsum(counts) / ref.size
    return lambda q: np.interp(q, quantiles, values)


def _histogram_inverse_cdf(q: np.ndarray, cdf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Inverse of the piecewise-linear CDF of a histogram (uniform density inside each bin).

    For ``0 < q <= 1`` the bin ``j`` with ``cdf[j] < q <= cdf[j + 1]`` is never empty, so the
    division is safe and empty bins receive no values.
    """
    j = np.clip(np.searchsorted(cdf, q, side="left"), 1, cdf.size - 1)
    lo, hi = cdf[j - 1], cdf[j]
    frac = (q - lo) / np.where(hi > lo, hi - lo, 1.0)
    return edges[j - 1] + np.clip(frac, 0.0, 1.0) * (edges[j] - edges[j - 1])


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise DegradationError(f"{name} contains NaN or infinite values; fill or mask them first")


def _run(jobs: list[Callable[[], None]], workers: int | None) -> None:
    n = workers or min(len(jobs), os.cpu_count() or 1)
    if n <= 1 or len(jobs) == 1:
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        for f in [pool.submit(job) for job in jobs]:
            f.result()


_CODE_DTYPES = (np.uint8, np.uint16)
InverseCdf = Callable[[np.ndarray], np.ndarray]


def _source_array(
    source: np.ndarray | torch.Tensor,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray | torch.Tensor]]:
    """The source as a CPU numpy array [B, C, H, W] and a function giving back the input form."""
    if isinstance(source, torch.Tensor):
        arr = np.ascontiguousarray(source.detach().cpu().numpy())
    elif isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source)
    else:
        raise DegradationError(
            f"source must be a numpy array or a torch tensor, not {type(source)}"
        )
    if arr.ndim not in (3, 4):
        raise DegradationError(f"source has shape {arr.shape}; expected [C, H, W] or [B, C, H, W]")
    if arr.dtype not in _CODE_DTYPES:
        if not np.issubdtype(arr.dtype, np.floating):
            raise DegradationError(
                f"source has dtype {arr.dtype}; give float reflectance or uint8/uint16 codes"
            )
        _check_finite(arr, "source")
    device = source.device if isinstance(source, torch.Tensor) else None
    squeeze = arr.ndim == 3

    def back(out: np.ndarray) -> np.ndarray | torch.Tensor:
        o = out[0] if squeeze else out
        return o if device is None else torch.from_numpy(o).to(device)

    return (arr[None] if squeeze else arr), back


def _match_all(
    src: np.ndarray, inverse_cdf: Callable[[int, int], InverseCdf], workers: int | None
) -> np.ndarray:
    """Remap every (item, band) of ``src`` through ``inverse_cdf(item, band)``, in threads."""
    codes = src.dtype in _CODE_DTYPES
    out = np.empty(src.shape, dtype=np.float32 if codes else src.dtype)
    band_fn = _match_codes if codes else _match_band
    jobs: list[Callable[[], None]] = []
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):

            def job(b: int = b, c: int = c) -> None:
                band_fn(src[b, c], inverse_cdf(b, c), out[b, c])

            jobs.append(job)
    _run(jobs, workers)
    return out


def match_histograms(
    source: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    *,
    workers: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Match every band of ``source`` to the same band of ``reference`` (exact, per band).

    Args:
        source: image(s) to adjust, [C, H, W] or [B, C, H, W]: float, or uint8/uint16 codes.
        reference: image(s) giving the target distribution, [C, h, w] (used for every batch
            item) or [B, C, h, w]; any spatial size.
        workers: threads (default: one per CPU core, at most one per band and batch item).

    Returns:
        ``source`` with each band's distribution replaced by the reference's; same type and
        rank as ``source``, same dtype for float sources and float32 for integer codes.

    Raises:
        DegradationError: on mismatched band/batch counts or non-finite values.
    """
    src, back = _source_array(source)
    r, _ = to_batched(reference, "reference")
    if r.shape[1] != src.shape[1] or r.shape[0] not in (1, src.shape[0]):
        raise DegradationError(
            f"reference has shape {tuple(r.shape)}, source {src.shape}: they need the same "
            "number of bands and either one reference or one per batch item"
        )
    ref = np.ascontiguousarray(r.detach().cpu().numpy())
    _check_finite(ref, "reference")
    one = ref.shape[0] == 1
    out = _match_all(src, lambda b, c: _reference_inverse_cdf(ref[0 if one else b, c]), workers)
    return back(out)


def band_histograms(
    x: np.ndarray | torch.Tensor,
    bins: int = N_BINS,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    normalize: bool = True,
) -> np.ndarray | torch.Tensor:
    """Per-band histograms with equal-width bins, as ``torch.histc`` counts them.

    Values outside ``value_range`` are ignored; a value equal to the upper edge falls in the
    last bin. ``normalize=True`` divides by the number of pixels of the band (the input of the
    SEN2NAIP variational model), so a band fully inside the range sums to 1.

    Args:
        x: [C, H, W] or [B, C, H, W].
        bins: number of bins (120 in SEN2NAIP).
        value_range: (low, high) edges.
        normalize: fractions of pixels instead of counts.

    Returns:
        [C, bins] or [B, C, bins] float32, same type as ``x``.
    """
    t, _ = to_batched(x)
    lo, hi = value_range
    if not hi > lo:
        raise DegradationError(f"value_range must be (low, high) with high > low: {value_range}")
    bsz, c = t.shape[:2]
    flat = t.detach().reshape(bsz * c, -1)
    # Same arithmetic as torch.histc: bin = floor((v - lo) * bins / (hi - lo)), clamped at hi.
    idx = ((flat - lo) * (bins / (hi - lo))).floor().long()
    idx = torch.where(flat == hi, torch.full_like(idx, bins - 1), idx)
    inside = (flat >= lo) & (flat <= hi)
    offsets = torch.arange(bsz * c, device=t.device)[:, None] * bins
    counts = torch.bincount((idx + offsets)[inside], minlength=bsz * c * bins)
    hist = counts.reshape(bsz, c, bins).to(torch.float32)
    if normalize:
        hist = hist / flat.shape[1]
    out: np.ndarray | torch.Tensor = hist
    if isinstance(x, np.ndarray):
        out = hist.cpu().numpy()
    return out[0] if x.ndim == 3 else out


def match_to_histogram(
    source: np.ndarray | torch.Tensor,
    histogram: np.ndarray | torch.Tensor,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    workers: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Match every band of ``source`` to a target distribution given as a histogram.

    The target is taken as uniform inside each bin, so its inverse CDF is piecewise linear
    between the bin edges; source quantiles are defined as in :func:`match_histograms`.

    Args:
        source: [C, H, W] or [B, C, H, W].
        histogram: counts or fractions per band over equal bins of ``value_range``, [C, bins]
            (for every batch item) or [B, C, bins].
        value_range: (low, high) of the bins.
        workers: threads (default: one per CPU core).

    Returns:
        ``source`` with the target distribution; same type, dtype and rank.

    Raises:
        DegradationError: on shape mismatch or a band whose histogram is empty or negative.
    """
    src, back = _source_array(source)
    hist = histogram.detach().cpu().numpy() if isinstance(histogram, torch.Tensor) else histogram
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim == 2:
        hist = hist[None]
    if hist.ndim != 3 or hist.shape[1] != src.shape[1] or hist.shape[0] not in (1, src.shape[0]):
        raise DegradationError(
            f"histogram has shape {hist.shape}, source {src.shape}: give [C, bins] or "
            "[B, C, bins] with the source's band count"
        )
    totals = hist.sum(axis=-1)
    if np.any(hist < 0) or np.any(totals <= 0):
        raise DegradationError("every band histogram must be non-negative with a positive sum")
    edges = np.linspace(value_range[0], value_range[1], hist.shape[-1] + 1)
    cdfs = np.concatenate([np.zeros(hist.shape[:2] + (1,)), np.cumsum(hist, axis=-1)], axis=-1)
    cdfs /= cdfs[..., -1:]
    one = hist.shape[0] == 1

    def inverse(b: int, c: int) -> InverseCdf:
        cdf = cdfs[0 if one else b, c]
        return lambda q: _histogram_inverse_cdf(q, cdf, edges)

    return back(_match_all(src, inverse, workers))
