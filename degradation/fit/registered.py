"""The registered forward model and the joint fit of gamma, sigma, shift and noise on pairs.

:func:`fit_pairs` fits, on :class:`~degradation.fit.pairs.PairChip` values, as in SEN2NAIP:

- **registration**: each chip starts from the misregistration of
  :func:`~degradation.fit.pairs.registration_shifts`. Unless ``shift="none"``, the fit then
  refines the scene's shift (one common correction, coordinate search to ~0.01 m minimising the
  MAE of the forward model): a 0.3 m error (what a per-chip estimate can have) leaves residuals
  that would be read as noise. The shift is applied in the forward model, never by resampling
  the noisy LR: ``LR(p) = blur(Upsilon(HR))(p - shift)`` sampled bilinearly (edges clamped,
  :class:`RegisteredPSF`). Every error is measured on the chip minus ``margin_px`` LR pixels at
  each edge, where the blur would see padding instead of the scene.
- **gamma and sigma, jointly**: the paper fits sigma on NAIP_h (the HR made radiometrically
  comparable to S2). Histogram-matching the sharp HR to the blurred LR would squeeze the HR's
  contrast and bias sigma low, so we alternate instead: per chip and band the gamma of the
  power law ``x ** (1 / gamma)`` with the current PSF as the forward model
  (:func:`degradation.harmonize.gamma.fit_gamma`), then per scene and band the sigma on the
  harmonised HR of all its chips pooled (:func:`degradation.fit.psf.fit_sigma`), starting from
  the paper's sigma; ``iterations`` rounds (2 by default: gamma hardly depends on sigma). The
  model's sigma is the median over scenes.
- **noise**: the residual LR minus the fitted forward model gives each band's noise std per
  chip and the reflectance-to-noise matrix (residuals binned by the predicted reflectance,
  :func:`degradation.noise.estimate_noise_matrix`).

Speed (issue 16: ~0.25 s per 484 px pair on 2 cores, was ~3.4 s; ``bench/bench_fit.py``): the
searches evaluate the model only on the scored interior (:meth:`RegisteredPSF.interior`, dense
row blocks instead of whole-chip [h, H] matrices); the power law runs in place in one buffer; a
shift search along one axis reuses the other axis's pass; and every search after the first
starts near the previous value (the first sigma search near the paper's sigma), widening to the
full range whenever a minimum lands on its bracket's edge
(:func:`degradation._optimize.minimize_near`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from degradation._optimize import minimize_near
from degradation.errors import DegradationError
from degradation.fit.pairs import PairChip, registration_shifts
from degradation.harmonize.gamma import apply_gamma
from degradation.noise import NoiseMatrix, estimate_noise_matrix
from degradation.psf import SEN2NAIP_SIGMA_PX, gaussian_kernels
from degradation.resample import build_operator


def _axis_sampler(n_in: int, factor: int, offset_px: float) -> tuple[torch.Tensor, ...]:
    """Bilinear sampler of LR samples at HR positions ``(i + 0.5) f - 0.5 + offset``, clamped."""
    pos = (np.arange(n_in // factor) + 0.5) * factor - 0.5 + offset_px
    pos = np.clip(pos, 0.0, n_in - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(pos - i0).float()


#: LR rows per dense block of the interior pass: a block of 8 rows reads 4 * 7 + K + 1 HR rows.
_BLOCK_ROWS = 8


@dataclass(frozen=True, eq=False)
class _Interior:
    """One axis of the forward model restricted to the LR samples ``margin .. n - margin``.

    Away from the chip edges every LR sample reads the same taps (the Gaussian mixed with its
    one-pixel shift by the bilinear weight), ``factor`` HR pixels apart: a Toeplitz matrix.

    Attributes:
        start: first HR index read.
        mats: per-band matrix [C, n_interior, length], reading HR ``start .. start + length``.
        factor: HR pixels between consecutive LR samples.
    """

    start: int
    mats: torch.Tensor
    factor: int

    @property
    def length(self) -> int:
        """HR samples read."""
        return int(self.mats.shape[-1])

    def along_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``mats @ x[:, start:start + length]`` for ``x`` [C, H, W] -> [C, n_interior, W].

        Row blocks share one dense matrix, so a run of them is one batched product over a
        strided view of ``x`` (BLAS instead of a mostly-zero [n, H] matrix).
        """
        c, n, _ = self.mats.shape
        h, w = x.shape[-2:]
        x = x if x.is_contiguous() else x.contiguous()
        r = min(_BLOCK_ROWS, n)
        blocks = n // r
        taps = self.length - self.factor * (n - 1)
        width = self.factor * (r - 1) + taps
        out = x.new_empty((c, n, w))
        src = x.as_strided(
            (c, blocks, width, w),
            (h * w, self.factor * r * w, w, 1),
            x.storage_offset() + self.start * w,
        )
        out[:, : blocks * r] = torch.matmul(self.mats[:, None, :r, :width], src).reshape(
            c, blocks * r, w
        )
        if blocks * r < n:
            c0 = self.factor * blocks * r
            rest = x[:, self.start + c0 : self.start + self.length]
            out[:, blocks * r :] = torch.bmm(self.mats[:, blocks * r :, c0:], rest)
        return out

    def along_cols(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., start:start + length] @ mats.T`` for ``x`` [C, R, W] -> [C, R, n_interior].

        The row pass of the transposed ``x`` (R is small after the row pass: the copy is cheap).
        """
        return self.along_rows(x.transpose(1, 2).contiguous()).transpose(1, 2)


@functools.lru_cache(maxsize=64)
def _toeplitz_index(n_rows: int, length: int, step: int, taps: int) -> torch.Tensor:
    """Flat indices of row ``j``'s taps (columns ``step * j ..``) in a [n_rows, length] matrix."""
    at = np.arange(n_rows)[:, None] * (length + step) + np.arange(taps)[None, :]
    return torch.from_numpy(at.ravel())


