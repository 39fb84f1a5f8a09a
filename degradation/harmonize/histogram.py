"""Exact per-band histogram matching, band histograms, and matching to a given histogram.

Matching follows scikit-image's ``match_histograms`` definition exactly: a source value ``v`` has
quantile ``q(v) = #{source <= v} / n`` and becomes ``interp(q(v), q_ref, ref_values)``, where
``q_ref`` is the same empirical CDF of the reference evaluated at its distinct values. Ties in the
source therefore map to one value.

Speed (every path gives exactly scikit-image's result; bands and batch items run in threads, and
the per-pixel loops are compiled with numba and run without the GIL, so the threads run in
parallel):

- Integer codes (uint8 / uint16, e.g. 8-bit NAIP before scaling): one counting pass gives the
  exact CDF of every code and the output is one table lookup per pixel (float32 out).
- Float bands with few distinct values (reflectance stored as integer DN / 255 or DN / 10000,
  area averages of 8-bit data): a sample proposes the values, a monotone map
  ``int((v - offset) * scale)`` gives each its own bucket, one pass counts the pixels per bucket
  and checks that every pixel holds exactly its bucket's value (values the sample missed get
  empty buckets of their own), one pass looks the output up. Anything that does not fit (too
  many values, two values in one bucket) falls back to sorting.
- Any other float band: one sort per band of float64 keys that carry the value in their high
  bits and the pixel index in the low 29 bits (a float32 widened to float64 leaves those bits
  zero), so a single SIMD value sort yields both the order and the permutation (numpy's
  ``argsort`` is several times slower); then one compiled pass walks the sorted keys: groups of
  ties, their quantiles, the interpolation into the reference (a forward walk, the quantiles
  increase) and the scatter to the pixels. The sort (about 8 ms per 1100 x 1100 band) bounds
  this path. (Matching to a histogram, :func:`match_to_histogram`, uses numpy for the part
  after the sort.)

Works on numpy arrays and torch tensors (computed on CPU, returned on the input's device; not
differentiable). NaN or infinite values raise :class:`DegradationError`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.harmonize import _histogram_kernels as _k

InverseCdf = Callable[[np.ndarray], np.ndarray]
N_BINS = 120
_INDEX_BITS = 29
_INDEX_MASK = np.uint64((1 << _INDEX_BITS) - 1)
# Few-values path: pixels sampled to guess the distinct values, the most distinct values a sample
# may show (a fraction of its size), and the largest bucket table.
_SAMPLE = 1 << 16
_MAX_SAMPLE_DISTINCT_FRACTION = 0.5
_MAX_BUCKETS = 1 << 21
_SORT_CHUNK = 1 << 16  # sorted keys per step of the sort path
# Bucket width is the smallest gap between distinct values divided by this: adjacent values are
# at least this many buckets apart, so values the sample missed still fall in buckets of their own
# as long as their gaps are not much smaller.
_BUCKET_MARGIN = 1.25

_FEW_VALUE_DTYPES = (np.float32, np.float64)

_aranges: dict[int, np.ndarray] = {}
_aranges_lock = threading.Lock()


def _pixel_indices(n: int) -> np.ndarray:
    """``arange(n)`` as uint64, cached: every band of a batch needs the same one."""
    with _aranges_lock:
        idx = _aranges.get(n)
        if idx is None:
            if len(_aranges) > 8:
                _aranges.clear()
            idx = _aranges[n] = np.arange(n, dtype=np.uint64)
            idx.flags.writeable = False
    return idx


def _check_band(flat: np.ndarray) -> tuple[float, float]:
    """Return the band's (min, max); raise if it holds NaN or infinity (min/max propagate NaN)."""
    lo, hi = flat.min(), flat.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DegradationError("source contains NaN or infinite values; fill or mask them first")
    return float(lo), float(hi)


