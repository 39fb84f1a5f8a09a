"""PSF blur + downsampling as dense block matrices (issue 16): the same map as the conv1d path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degradation.psf import (
    SEN2NAIP_SIGMA_PX,
    blur_downsample,
    blur_downsample_blocks,
    gaussian_kernels,
)
from degradation.resample import block_matrix, build_operator

CASES = [
    # (height, width, sigmas, factor, kernel_size, padding)
    (1100, 1100, SEN2NAIP_SIGMA_PX, 4, 13, "reflect"),  # SEN2NAIP's synthetic image
    (484, 484, SEN2NAIP_SIGMA_PX, 4, None, "reflect"),
    (101, 97, (1.0, 2.5, 0.0), 4, None, "replicate"),
    (64, 75, (3.4,), 2, 13, "reflect"),
    (37, 41, (0.7, 1.6), 3, None, "reflect"),
    (9, 7, (2.0,), 4, None, "reflect"),  # fewer LR rows than one block
    (50, 40, (1.2, 0.5), 1, None, "replicate"),  # blur only
]


@pytest.mark.parametrize(("h", "w", "sigmas", "factor", "kernel_size", "padding"), CASES)
def test_blocks_equal_the_conv1d_path_to_float_rounding(
    h: int, w: int, sigmas: tuple[float, ...], factor: int, kernel_size: int | None, padding: str
) -> None:
    gen = torch.Generator().manual_seed(h * w)
    x = torch.rand(2, len(sigmas), h, w, generator=gen, dtype=torch.float64)
    kw = {"kernel_size": kernel_size, "padding": padding}
    ref = blur_downsample(x, sigmas, factor, **kw)
    out = blur_downsample_blocks(x, sigmas, factor, **kw)
    assert isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor)
    assert out.shape == ref.shape and out.dtype == torch.float64 and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-13, rtol=0)
    # float32: the sums run in another order, so equal to float32 rounding, not bitwise.
    x32 = x.float()
    ref32 = blur_downsample(x32, sigmas, factor, **kw)
    out32 = blur_downsample_blocks(x32, sigmas, factor, **kw)
    assert isinstance(out32, torch.Tensor) and out32.dtype == torch.float32
    torch.testing.assert_close(out32, ref32, atol=1e-6, rtol=1e-6)


def test_numpy_in_numpy_out_and_one_image() -> None:
    x = np.random.default_rng(0).random((4, 120, 88), dtype=np.float32)
    out = blur_downsample_blocks(x, SEN2NAIP_SIGMA_PX, 4, kernel_size=13)
    assert isinstance(out, np.ndarray) and out.shape == (4, 30, 22) and out.dtype == np.float32
    ref = blur_downsample(x, SEN2NAIP_SIGMA_PX, 4, kernel_size=13)
    np.testing.assert_allclose(out, np.asarray(ref), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("n", "factor", "kernel_size"), [(1100, 4, 13), (131, 4, None), (6, 3, 5)])
def test_block_matrix_holds_exactly_the_dense_operator(
    n: int, factor: int, kernel_size: int | None
) -> None:
    kern = gaussian_kernels(SEN2NAIP_SIGMA_PX, kernel_size=kernel_size)
    op = build_operator(n, factor, antialias=False, prefilter=kern)
    bm = block_matrix(op)
    assert block_matrix(op) is bm  # built once per operator
    rebuilt = np.zeros((4, op.n_out, op.n_in))
    covered = 0
    for run in bm.runs:
        for j in range(run.blocks):
            r0, c0 = run.row + j * run.rows, run.col + j * run.step
            rebuilt[:, r0 : r0 + run.rows, c0 : c0 + bm.width] = run.mats
            covered += run.rows
    assert covered == op.n_out
    np.testing.assert_array_equal(rebuilt, op.dense())
    if n == 1100:
        # The interior shares one block: few products per image, whatever its size.
        assert len(bm.runs) <= 4 and max(r.blocks for r in bm.runs) >= 30


def test_same_result_on_one_and_two_threads() -> None:
    x = torch.rand(1, 4, 1100, 1100, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = blur_downsample_blocks(x, SEN2NAIP_SIGMA_PX, 4, kernel_size=13)
        torch.set_num_threads(2)
        two = blur_downsample_blocks(x, SEN2NAIP_SIGMA_PX, 4, kernel_size=13)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)  # type: ignore[arg-type]