def _interior(
    n_in: int, factor: int, offset_px: float, kern: np.ndarray, margin_px: int, dtype: torch.dtype
) -> _Interior | None:
    """The interior of one axis (see :class:`_Interior`), or None where it reaches an edge.

    The LR sample ``i`` sits at HR position ``p = f i + q`` with ``q = f / 2 - 0.5 + offset``;
    the bilinear sampler mixes the blurred HR at ``floor(p)`` and ``floor(p) + 1`` with weight
    ``w = q - floor(q)``, the same for every sample, and the blur there reads only HR samples
    inside the chip when the margin is wide enough: then no clamping or padding is involved and
    the result equals the full model's interior to float rounding.
    """
    n_inner = n_in // factor - 2 * margin_px
    c, k = kern.shape
    q = factor / 2 - 0.5 + offset_px
    floor_q = int(np.floor(q))
    w = q - floor_q
    start = factor * margin_px + floor_q - (k - 1) // 2
    length = factor * (n_inner - 1) + k + 1
    if n_inner < 1 or start < 0 or start + length > n_in:
        return None
    taps = np.zeros((c, k + 1))
    taps[:, :k] += (1.0 - w) * kern
    taps[:, 1:] += w * kern
    # Row j holds the taps from column f * j: in the flattened [n, length] matrix that is
    # offset j * (length + f), so the whole Toeplitz matrix is one scatter.
    mats = torch.zeros((c, n_inner * length), dtype=dtype)
    mats[:, _toeplitz_index(n_inner, length, factor, k + 1)] = torch.from_numpy(
        np.tile(taps, n_inner)
    ).to(dtype)
    return _Interior(start, mats.reshape(c, n_inner, length), factor)