def _match_sorted(flat: np.ndarray, inverse_cdf: InverseCdf, out: np.ndarray) -> None:
    """Sort path: exact ranks of any float values from one value sort per band.

    The sort runs on float64 keys that carry the value in their high bits and the pixel index in
    the low 29 bits (a float32 widened to float64 leaves those bits zero), so one SIMD value sort
    yields both the order and the permutation (``np.argsort`` is about 3x slower). The sorted
    keys are then consumed in cache-sized chunks cut at the end of a group of tied values.
    """
    n = flat.size
    out_flat = out.reshape(-1)
    if flat.dtype.itemsize > 4 or n > int(_INDEX_MASK) + 1:
        # float64 input has no spare bits; the order among ties does not matter.
        perm = np.argsort(flat)
        _scatter_ranked(flat[perm], perm, 0, n, inverse_cdf, out_flat)
        return
    # Adding +0.0 turns -0.0 into +0.0, so equal values have equal high bits.
    keys = np.add(flat, 0.0, dtype=np.float64).view(np.uint64)
    np.bitwise_or(keys, _pixel_indices(n), out=keys)
    # Distinct float32 values differ above bit 29, so the index bits never reorder them.
    keys.view(np.float64).sort()
    if isinstance(inverse_cdf, _InterpCdf):
        # One compiled pass: groups, quantiles, interpolation (a forward walk instead of a
        # binary search per group) and the scatter.
        _k.interp_sorted_keys(
            keys, _INDEX_BITS, inverse_cdf.quantiles, inverse_cdf.values, out_flat
        )
        return
    shift = np.uint64(_INDEX_BITS)
    start, size = 0, _SORT_CHUNK
    while start < n:
        stop = min(start + size, n)
        # One look-ahead key tells whether the chunk's last group of ties goes on.
        high = keys[start : stop + 1] >> shift
        last = np.empty(stop - start, dtype=bool)
        np.not_equal(high[1:], high[:-1], out=last[: high.size - 1])
        last[high.size - 1 :] = True
        ends = np.flatnonzero(last)
        if ends.size == 0:  # one group of ties longer than the chunk: take more
            size *= 2
            continue
        stop = start + int(ends[-1]) + 1
        chunk = keys[start:stop]
        perm = np.bitwise_and(chunk, _INDEX_MASK).view(np.int64)
        _scatter_ranked(None, perm, start, n, inverse_cdf, out_flat, ends)
        start, size = stop, _SORT_CHUNK


def _scatter_ranked(
    values: np.ndarray | None,
    perm: np.ndarray,
    start: int,
    n: int,
    inverse_cdf: InverseCdf,
    out_flat: np.ndarray,
    ends: np.ndarray | None = None,
) -> None:
    """Write the outputs of sorted positions ``start, start + 1, ...`` to pixels ``perm``.

    ``ends`` are the chunk-relative last positions of the groups of equal values (found from
    ``values`` when not given); the chunk must end with a complete group.
    """
    if ends is None:
        assert values is not None
        last = np.empty(perm.size, dtype=bool)
        np.not_equal(values[1:], values[:-1], out=last[:-1])
        last[-1:] = True
        ends = np.flatnonzero(last)
    # A value's quantile is the count of values <= it, over n: its group's last position + 1.
    mapped = inverse_cdf(np.add(ends, start + 1) / n).astype(out_flat.dtype)
    if ends.size != perm.size:
        mapped = np.repeat(mapped, np.diff(ends, prepend=-1))
    np.put(out_flat, perm, mapped)  # faster than fancy assignment here


def _value_buckets(distinct: np.ndarray) -> tuple[Any, Any, np.ndarray] | None:
    """A monotone map value -> bucket ``int((v - offset) * scale)``, one bucket per value.

    Args:
        distinct: sorted distinct finite values (float32 or float64).

    Returns:
        ``(offset, scale, buckets of distinct)``, offset and scale as scalars of the values'
        dtype, or None when the values are too unevenly spaced for a table of at most
        ``_MAX_BUCKETS`` buckets. ``offset`` is None (no subtraction) when the values are
        non-negative and the table starting at 0 is still small, as for reflectance.
    """
    dtype = distinct.dtype.type
    lo, hi = float(distinct[0]), float(distinct[-1])
    gap = float(np.diff(distinct.astype(np.float64)).min()) if distinct.size > 1 else 1.0
    if (hi - lo) / gap * _BUCKET_MARGIN > _MAX_BUCKETS / 2:
        return None
    scale = dtype(_BUCKET_MARGIN / gap)
    if not np.isfinite(scale):
        return None
    offset = None if lo >= 0 and hi * float(scale) < _MAX_BUCKETS / 2 else distinct[0]
    own = _bucketize(distinct, offset, scale)
    if own[0] < 0 or own[-1] >= _MAX_BUCKETS or not np.all(own[1:] > own[:-1]):
        return None
    return offset, scale, own


def _bucketize(x: np.ndarray, offset: Any, scale: Any) -> np.ndarray:
    """``int((x - offset) * scale)``: non-decreasing in ``x`` (IEEE rounding is monotone)."""
    t = np.multiply(x, scale) if offset is None else np.multiply(np.subtract(x, offset), scale)
    return t.astype(np.intp)


