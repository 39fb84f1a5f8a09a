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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from degradation.errors import DegradationError
from degradation.fit.pairs import PairChip, registration_shifts
from degradation.fit.psf import fit_sigma
from degradation.harmonize.gamma import apply_gamma, fit_gamma
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


@dataclass(frozen=True, eq=False)
class RegisteredPSF:
    """Blur (per band sigma) then bilinear sampling at per-item shifted LR positions.

    ``LR(p) = blur(HR)(p - shift)``: for a displacement (east, north) in metres the LR column
    ``j`` reads HR column ``(j + 0.5) f - 0.5 - east / gsd`` and row ``i`` reads HR row
    ``(i + 0.5) f - 0.5 + north / gsd`` (clamped to the chip). With zero shifts it equals
    :func:`degradation.psf.blur_downsample` (to float rounding). Per chip and axis the blur
    and the shifted sampler are combined into one dense [h, H] matrix per band: two matrix
    products per chip, which BLAS runs faster than a banded pass at chip sizes.
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


def _reducer(
    op: RegisteredPSF, sigma: np.ndarray, margin_px: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The gamma fit's forward model: registered PSF at fixed sigma, margins cropped."""

    def reduce(t: torch.Tensor) -> torch.Tensor:
        out = op(t, sigma)
        return out[
            ..., margin_px : out.shape[-2] - margin_px, margin_px : out.shape[-1] - margin_px
        ]

    return reduce


def _refine_shift(
    op: RegisteredPSF,
    hr_h: torch.Tensor,
    lr_inner: torch.Tensor,
    sigma: np.ndarray,
    margin_px: int,
    *,
    reach_m: float = 1.0,
) -> tuple[float, float]:
    """A common (east, north) correction to ``op``'s shifts minimising the pooled MAE.

    Coordinate search: east then north on a 0.25 m grid over +-``reach_m``, then on a 0.05 m grid
    over +-0.25 m, each refined by a parabola through the best point and its neighbours.
    """

    def cost(de: float, dn: float) -> float:
        moved = RegisteredPSF(
            tuple((e + de, n + dn) for e, n in op.shifts_m), op.hr_gsd_m, op.factor, op.size
        )
        with torch.no_grad():
            pred = moved(hr_h, sigma)
        h, w = pred.shape[-2:]
        inner = pred[..., margin_px : h - margin_px, margin_px : w - margin_px]
        return float((inner - lr_inner).abs().double().mean())

    d = [0.0, 0.0]
    for step, reach in ((0.25, reach_m), (0.05, 0.25)):
        for axis in (0, 1):
            offsets = np.arange(-reach, reach + step / 2, step)
            values = []
            for o in offsets:
                trial = list(d)
                trial[axis] += float(o)
                values.append(cost(trial[0], trial[1]))
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
        g = np.zeros((len(idx), n_bands))
        for _ in range(iterations):
            g = np.asarray(
                fit_gamma(hr, lr_inner, reduce=_reducer(op, sigma.copy(), m), tol=1e-3),
                dtype=np.float64,
            ).reshape(len(idx), n_bands)
            hr_h = apply_gamma(hr, g)
            assert isinstance(hr_h, torch.Tensor)
            fit = fit_sigma(hr_h, lr, factor, margin_px=m, forward=op, tol_px=5e-3)
            sigma = np.asarray(fit.sigma_px)
            if shift != "none":
                # Refine the scene's misregistration, then the PSF once more under it.
                de, dn = _refine_shift(op, hr_h, lr_inner, sigma, m)
                for i in idx:
                    shifts[i] = (shifts[i][0] + de, shifts[i][1] + dn)
                op = RegisteredPSF(tuple(shifts[i] for i in idx), op.hr_gsd_m, factor, op.size)
                refit = fit_sigma(hr_h, lr, factor, margin_px=m, forward=op, tol_px=5e-3)
                sigma = np.asarray(refit.sigma_px)
            if progress is not None:
                progress()
        sigma_of[scene_id] = sigma
        hr_h = apply_gamma(hr, g)
        assert isinstance(hr_h, torch.Tensor)
        with torch.no_grad():
            pred = op(hr_h, sigma)[inner]
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
