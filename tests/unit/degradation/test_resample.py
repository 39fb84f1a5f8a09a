"""Bilinear downsampling and the banded-operator engine against torch's own interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from degradation import resample
from degradation.errors import DegradationError
from degradation.psf import blur_downsample, gaussian_kernels
from degradation.resample import _cpu_chunks, _dense_rows, build_operator, downsample


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("size", [(64, 64), (37, 41), (121, 119), (9, 8)])
def test_downsample_matches_torch_interpolate(
    antialias: bool, factor: int, size: tuple[int, int]
) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(
        x, scale_factor=1 / factor, mode="bilinear", align_corners=False, antialias=antialias
    )
    out = downsample(x, factor, antialias=antialias)
    assert isinstance(out, torch.Tensor)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_numpy_in_numpy_out_and_rank_is_kept() -> None:
    x = np.random.default_rng(0).random((4, 40, 40), dtype=np.float32)
    out = downsample(x, 4)
    assert isinstance(out, np.ndarray) and out.shape == (4, 10, 10) and out.dtype == np.float32
    ref = F.interpolate(
        torch.from_numpy(x)[None], scale_factor=0.25, mode="bilinear", antialias=True
    )[0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("n", [1100, 50, 37, 13])
@pytest.mark.parametrize("antialias", [True, False])
def test_banded_operator_equals_the_dense_definition(n: int, antialias: bool) -> None:
    # Every row (interior and boundary) must equal the directly constructed row.
    prefilter = None if antialias else gaussian_kernels([0.8, 3.4], kernel_size=None)
    op = build_operator(n, 4, antialias=antialias, prefilter=prefilter, padding="reflect")
    full = _dense_rows(np.arange(n // 4), n, 4, antialias, prefilter, "reflect")
    np.testing.assert_allclose(op.dense(), np.broadcast_to(full, op.dense().shape), atol=1e-15)
    np.testing.assert_allclose(op.dense().sum(axis=-1), 1.0, atol=1e-12)


def test_interior_rows_are_strided_copies_of_one_kernel() -> None:
    op = build_operator(1100, 4, antialias=True)
    assert op.stride == 4 and op.taps.shape == (1, 8)
    np.testing.assert_allclose(op.taps[0] * 32, [1, 3, 5, 7, 7, 5, 3, 1])
    assert op.start <= 3 and op.stop >= 272  # only a few explicit boundary rows


def test_cpu_pieces_give_the_whole_image_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first pass runs on pieces (batch items x band groups) on CPU; with per-band kernels
    # and a piece limit of 2 bands, the result must be bit for bit the one-piece result, and
    # equal the dense operators, gradients included.
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 40, 44, generator=g)
    sig = [0.6, 1.1, 1.7]
    whole = blur_downsample(x, sig)
    monkeypatch.setattr(resample, "_CPU_PASS_BYTES", 2 * 40 * 44 * 4)
    assert _cpu_chunks(x) == [
        (slice(0, 1), 0, 2), (slice(0, 1), 2, 3), (slice(1, 2), 0, 2), (slice(1, 2), 2, 3)
    ]  # fmt: skip
    xa = x.clone().requires_grad_(True)
    pieces = blur_downsample(xa, sig)
    assert isinstance(pieces, torch.Tensor) and isinstance(whole, torch.Tensor)
    assert torch.equal(pieces, whole)
    kern = gaussian_kernels(sig, kernel_size=None)
    rows = build_operator(40, 4, antialias=False, prefilter=kern).dense()
    cols = build_operator(44, 4, antialias=False, prefilter=kern).dense()
    dense = np.einsum("cij,bcjk,clk->bcil", rows, x.double().numpy(), cols)
    np.testing.assert_allclose(pieces.detach().numpy(), dense, atol=1e-6)
    pieces.sum().backward()
    assert xa.grad is not None
    expect = np.einsum("cij,clk->cjk", rows, cols)  # d(sum of outputs) / d(input)
    np.testing.assert_allclose(xa.grad.numpy(), np.broadcast_to(expect, x.shape), atol=1e-6)


def test_gradients_flow_and_match_interpolate() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 32, 36, generator=g)
    up = torch.rand(1, 2, 8, 9, generator=g)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    out = downsample(xa, 4)
    assert isinstance(out, torch.Tensor)
    (out * up).sum().backward()
    (F.interpolate(xb, scale_factor=0.25, mode="bilinear", antialias=True) * up).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=0)


def test_bad_inputs_raise_one_line_errors() -> None:
    with pytest.raises(DegradationError, match="dtype"):
        downsample(np.zeros((1, 8, 8), dtype=np.uint16), 2)
    with pytest.raises(DegradationError, match=r"\[C, H, W\]"):
        downsample(np.zeros((8, 8), dtype=np.float32), 2)
    with pytest.raises(DegradationError, match="factor"):
        downsample(np.zeros((1, 8, 8), dtype=np.float32), 0)
    with pytest.raises(DegradationError, match="fewer than the factor"):
        downsample(np.zeros((1, 3, 8), dtype=np.float32), 4)