def _match_few_values(
    flat: np.ndarray, lo: float, hi: float, inverse_cdf: InverseCdf, out: np.ndarray
) -> bool:
    """Lookup-table path for bands with few distinct values (e.g. integer DN / 10000).

    A sample proposes the distinct values (plus the exact min and max); a monotone bucket map
    gives each its own bucket; every pixel is checked to hold exactly its bucket's value, values
    the sample missed are given their own (empty) buckets, and ``bincount`` gives exact counts
    per value. Runs in cache-sized chunks. Returns False (nothing written) when the band has too
    many distinct values or they do not fit a bucket table, so the caller sorts instead.
    """
    n = flat.size
    step = max(1, n // _SAMPLE)
    sample = flat[::step]
    distinct = np.unique(np.concatenate([sample, np.array([lo, hi], dtype=flat.dtype)]))
    if distinct.size > _MAX_SAMPLE_DISTINCT_FRACTION * sample.size + 2:
        return False
    plan = _value_buckets(distinct)
    if plan is None:
        return False
    offset, scale, own = plan
    n_buckets = int(own[-1]) + 1  # lo and hi are in distinct and the map is monotone
    table = np.full(n_buckets, np.nan, dtype=flat.dtype)
    table[own] = distinct
    counts = np.zeros(n_buckets, dtype=np.intp)
    use_offset = offset is not None
    off = flat.dtype.type(0 if offset is None else offset)
    missing = np.empty(n // 8, dtype=flat.dtype)
    n_missing = _k.bucket_counts(flat, off, scale, use_offset, table, counts, missing)
    if n_missing < 0:
        return False
    if n_missing:
        extra = np.unique(missing[:n_missing])
        extra_codes = _bucketize(extra, offset, scale)
        # Each added value needs a bucket of its own that no sampled value holds.
        if not np.isnan(table[extra_codes]).all() or np.unique(extra_codes).size != extra.size:
            return False
        own = np.concatenate([own, extra_codes])
    # Every pixel of bucket k has quantile #{pixels in buckets <= k} / n, as in the sort path.
    lut = np.zeros(n_buckets, dtype=out.dtype)
    lut[own] = inverse_cdf(np.cumsum(counts)[own] / n)
    _k.gather_buckets(flat, off, scale, use_offset, lut, out.reshape(-1))
    return True


def _match_band(src: np.ndarray, inverse_cdf: InverseCdf, out: np.ndarray) -> None:
    """Write into ``out`` the band ``src`` remapped through its quantiles and ``inverse_cdf``."""
    flat = src.reshape(-1)
    if flat.size == 0:
        return
    lo, hi = _check_band(flat)
    if flat.dtype in _FEW_VALUE_DTYPES:
        with np.errstate(invalid="ignore", over="ignore"):
            if _match_few_values(flat, lo, hi, inverse_cdf, out):
                return
    _match_sorted(flat, inverse_cdf, out)


def _match_codes(codes: np.ndarray, inverse_cdf: InverseCdf, out: np.ndarray) -> None:
    """Lookup-table version of :func:`_match_band` for unsigned integer codes."""
    flat = codes.reshape(-1)
    n_codes = int(flat.max()) + 1 if flat.size else 1
    counts = np.zeros(n_codes, dtype=np.intp)
    _k.count_codes(flat, counts)
    # Every pixel of code k has quantile #{codes <= k} / n, exactly as in the sorted path.
    lut = inverse_cdf(np.cumsum(counts) / flat.size).astype(out.dtype)
    _k.gather_codes(flat, lut, out.reshape(-1))


class _InterpCdf:
    """``q -> np.interp(q, quantiles, values)``: the reference's inverse empirical CDF."""

    def __init__(self, quantiles: np.ndarray, values: np.ndarray) -> None:
        self.quantiles = quantiles
        self.values = values.astype(np.float64)  # np.interp works in float64

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return np.interp(q, self.quantiles, self.values)


def _reference_inverse_cdf(ref: np.ndarray) -> _InterpCdf:
    values, counts = np.unique(ref.reshape(-1), return_counts=True)
    return _InterpCdf(np.cumsum(counts) / ref.size, values)


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
    if arr.dtype not in _CODE_DTYPES and not np.issubdtype(arr.dtype, np.floating):
        raise DegradationError(
            f"source has dtype {arr.dtype}; give float reflectance or uint8/uint16 codes"
        )
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
    cache: dict[tuple[int, int], InverseCdf] = {}

    def inverse(b: int, c: int) -> InverseCdf:
        # A reference shared by the batch is summarised once per band (a rare race only
        # computes it twice).
        key = (0 if one else b, c)
        if key not in cache:
            cache[key] = _reference_inverse_cdf(ref[key])
        return cache[key]

    return back(_match_all(src, inverse, workers))


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
