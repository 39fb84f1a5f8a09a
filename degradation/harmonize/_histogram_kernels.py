"""Compiled (numba) loops of exact histogram matching; see :mod:`.histogram` for the method.

Each kernel is one pass over a band that numpy would need several passes for, and runs without
the GIL, so the bands of an image match in parallel threads (numpy's small per-chunk calls and
``bincount``, which holds the GIL, ran slower in two threads than in one). The arithmetic is the
same as numpy's: the bucket of a value is ``int((v - offset) * scale)`` in the value's own
precision (truncated like ``astype(intp)``) and interpolation follows ``np.interp`` operation
for operation, so results are bit-identical to the numpy definitions (tested against
scikit-image).

Compiled on first use and cached on disk (``cache=True``): next to this file, or in numba's user
cache folder (``NUMBA_CACHE_DIR``) where the package folder is read-only.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def count_codes(flat: np.ndarray, counts: np.ndarray) -> None:
    """``counts += bincount(flat)`` for unsigned integer codes (``counts`` long enough)."""
    for i in range(flat.size):
        counts[flat[i]] += 1


@njit(nogil=True, cache=True)
def gather_codes(flat: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """``out = lut[flat]`` for unsigned integer codes."""
    for i in range(flat.size):
        out[i] = lut[flat[i]]


@njit(nogil=True, cache=True)
def _bucket(v, offset, scale, use_offset, last):  # type: ignore[no-untyped-def]
    t = (v - offset) * scale if use_offset else v * scale
    c = int(t)
    # Every value lies within the band's min and max, whose buckets bound the table; the clamp
    # only keeps a stray value inside the table, where the value check catches it.
    if c < 0:
        return 0
    if c > last:
        return last
    return c


@njit(nogil=True, cache=True)
def bucket_counts(
    flat: np.ndarray,
    offset: float,
    scale: float,
    use_offset: bool,
    table: np.ndarray,
    counts: np.ndarray,
    missing: np.ndarray,
) -> int:
    """Count the pixels per bucket and collect the values whose bucket holds another value.

    ``counts`` has one counter per bucket. ``table[k]`` is the value bucket ``k`` was planned
    for (NaN: none). Values not equal to their bucket's are
    written to ``missing``; returns how many there were, or -1 as soon as there are more than
    ``missing`` can hold (the caller then sorts instead).
    """
    last = table.size - 1
    n_missing = 0
    for i in range(flat.size):
        v = flat[i]
        c = _bucket(v, offset, scale, use_offset, last)
        counts[c] += 1
        if table[c] != v:
            if n_missing == missing.size:
                return -1
            missing[n_missing] = v
            n_missing += 1
    return n_missing


@njit(nogil=True, cache=True)
def gather_buckets(
    flat: np.ndarray,
    offset: float,
    scale: float,
    use_offset: bool,
    lut: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out = lut[bucket(flat)]``."""
    last = lut.size - 1
    for i in range(flat.size):
        out[i] = lut[_bucket(flat[i], offset, scale, use_offset, last)]


@njit(nogil=True, cache=True)
def interp_sorted_keys(
    keys: np.ndarray, index_bits: int, xp: np.ndarray, fp: np.ndarray, out: np.ndarray
) -> None:
    """Remap pixels given as sorted keys (value above ``index_bits``, pixel index below).

    A group of equal values has quantile ``q = (its last position + 1) / n``, mapped through
    ``np.interp(q, xp, fp)`` (the same operations, with the interval found by a forward walk:
    the quantiles increase) and written to every pixel of the group.
    """
    n = keys.size
    mask = (np.uint64(1) << np.uint64(index_bits)) - np.uint64(1)
    shift = np.uint64(index_bits)
    last = xp.size - 1
    j = 0
    start = 0
    while start < n:
        value = keys[start] >> shift
        end = start
        while end + 1 < n and (keys[end + 1] >> shift) == value:
            end += 1
        x = (end + 1) / n
        if x < xp[0]:
            res = fp[0]
        elif x > xp[last]:
            res = fp[last]
        else:
            while j < last and xp[j + 1] <= x:
                j += 1
            if j == last or xp[j] == x:
                res = fp[j]
            else:
                slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
                res = slope * (x - xp[j]) + fp[j]
                if np.isnan(res):
                    res = slope * (x - xp[j + 1]) + fp[j + 1]
                    if np.isnan(res) and fp[j] == fp[j + 1]:
                        res = fp[j]
        for p in range(start, end + 1):
            out[keys[p] & mask] = res
        start = end + 1
