"""The polyphase area-average plans (backends/gdal) agree with the generic sparse weights."""

from __future__ import annotations

import numpy as np
import pytest

from harvest.backends.gdal.area_average import apply_axis, axis_plan, axis_weights


@pytest.mark.parametrize(
    ("out_step", "src_step", "offset", "n_out", "n_src", "periodic"),
    [
        (2.5, 1.0, 0.0, 484, 1210, True),  # NAIP 1 m -> 2.5 m, chip on source pixel edges
        (2.5, 1.0, 0.5, 484, 1211, True),  # half a source pixel off
        (2.5, 0.6, 0.25, 484, 2018, True),  # NAIP 0.6 m -> 2.5 m (6 outputs per 25 sources)
        (20.0, 10.0, 0.0, 60, 120, True),  # 10 m -> 20 m
        (2.5, 0.5**0.5, 0.1, 50, 180, False),  # irrational ratio: sparse fallback
    ],
)
def test_plan_matches_sparse_weights(
    out_step: float, src_step: float, offset: float, n_out: int, n_src: int, periodic: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2, n_src, 7)).astype(np.uint8)
    for sign in (1.0, -1.0):  # columns (eastward) and rows (southward) steps
        plan = axis_plan(sign * offset, sign * out_step, n_out, sign * src_step, n_src)
        assert (plan.sparse is None) == periodic
        w = axis_weights(sign * offset, sign * out_step, n_out, 0.0, sign * src_step, n_src)
        want = np.einsum("ij,bjk->bik", w.toarray(), x.astype(np.float64))
        got = apply_axis(x, 1, plan)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=255 * 1e-6)
        # The same plan along the column axis.
        got_c = apply_axis(np.ascontiguousarray(x.transpose(0, 2, 1)), 2, plan)
        np.testing.assert_allclose(got_c, want.transpose(0, 2, 1), rtol=0, atol=255 * 1e-6)


def test_integer_taps_give_the_same_average() -> None:
    """uint8 sources average with exact integer taps (1 m -> 2.5 m: 2, 2, 1 over 5)."""
    from harvest.backends.gdal.area_average import integer_sum_dtype

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(3, 1211, 1211)).astype(np.uint8)
    rows = axis_plan(-0.5, -2.5, 484, -1.0, 1211)
    cols = axis_plan(0.5, 2.5, 484, 1.0, 1211)
    assert rows.int_taps is not None and rows.denominator == 5
    dtype = integer_sum_dtype(x.dtype, rows, cols)
    assert dtype == np.uint16
    sums = apply_axis(apply_axis(x, 1, rows, dtype), 2, cols, dtype)
    got = sums / np.float64(rows.denominator * cols.denominator)
    want = apply_axis(apply_axis(x, 1, rows), 2, cols)
    np.testing.assert_allclose(got, want, rtol=0, atol=255 * 1e-6)
    # 0.6 m sources: taps are multiples of 1/25, sums need 32 bits.
    fine = axis_plan(0.0, 2.5, 100, 0.6, 420)
    assert fine.int_taps is not None and fine.denominator == 25
    assert integer_sum_dtype(np.dtype(np.uint8), fine, fine) == np.uint32