@dataclass(frozen=True, eq=False)
class RegisteredPSF:
    """Blur (per band sigma) then bilinear sampling at per-item shifted LR positions.

    ``LR(p) = blur(HR)(p - shift)``: for a displacement (east, north) in metres the LR column
    ``j`` reads HR column ``(j + 0.5) f - 0.5 - east / gsd`` and row ``i`` reads HR row
    ``(i + 0.5) f - 0.5 + north / gsd`` (clamped to the chip). With zero shifts it equals
    :func:`degradation.psf.blur_downsample` (to float rounding). Per chip and axis the blur
    and the shifted sampler are combined into one dense [h, H] matrix per band: two matrix
    products per chip. The fits only score the chip minus a margin, where every LR sample reads
    the same taps: :meth:`interior` computes just that part, by row blocks, ~10x faster.
    """

    shifts_m: tuple[tuple[float, float], ...]
    hr_gsd_m: float
    factor: int
    size: tuple[int, int]
    _samplers: list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = field(
        default_factory=list, repr=False
    )

    def __post_init__(self) -> None:
        """Precompute the per-item samplers."""
        h, w = self.size
        for east, north in self.shifts_m:
            rows = _axis_sampler(h, self.factor, north / self.hr_gsd_m)
            cols = _axis_sampler(w, self.factor, -east / self.hr_gsd_m)
            self._samplers.append((rows, cols))

    def __call__(self, hr: torch.Tensor, sigma_px: np.ndarray | Sequence[float]) -> torch.Tensor:
        """Forward model of a batch [B, C, H, W] (B = number of shifts) -> [B, C, h, w]."""
        kern = gaussian_kernels(np.asarray(sigma_px, dtype=np.float64))
        blur_r = torch.from_numpy(
            build_operator(self.size[0], 1, antialias=False, prefilter=kern).dense()
        ).to(hr.dtype)
        blur_c = torch.from_numpy(
            build_operator(self.size[1], 1, antialias=False, prefilter=kern).dense()
        ).to(hr.dtype)
        # A gamma search tries steep power laws whose tiny results are subnormal floats, which
        # slow matrix products down ~10x: they are far below any reflectance, so zero them.
        hr = hr.masked_fill(hr.abs() < 1e-30, 0.0)
        out = []
        for b, ((r0, r1, rw), (c0, c1, cw)) in enumerate(self._samplers):
            # The shifted bilinear sampler mixes two rows of the dense blur per LR sample.
            mr = blur_r[:, r0] * (1 - rw)[None, :, None] + blur_r[:, r1] * rw[None, :, None]
            mc = blur_c[:, c0] * (1 - cw)[None, :, None] + blur_c[:, c1] * cw[None, :, None]
            out.append(mr @ hr[b] @ mc.transpose(1, 2))
        return torch.stack(out)

    def axes(
        self, sigma_px: np.ndarray | Sequence[float], margin_px: int, dtype: torch.dtype
    ) -> list[tuple[_Interior, _Interior]] | None:
        """Per item, the (rows, columns) interiors; None when one reaches the chip's edge."""
        kern = gaussian_kernels(np.asarray(sigma_px, dtype=np.float64))
        # The chips of a scene mostly share one shift: build each distinct axis once.
        built: dict[tuple[int, float], _Interior | None] = {}

        def axis(n_in: int, offset_px: float) -> _Interior | None:
            if (n_in, offset_px) not in built:
                built[n_in, offset_px] = _interior(
                    n_in, self.factor, offset_px, kern, margin_px, dtype
                )
            return built[n_in, offset_px]

        out = []
        for east, north in self.shifts_m:
            rows = axis(self.size[0], north / self.hr_gsd_m)
            cols = axis(self.size[1], -east / self.hr_gsd_m)
            if rows is None or cols is None:
                return None
            out.append((rows, cols))
        return out

    def interior(
        self, hr: torch.Tensor, sigma_px: np.ndarray | Sequence[float], margin_px: int
    ) -> torch.Tensor:
        """``self(hr, sigma_px)`` without ``margin_px`` LR pixels at every edge, computed alone.

        Equal to the cropped full model to float rounding. ``hr`` must hold no subnormal floats
        (they slow the products ~10x; the full model zeroes them, this pass leaves it to the
        caller). Falls back to the full model when the margin is narrower than the blur and
        shift reach.
        """
        axes = self.axes(sigma_px, margin_px, hr.dtype)
        if axes is None:
            m = margin_px
            full = self(hr, sigma_px)
            return full[..., m : full.shape[-2] - m, m : full.shape[-1] - m]
        return _apply_axes(axes, hr)


@dataclass(frozen=True)
class SceneFit:
    """Per-scene results: sigma per band and the mean noise std of its chips per band."""

    scene_id: str
    roi_ids: tuple[str, ...]
    sigma_px: tuple[float, ...]
    noise_std: tuple[float, ...]
    shift_m: tuple[float, float]


