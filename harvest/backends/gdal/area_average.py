"""Exact area averages between nested grids with separable overlap weights (pure numpy).

Each output pixel weighs the fractional source pixels it covers, as GDAL's ``average`` does
(tested equal to float32 rounding). Between pixel sizes with a small rational ratio (2.5 m from
1 m or 0.6 m) the weights repeat, so they are applied as a few strided slices per phase, with
exact integer taps for 8/16-bit sources; other ratios use a sparse product. The GDAL reader
finds the source window (:func:`harvest.backends.gdal.reader.aligned_window`) and calls
:func:`area_average_raw` on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt


def axis_weights(
    out_origin: float, out_step: float, n_out: int, src_origin: float, src_step: float, n_src: int
) -> Any:
    """Sparse ``[n_out, n_src]`` overlap weights along one axis (rows sum to 1 inside).

    Steps may be negative (rows grow southward); intervals are handled by their ends.
    """
    from scipy.sparse import csr_matrix

    o_edges = out_origin + out_step * np.arange(n_out + 1)
    s_edges = src_origin + src_step * np.arange(n_src + 1)
    if out_step < 0:
        o_edges, s_edges = -o_edges, -s_edges
    o_lo, o_hi = o_edges[:-1], o_edges[1:]
    s_lo, s_hi = s_edges[:-1], s_edges[1:]
    first = np.clip(np.searchsorted(s_hi, o_lo, side="right"), 0, n_src)
    last = np.clip(np.searchsorted(s_lo, o_hi, side="left"), 0, n_src)
    rows, cols, vals = [], [], []
    width = abs(out_step)
    for k in range(int((last - first).max(initial=0))):
        j = first + k
        ok = j < last
        jj = np.minimum(j, n_src - 1)
        overlap = np.minimum(o_hi, s_hi[jj]) - np.maximum(o_lo, s_lo[jj])
        ok &= overlap > 0
        rows.append(np.flatnonzero(ok))
        cols.append(jj[ok])
        vals.append(overlap[ok] / width)
    return csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_out, n_src),
    )


@dataclass(frozen=True)
class AxisPlan:
    """Area-average weights along one axis, in the cheapest form that applies.

    Between two grids whose pixel sizes have a small rational ratio (2.5 m from 1 m: 2 output
    pixels per 5 source pixels; from 0.6 m: 6 per 25) the weights repeat every ``period_out``
    output pixels, shifted by ``period_src`` source pixels. Output pixel ``r + period_out * m``
    is then ``sum_k taps[r, k] * x[first[r] + k + period_src * m]``: a few strided slices per
    phase instead of a generic sparse product (``sparse`` is None). Other ratios keep the
    sparse matrix.
    """

    n_out: int
    period_out: int
    period_src: int
    first: tuple[int, ...]
    taps: npt.NDArray[np.float32]
    sparse: Any = None
    int_taps: npt.NDArray[np.int64] | None = None
    denominator: int = 1


def rational_period(ratio: float, limit: int = 64) -> tuple[int, int] | None:
    """Smallest ``(p_out, p_src)`` with ``p_out * ratio == p_src`` (integers), if small."""
    for p_out in range(1, limit + 1):
        p_src = round(p_out * ratio)
        if p_src >= 1 and abs(p_out * ratio - p_src) < 1e-9 * max(1.0, p_src):
            return p_out, p_src
    return None


@lru_cache(maxsize=256)
def axis_plan(offset: float, out_step: float, n_out: int, src_step: float, n_src: int) -> AxisPlan:
    """Cached weights of one axis; ``offset`` is the output origin minus the source origin.

    Chips of one source share (pixel sizes, offset) pairs, so each pattern is built once.
    """
    w = axis_weights(offset, out_step, n_out, 0.0, src_step, n_src).tocsr()
    counts = np.diff(w.indptr)
    period = rational_period(abs(out_step / src_step))
    if period is not None and counts.size and counts.min() > 0:
        p_out, p_src = period
        k = int(counts.max())
        first = w.indices[w.indptr[:-1]].astype(np.int64)
        taps = np.zeros((n_out, k), dtype=np.float64)
        for i in range(n_out):
            lo, hi = w.indptr[i], w.indptr[i + 1]
            taps[i, w.indices[lo:hi] - first[i]] = w.data[lo:hi]
        idx = np.arange(n_out)
        phase = idx % p_out
        periodic = np.array_equal(first, first[phase] + p_src * (idx // p_out))
        periodic = periodic and bool(np.allclose(taps, taps[phase], rtol=0, atol=1e-9))
        if periodic:
            phase_taps = taps[:p_out]
            int_taps, denominator = None, 1
            for d in range(1, 129):
                scaled = phase_taps * d
                if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-9):
                    int_taps, denominator = np.round(scaled).astype(np.int64), d
                    break
            return AxisPlan(
                n_out, p_out, p_src, tuple(int(f) for f in first[:p_out]),
                phase_taps.astype(np.float32), None, int_taps, denominator,
            )  # fmt: skip
    return AxisPlan(n_out, 0, 0, (), np.zeros((0, 0), np.float32), sparse=w)


def apply_axis(
    x: npt.NDArray[Any], axis: int, plan: AxisPlan, int_dtype: Any = None
) -> npt.NDArray[Any]:
    """Weights of ``plan`` along ``axis`` (1: rows, 2: columns) of a ``[C, H, W]`` array.

    With ``int_dtype`` (integer input, ``plan.int_taps`` set) the sums use the integer taps
    (``taps * denominator``) in that dtype: exact, and half the memory traffic of float32.
    """
    shape = list(x.shape)
    shape[axis] = plan.n_out
    if plan.sparse is not None:
        moved = np.moveaxis(x, axis, 0)
        flat = moved.reshape(moved.shape[0], -1).astype(np.float64)
        y = np.asarray(plan.sparse @ flat).reshape(plan.n_out, *moved.shape[1:])
        return np.ascontiguousarray(np.moveaxis(y, 0, axis), dtype=np.float32)
    dtype: np.dtype[Any] = np.dtype(np.float32 if int_dtype is None else int_dtype)
    taps: Any = plan.taps if int_dtype is None else plan.int_taps
    out = np.empty(shape, dtype=dtype)

    def along(a: npt.NDArray[Any], start: int, step: int, count: int) -> npt.NDArray[Any]:
        index: list[slice] = [slice(None)] * a.ndim
        index[axis] = slice(start, start + step * (count - 1) + 1, step)
        return a[tuple(index)]

    for r in range(plan.period_out):
        count = len(range(r, plan.n_out, plan.period_out))
        if count == 0:
            continue
        dst = along(out, r, plan.period_out, count)
        # Slices that share a tap are summed first and multiplied once, straight into the
        # output (2 x (a + b) + c for the 1 m -> 2.5 m taps 2, 2, 1: three passes, no
        # temporaries).
        by_tap: dict[Any, list[npt.NDArray[Any]]] = {}
        for k, tap in enumerate(taps[r].tolist()):
            if tap != 0:
                by_tap.setdefault(tap, []).append(
                    along(x, plan.first[r] + k, plan.period_src, count)
                )
        if not by_tap:
            dst[...] = 0
            continue
        groups = sorted(by_tap.items(), key=lambda kv: (kv[0] == 1, -len(kv[1])))
        tap, srcs = groups[0]
        if len(srcs) > 1:
            np.add(srcs[0], srcs[1], out=dst, dtype=dtype)
        else:
            np.copyto(dst, srcs[0], casting="unsafe")
        for src in srcs[2:]:
            np.add(dst, src, out=dst)
        if tap != 1:
            np.multiply(dst, dtype.type(tap), out=dst)
        for tap, srcs in groups[1:]:
            for src in srcs:
                if tap == 1:
                    np.add(dst, src, out=dst, dtype=dtype, casting="unsafe")
                else:
                    dst += np.multiply(src, dtype.type(tap), dtype=dtype)
    return out


def integer_sum_dtype(dtype: np.dtype[Any], *plans: AxisPlan) -> Any:
    """An unsigned dtype that holds the integer-tap sums of ``dtype`` data, or None."""
    if dtype.kind != "u" or any(p.int_taps is None for p in plans):
        return None
    bound = int(np.iinfo(dtype).max)
    for p in plans:
        assert p.int_taps is not None
        bound *= int(p.int_taps.sum(axis=1).max())
    for candidate in (np.uint16, np.uint32):
        if bound <= np.iinfo(candidate).max:
            return candidate
    return None


def area_average_raw(
    raw: npt.NDArray[Any], plan_r: AxisPlan, plan_c: AxisPlan, nodata: float | None
) -> npt.NDArray[np.float32]:
    """Area average of a ``[C, h, w]`` source window with separable weights (float32).

    Rows, then columns, each with per-axis overlap weights (:func:`axis_plan`; 2-3 taps per
    output for 1 m -> 2.5 m). Unsigned-integer sources with no nodata sum with exact integer
    taps and are divided once at the end. Nodata pixels drop out of the average (their
    weight is renormalised away), as in GDAL.
    """
    if nodata is None or np.isnan(nodata):
        valid = np.isfinite(raw) if raw.dtype.kind == "f" else None
    else:
        valid = raw != nodata
    if valid is not None and valid.all():
        valid = None

    def both_axes(a: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        # Rows first: the row pass reads contiguous rows and shrinks the array 2.5x.
        return apply_axis(apply_axis(a, 1, plan_r), 2, plan_c)

    if valid is None:
        int_dtype = integer_sum_dtype(raw.dtype, plan_r, plan_c)
        if int_dtype is None:
            return both_axes(raw)
        sums = apply_axis(apply_axis(raw, 1, plan_r, int_dtype), 2, plan_c, int_dtype)
        scale = np.float32(plan_r.denominator * plan_c.denominator)
        return np.divide(sums, scale, dtype=np.float32)
    num = both_axes(np.where(valid, raw, 0))
    den = both_axes(valid.view(np.uint8))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: npt.NDArray[np.float32] = np.where(den > 1e-9, num / den, np.float32(np.nan))
    return out.astype(np.float32, copy=False)