@dataclass(frozen=True, eq=False)
class FitResult:
    """Everything :func:`fit_pairs` estimates.

    Attributes:
        sigma_px: the model's PSF sigma per band (median over scenes), HR pixels.
        gammas: per-chip gammas [N, C], in the order of ``roi_ids``.
        roi_ids: the chips used.
        noise_std: per-chip residual noise std [N, C].
        scenes: per-scene fits.
        noise_matrix: the reflectance-to-noise matrix of the residuals.
        iterations: alternation rounds run.
    """

    sigma_px: tuple[float, ...]
    gammas: np.ndarray
    roi_ids: tuple[str, ...]
    noise_std: np.ndarray
    scenes: tuple[SceneFit, ...]
    noise_matrix: NoiseMatrix
    iterations: int


def _harmonised(hr: torch.Tensor, gammas: np.ndarray) -> torch.Tensor:
    """``hr ** (1 / gammas)`` with values below 1e-30 set to 0 (subnormals slow BLAS ~10x)."""
    out = apply_gamma(hr, gammas)
    assert isinstance(out, torch.Tensor)
    return out.masked_fill(out.abs() < 1e-30, 0.0)


def _fit_gammas(
    op: RegisteredPSF,
    hr: torch.Tensor,
    lr_inner: torch.Tensor,
    sigma: np.ndarray,
    margin_px: int,
    *,
    start: np.ndarray | None = None,
    bounds: tuple[float, float] = (0.05, 3.0),
    tol: float = 1e-3,
) -> np.ndarray:
    """Per chip and band, the gamma minimising ``MAE(op(hr ** (1 / gamma)), lr)`` [B, C].

    The objective of :func:`degradation.harmonize.gamma.fit_gamma` with the registered PSF at
    fixed sigma as the forward model, scored on the interior only: the taps are built once and
    the power law is computed in place in one buffer (allocating a chip batch per step costs
    more than the power law itself).
    """
    b, c = hr.shape[:2]
    base = hr.detach().float().clamp(min=0.0)
    log_base = torch.log(base.clamp(min=1e-12))
    zero = base == 0
    has_zero = bool(zero.any())
    axes = op.axes(sigma, margin_px, base.dtype)
    buf = torch.empty_like(log_base)
    target = lr_inner.to(base.dtype)

    def objective(gammas: np.ndarray) -> np.ndarray:
        exponent = torch.as_tensor(1.0 / gammas, dtype=base.dtype).reshape(b, c, 1, 1)
        torch.mul(log_base, exponent, out=buf)
        # exp(-60) ~ 1e-26: far below any reflectance, and no subnormal in the products.
        buf.clamp_(min=-60.0).exp_()
        if has_zero:
            buf.masked_fill_(zero, 0.0)
        pred = _apply(op, axes, buf, sigma, margin_px)
        return (pred - target).abs().double().mean(dim=(-2, -1)).reshape(-1).numpy()

    first = None if start is None else np.asarray(start, dtype=np.float64).reshape(-1)
    gammas, _ = minimize_near(objective, first, 0.05, bounds, b * c, grid_points=16, tol=tol)
    return np.asarray(gammas, dtype=np.float64).reshape(b, c)


def _apply(
    op: RegisteredPSF,
    axes: list[tuple[_Interior, _Interior]] | None,
    x: torch.Tensor,
    sigma: np.ndarray,
    margin_px: int,
) -> torch.Tensor:
    """``op.interior(x, sigma, margin_px)`` with its taps already built (``op.axes``)."""
    return op.interior(x, sigma, margin_px) if axes is None else _apply_axes(axes, x)


def _apply_axes(axes: list[tuple[_Interior, _Interior]], x: torch.Tensor) -> torch.Tensor:
    """Each item's row then column interior pass: [B, C, H, W] -> [B, C, n_r, n_c]."""
    out = x.new_empty((x.shape[0], x.shape[1], axes[0][0].mats.shape[1], axes[0][1].mats.shape[1]))
    for i, (rows, cols) in enumerate(axes):
        out[i] = cols.along_cols(rows.along_rows(x[i]))
    return out


def _fit_sigma(
    op: RegisteredPSF,
    hr_h: torch.Tensor,
    lr_inner: torch.Tensor,
    margin_px: int,
    *,
    start: np.ndarray | None = None,
    bounds_px: tuple[float, float] = (0.25, 6.0),
    tol_px: float = 5e-3,
) -> np.ndarray:
    """Per band, the sigma minimising the pooled MAE of the registered model (interior only).

    The search of :func:`degradation.fit.psf.fit_sigma` (grid, then golden section); ``hr_h``
    must hold no subnormal floats. ``start``: a previous sigma to search near
    (:func:`~degradation._optimize.minimize_near`).
    """

    def objective(sigmas: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pred = op.interior(hr_h, sigmas, margin_px)
        return (pred - lr_inner).abs().double().mean(dim=(0, 2, 3)).numpy()

    sigma, _ = minimize_near(
        objective, start, 0.3, bounds_px, hr_h.shape[1], grid_points=12, tol=tol_px
    )
    return np.asarray(sigma, dtype=np.float64)


def _refine_shift(
    op: RegisteredPSF,
    hr_h: torch.Tensor,
    lr_inner: torch.Tensor,
    sigma: np.ndarray,
    margin_px: int,
    *,
    reach_m: float = 1.0,
    coarse: bool = True,
) -> tuple[float, float]:
    """A common (east, north) correction to ``op``'s shifts minimising the pooled MAE.

    Coordinate search: east then north on a 0.25 m grid over +-``reach_m`` (unless not
    ``coarse``: a second round starts from a refined shift), then on a 0.05 m grid over
    +-0.25 m, each refined by a parabola through the best point and its neighbours.
    """

    def line(axis: int, fixed: list[float], offsets: np.ndarray) -> list[float]:
        """The pooled MAE at ``fixed`` moved by each offset along ``axis`` (0 east, 1 north).

        Along one axis the other axis's pass does not change: it is computed once (the row pass
        when east varies, the column pass when north varies), so each step costs one small pass.
        """
        fixed_pass: list[torch.Tensor] | None = None
        values = []
        for o in offsets:
            trial = list(fixed)
            trial[axis] += float(o)
            moved = RegisteredPSF(
                tuple((e + trial[0], n + trial[1]) for e, n in op.shifts_m),
                op.hr_gsd_m,
                op.factor,
                op.size,
            )
            axes = moved.axes(sigma, margin_px, hr_h.dtype)
            if axes is None:
                pred = moved.interior(hr_h, sigma, margin_px)
            else:
                if fixed_pass is None:
                    fixed_pass = [
                        rows.along_rows(hr_h[i])
                        if axis == 0
                        else cols.along_cols(hr_h[i]).contiguous()
                        for i, (rows, cols) in enumerate(axes)
                    ]
                pred = torch.stack(
                    [
                        cols.along_cols(fixed_pass[i])
                        if axis == 0
                        else rows.along_rows(fixed_pass[i])
                        for i, (rows, cols) in enumerate(axes)
                    ]
                )
            values.append(float((pred - lr_inner).abs().double().mean()))
        return values

    d = [0.0, 0.0]
    stages = ((0.25, reach_m), (0.05, 0.25)) if coarse else ((0.05, 0.25),)
    for step, reach in stages:
        for axis in (0, 1):
            offsets = np.arange(-reach, reach + step / 2, step)
            values = line(axis, d, offsets)
            k = int(np.argmin(values))
            best = float(offsets[k])
            if 0 < k < len(values) - 1:
                a, b, c = values[k - 1], values[k], values[k + 1]
                curve = a - 2 * b + c
                if curve > 0:
                    best += float(np.clip(0.5 * (a - c) / curve, -0.5, 0.5)) * step
            d[axis] += best
    return d[0], d[1]


def fit_pairs(
    chips: Sequence[PairChip],
    *,
    factor: int = 4,
    shift: str = "scene",
    iterations: int = 2,
    margin_px: int = 6,
    progress: Callable[[], None] | None = None,
) -> FitResult:
    """Fit gamma per chip, sigma per scene and the noise (see the module doc).

    Args:
        chips: the pairs (:class:`~degradation.fit.pairs.PairChip`).
        factor: HR/LR pixel ratio.
        shift: "scene", "chip" or "none" (:func:`registration_shifts`).
        iterations: gamma/sigma alternation rounds.
        margin_px: LR pixels left out at every chip edge.
        progress: called once per scene and round.

    Returns:
        The :class:`FitResult`.
    """
    if iterations < 1:
        raise DegradationError(f"iterations must be >= 1, got {iterations}")
    shifts = registration_shifts(chips, shift)
    scenes: dict[str, list[int]] = {}
    for i, c in enumerate(chips):
        scenes.setdefault(c.scene_id, []).append(i)
    n_bands = chips[0].hr.shape[0]
    default_sigma = (
        np.array(SEN2NAIP_SIGMA_PX) if n_bands == len(SEN2NAIP_SIGMA_PX) else np.full(n_bands, 3.0)
    )
    gammas = np.zeros((len(chips), n_bands))
    noise = np.zeros((len(chips), n_bands))
    sigma_of: dict[str, np.ndarray] = {k: default_sigma.copy() for k in scenes}
    m = margin_px
    residuals: list[np.ndarray] = []
    predictions: list[np.ndarray] = []
    for scene_id, idx in scenes.items():
        hr = torch.from_numpy(np.stack([chips[i].hr for i in idx]))
        lr = torch.from_numpy(np.stack([chips[i].lr for i in idx]))
        if tuple(lr.shape[-2:]) != (hr.shape[-2] // factor, hr.shape[-1] // factor):
            raise DegradationError(f"scene {scene_id}: chips are not nested by {factor}")
        op = RegisteredPSF(
            tuple(shifts[i] for i in idx),
            chips[idx[0]].hr_gsd_m,
            factor,
            (int(hr.shape[-2]), int(hr.shape[-1])),
        )
        inner = (..., slice(m, lr.shape[-2] - m), slice(m, lr.shape[-1] - m))
        lr_inner = lr[inner]
        sigma = sigma_of[scene_id]
        g: np.ndarray | None = None
        # The first search starts near the published sigma, widening to the full range when
        # the scene's lies elsewhere (minimize_near).
        fitted: np.ndarray | None = sigma.copy()
        for round_ in range(iterations):
            with torch.no_grad():
                # Later rounds start near the previous round's values (the changes are small).
                g = _fit_gammas(op, hr, lr_inner, sigma.copy(), m, start=g)
                hr_h = _harmonised(hr, g)
                sigma = _fit_sigma(op, hr_h, lr_inner, m, start=fitted)
                if shift != "none":
                    # Refine the scene's misregistration, then the PSF once more under it.
                    de, dn = _refine_shift(op, hr_h, lr_inner, sigma, m, coarse=round_ == 0)
                    for i in idx:
                        shifts[i] = (shifts[i][0] + de, shifts[i][1] + dn)
                    op = RegisteredPSF(tuple(shifts[i] for i in idx), op.hr_gsd_m, factor, op.size)
                    sigma = _fit_sigma(op, hr_h, lr_inner, m, start=sigma)
                fitted = sigma
            if progress is not None:
                progress()
        assert g is not None
        sigma_of[scene_id] = sigma
        hr_h = _harmonised(hr, g)
        with torch.no_grad():
            pred = op.interior(hr_h, sigma, m)
        resid = (lr_inner - pred).double().numpy()
        gammas[idx] = g
        noise[idx] = resid.reshape(len(idx), n_bands, -1).std(axis=-1)
        residuals.append(lr_inner.numpy())
        predictions.append(pred.numpy())
    scene_fits = tuple(
        SceneFit(
            scene_id=k,
            roi_ids=tuple(chips[i].roi_id for i in idx),
            sigma_px=tuple(float(v) for v in sigma_of[k]),
            noise_std=tuple(float(v) for v in noise[idx].mean(axis=0)),
            shift_m=shifts[idx[0]],
        )
        for k, idx in scenes.items()
    )
    matrix = estimate_noise_matrix(residuals, predictions)
    sigma_model = np.median(np.stack([sigma_of[k] for k in scenes]), axis=0)
    return FitResult(
        sigma_px=tuple(float(v) for v in sigma_model),
        gammas=gammas,
        roi_ids=tuple(c.roi_id for c in chips),
        noise_std=noise,
        scenes=scene_fits,
        noise_matrix=matrix,
        iterations=iterations,
    )
