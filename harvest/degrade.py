"""Degradation models fitted on real pairs, and the SEN2NAIP synthetic set written from HR images.

Two commands live here (the numerical work is :mod:`degradation`; this module reads and writes
files):

``harvest degradation fit PAIRS_DIR -o MODEL`` (:func:`run_fit`) reads the kept LR/HR chips of a
cross-sensor folder written by ``harvest fetch`` and fits, as in SEN2NAIP:

- **registration**: the LR content is displaced by the misregistration that the fetch stage
  estimated (``shift_east_m`` / ``shift_north_m`` in each chip's metadata.json). A Sentinel-2
  scene has one misregistration, so by default every chip takes the median estimate of the
  chips of its scene (``shift="scene"``), which is steadier than any single chip's; ``"chip"``
  uses each chip's own, ``"none"`` none. Unless ``"none"``, the fit then refines the scene's
  shift (one common correction, coordinate search to ~0.01 m minimising the MAE of the
  forward model): a 0.3 m error (what a per-chip estimate can have) leaves residuals that
  would be read as noise. Chips the fetch stage already moved
  (``shift_corrected``) get none. The shift is applied in the forward model, never by
  resampling the noisy LR: ``LR(p) = blur(Upsilon(HR))(p - shift)`` sampled bilinearly (edges
  clamped). Every error is measured on the chip minus ``margin_px`` LR pixels at each edge,
  where the blur would see padding instead of the scene.
- **gamma and sigma, jointly**: the paper fits sigma on NAIP_h (the HR made radiometrically
  comparable to S2). Histogram-matching the sharp HR to the blurred LR would squeeze the HR's
  contrast and bias sigma low, so we alternate instead: per chip and band the gamma of the
  power law ``x ** (1 / gamma)`` with the current PSF as the forward model
  (:func:`degradation.harmonize.gamma.fit_gamma`), then per scene and band the sigma on the
  harmonised HR of all its chips pooled (:func:`degradation.fit.fit_sigma`), starting from the
  paper's sigma; ``iterations`` rounds (2 by default: gamma hardly depends on sigma). The model's
  sigma is the median over scenes; the gamma model is the normal fit of the per-chip gammas.
- **noise**: the residual LR minus the fitted forward model gives each band's noise std per
  chip (recorded) and the reflectance-to-noise matrix (residuals binned by the predicted
  reflectance, :func:`degradation.noise.estimate_noise_matrix`).
- ``--train unet,vae``: the networks on CPU (:func:`degradation.harmonize.unet.train_unet` on
  HR downsampled to 10 m with antialias -> S2, chips cropped to a multiple of 8 pixels;
  :func:`degradation.harmonize.vae.train_vae` on the 120-bin histograms of the same).

The output is one folder in the fitted-folder format v1 of :mod:`degradation.pretrained`, written
under a temporary name and renamed into place. Its card records the data (pairs, scenes, source,
date), every fitted value and, under ``metrics.table2``, SEN2NAIP's Table 2 (Pearson, spectral
angle, PBIAS, MAE, RMSE of S2-like vs S2) for each method on the folder's test-split chips (the
training chips when there are none; the card says which).

``harvest degrade HR_DIR --model sen2naip|MODEL -o OUT`` (:func:`run_degrade`) writes the
synthetic set. Layout (one folder per HR image, written atomically, skipped when present)::

    OUT/synthetic/ROI_xxxxx/IMAGE/HR.tif              the input HR, float32 reflectance
    OUT/synthetic/ROI_xxxxx/IMAGE/HR_<method>.tif     HR_h: the harmonised HR of a method
    OUT/synthetic/ROI_xxxxx/IMAGE/LR_<method>.tif     the Sentinel-2-like LR of a method
    OUT/synthetic/ROI_xxxxx/IMAGE/histograms.npz      per method, 4 x 120 fractions over [0, 1]:
                                                      ``<method>`` (LR) and ``<method>_hr`` (HR_h)
    OUT/synthetic/ROI_xxxxx/IMAGE/metadata.json       ids, source, model, seed, gammas, grids

A ``harvest fetch`` folder contributes only its kept chips (``cross-sensor/``).
``ROI_xxxxx`` and ``IMAGE`` come from the input path: ``.../ROI_x/{early,late}/HR.tif`` keeps both
names; ``.../ROI_x/HR.tif`` (a cross-sensor chip) uses ``ROI_x`` and the NAIP id of its
metadata.json (else ``image``); any other ``NAME.tif`` uses ``NAME`` and ``image``. Input values:
float GeoTIFFs are reflectance; uint8 is NAIP-like DN and is divided by 255.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harvest import __version__
from harvest.diskio import write_file
from harvest.errors import DegradeError
from harvest.ids import check_id, is_inside
from harvest.lock import dataset_lock_path, folder_lock, sibling_lock_path
from harvest.progress import ProgressBar
from harvest.store import atomic_folder, atomic_write_bytes, remove_temporaries

logger = logging.getLogger(__name__)

SHIFT_MODES = ("scene", "chip", "none")
SPLITS = ("train", "test", "all")
TRAINABLE = ("unet", "vae")
DEGRADE_METHODS = ("raw", "statistical", "deterministic", "variational")
TABLE2_METHODS = ("raw", "statistical", "deterministic", "variational")
SYNTHETIC_DIR = "synthetic"


# --------------------------------------------------------------------------------------------
# Reading pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PairChip:
    """One LR/HR chip of a cross-sensor folder.

    Attributes:
        roi_id: the chip's folder name.
        scene_id: the LR (Sentinel-2) item id; chips of one scene share its misregistration.
        split: "train" or "test" (from metadata.json; "train" when absent).
        hr: HR reflectance, float32 [C, H, W].
        lr: LR reflectance, float32 [C, H / factor, W / factor].
        shift_m: estimated displacement of the LR content (east, north), metres.
        shift_corrected: the fetch stage already moved the LR by its estimate.
        hr_gsd_m: HR pixel size.
    """

    roi_id: str
    scene_id: str
    split: str
    hr: np.ndarray
    lr: np.ndarray
    shift_m: tuple[float, float]
    shift_corrected: bool
    hr_gsd_m: float


def _read_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            data = ds.read()
            info = {
                "crs": ds.crs,
                "transform": ds.transform,
                "res": ds.res,
                "dtype": ds.dtypes[0],
                "descriptions": ds.descriptions,
                "nodata": ds.nodata,
            }
    except RasterioIOError as exc:
        raise DegradeError(f"cannot read {path}: {exc}; check the file") from None
    return data, info


def _kept_from_manifest(pairs_dir: Path) -> set[str] | None:
    manifest = pairs_dir / "manifest.parquet"
    if not manifest.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(manifest, columns=["roi_id", "status"]).to_pydict()
    return {r for r, s in zip(table["roi_id"], table["status"], strict=True) if s == "kept"}


def read_pairs(
    pairs_dir: str | os.PathLike[str], *, split: str = "all", factor: int = 4
) -> list[PairChip]:
    """Read the kept chips of a cross-sensor folder (``PAIRS_DIR/cross-sensor/ROI_*``).

    A ``manifest.parquet`` beside ``cross-sensor/`` limits the chips to its ``kept`` rows.

    Args:
        pairs_dir: folder written by ``harvest fetch`` (or its ``cross-sensor`` folder).
        split: "train", "test" or "all".
        factor: HR/LR pixel ratio the chips must have.

    Returns:
        The chips, sorted by roi_id.

    Raises:
        DegradeError: no such folder, no chips, a chip without its files or of the wrong shape.
    """
    if split not in SPLITS:
        raise DegradeError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(pairs_dir)
    if not root.is_dir():
        raise DegradeError(f"{root} is not a folder; give the output folder of 'harvest fetch'")
    base = root / "cross-sensor" if (root / "cross-sensor").is_dir() else root
    folders = sorted(p for p in base.glob("ROI_*") if p.is_dir())
    kept = _kept_from_manifest(base.parent if base.name == "cross-sensor" else base)
    if kept is not None:
        folders = [p for p in folders if p.name in kept]
    chips: list[PairChip] = []
    for folder in folders:
        lr_path, hr_path, meta_path = folder / "LR.tif", folder / "HR.tif", folder / "metadata.json"
        if not (lr_path.is_file() and hr_path.is_file()):
            raise DegradeError(f"{folder} lacks LR.tif or HR.tif; re-run 'harvest fetch' on it")
        meta: dict[str, Any] = {}
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        chip_split = str(meta.get("split", "test" if meta.get("test") else "train"))
        if split != "all" and chip_split != split:
            continue
        lr, _ = _read_raster(lr_path)
        hr, info = _read_raster(hr_path)
        if hr.shape[0] != lr.shape[0] or hr.shape[1:] != (
            lr.shape[1] * factor,
            lr.shape[2] * factor,
        ):
            raise DegradeError(
                f"{folder}: HR {hr.shape} is not LR {lr.shape} times {factor}; this needs "
                "nested chips such as SEN2NAIP's 484 / 121"
            )
        if not (np.isfinite(hr).all() and np.isfinite(lr).all()):
            logger.warning("skipping %s: it has nodata pixels", folder.name)
            continue
        corrected = bool(meta.get("shift_corrected", False))
        shift = (float(meta.get("shift_east_m") or 0.0), float(meta.get("shift_north_m") or 0.0))
        chips.append(
            PairChip(
                roi_id=folder.name,
                scene_id=str(meta.get("s2_id", folder.name)),
                split=chip_split,
                hr=hr.astype(np.float32),
                lr=lr.astype(np.float32),
                shift_m=shift,
                shift_corrected=corrected,
                hr_gsd_m=float(abs(info["res"][0])),
            )
        )
    if not chips:
        what = "" if split == "all" else f" in split {split!r} (try --split all)"
        raise DegradeError(
            f"no kept LR/HR chips under {base}{what}; give a folder written by 'harvest fetch'"
        )
    return chips


def registration_shifts(
    chips: Sequence[PairChip], mode: str = "scene"
) -> list[tuple[float, float]]:
    """The misregistration (east, north metres) applied to each chip (see the module doc)."""
    if mode not in SHIFT_MODES:
        raise DegradeError(f"shift mode must be one of {SHIFT_MODES}, got {mode!r}")
    if mode == "none":
        return [(0.0, 0.0)] * len(chips)
    if mode == "chip":
        return [(0.0, 0.0) if c.shift_corrected else c.shift_m for c in chips]
    by_scene: dict[str, list[tuple[float, float]]] = {}
    for c in chips:
        if not c.shift_corrected:
            by_scene.setdefault(c.scene_id, []).append(c.shift_m)
    median: dict[str, tuple[float, float]] = {}
    for k, s in by_scene.items():
        east, north = np.median(np.array(s), axis=0)
        median[k] = (float(east), float(north))
    return [(0.0, 0.0) if c.shift_corrected else median[c.scene_id] for c in chips]


# --------------------------------------------------------------------------------------------
# The registered forward model
# --------------------------------------------------------------------------------------------


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
        from degradation.psf import gaussian_kernels
        from degradation.resample import build_operator

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


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


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
    noise_matrix: Any
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
        chips: chips from :func:`read_pairs`.
        factor: HR/LR pixel ratio.
        shift: "scene", "chip" or "none" (:func:`registration_shifts`).
        iterations: gamma/sigma alternation rounds.
        margin_px: LR pixels left out at every chip edge.
        progress: called once per scene and round.

    Returns:
        The :class:`FitResult`.
    """
    from degradation.fit import fit_sigma
    from degradation.harmonize.gamma import apply_gamma, fit_gamma
    from degradation.noise import estimate_noise_matrix
    from degradation.psf import SEN2NAIP_SIGMA_PX

    if iterations < 1:
        raise DegradeError(f"iterations must be >= 1, got {iterations}")
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
            raise DegradeError(f"scene {scene_id}: chips are not nested by {factor}")
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


# --------------------------------------------------------------------------------------------
# Networks, Table 2, the model folder
# --------------------------------------------------------------------------------------------


def _crop_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    h, w = x.shape[-2:]
    return x[..., : h - h % multiple, : w - w % multiple]


def train_networks(
    chips: Sequence[PairChip],
    which: Sequence[str],
    *,
    factor: int = 4,
    seed: int = 0,
    unet_epochs: int = 30,
    vae_epochs: int = 200,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train the U-Net and/or the VAE on CPU (see the module doc); returns (unet, vae, logs)."""
    from degradation.harmonize.unet import train_unet
    from degradation.harmonize.vae import input_histograms, train_vae
    from degradation.resample import downsample

    bad = set(which) - set(TRAINABLE)
    if bad:
        raise DegradeError(f"cannot train {sorted(bad)}; choose from {', '.join(TRAINABLE)}")
    hr10 = []
    for c in chips:
        d = downsample(torch.from_numpy(c.hr), factor, antialias=True)
        assert isinstance(d, torch.Tensor)
        hr10.append(d.numpy())
    lrs = [c.lr for c in chips]
    unet = vae = None
    logs: dict[str, Any] = {}
    if "unet" in which:
        depth = 3
        x = np.stack([_crop_multiple(h, 2**depth) for h in hr10])
        y = np.stack([_crop_multiple(lr, 2**depth) for lr in lrs])
        unet, log = train_unet(x, y, epochs=unet_epochs, seed=seed, depth=depth)
        logs["unet"] = {
            "epochs": unet_epochs,
            "first_loss": log.first_loss,
            "last_loss": log.last_loss,
        }
    if "vae" in which:
        hx = input_histograms(np.stack(hr10)).numpy()
        hy = input_histograms(np.stack(lrs)).numpy()
        vae, vlog = train_vae(hx, hy, epochs=vae_epochs, seed=seed)
        logs["vae"] = {
            "epochs": vae_epochs,
            "first_loss": vlog.first_loss,
            "last_loss": vlog.last_loss,
        }
    return unet, vae, logs


def table2(
    model: Any,
    chips: Sequence[PairChip],
    *,
    methods: Sequence[str] = TABLE2_METHODS,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """SEN2NAIP's Table 2: each method's S2-like LR against the real S2 of each chip.

    Metrics (:mod:`harvest.metrics`) are computed per chip and averaged: Pearson over all bands
    at once (:func:`harvest.metrics.pearson_joint`, the reading of the paper's table), spectral
    angle (degrees; the paper's values are radians), PBIAS (%), MAE, RMSE, and the per-band
    Pearson as an extra column. Methods whose network the model lacks are left out. The
    Degrader adds noise (the model's noise matrix) with a per-chip seed.
    """
    from degradation.pipeline import Degrader, sample_seed
    from harvest import metrics

    out: dict[str, dict[str, float]] = {}
    for method in methods:
        if method == "deterministic" and model.unet is None:
            continue
        if method == "variational" and model.vae is None:
            continue
        degrader = Degrader.from_model(model, mode=method)
        rows = []
        for i, c in enumerate(chips):
            pred = degrader(c.hr, sample_seed(seed, i)).lr
            p = np.asarray(pred, dtype=np.float64)
            rows.append(
                (
                    metrics.pearson_joint(p, c.lr),
                    metrics.sam(p, c.lr),
                    metrics.pbias(p, c.lr),
                    metrics.mae(p, c.lr),
                    metrics.rmse(p, c.lr),
                    metrics.pearson(p, c.lr),
                )
            )
        mean = np.mean(np.array(rows), axis=0)
        out[method] = dict(zip(TABLE2_COLUMNS, map(float, mean), strict=True))
    return out


TABLE2_COLUMNS = ("pearson", "sam_deg", "pbias_pct", "mae", "rmse", "pearson_per_band")


def _versions() -> dict[str, str]:
    import importlib.metadata
    import platform

    out = {"harvest": __version__, "python": platform.python_version(), "torch": torch.__version__}
    out["numpy"] = np.__version__
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        out["opensr-degradation"] = importlib.metadata.version("opensr-degradation")
    return out


def write_model_folder(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    bands: Sequence[str],
    factor: int,
    fit: FitResult,
    unet: Any,
    vae: Any,
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write the fitted-folder format v1 (:mod:`degradation.pretrained`) atomically.

    The folder is built under a temporary name beside ``out_dir`` and renamed into place; an
    existing folder at ``out_dir`` is replaced only then.
    """
    from degradation.harmonize.gamma import GammaModel
    from degradation.pretrained import CARD_FORMAT, CARD_NAME, CARD_VERSION

    final = Path(out_dir)
    with atomic_folder(final) as tmp:
        gamma = GammaModel.from_samples(fit.gammas) if len(fit.gammas) >= 2 else None
        nm = fit.noise_matrix
        _write_npz(
            tmp / "noise.npz",
            {
                "reflectance_edges": nm.reflectance_edges,
                "noise_values": nm.noise_values,
                "probabilities": nm.probabilities,
                "n_samples": np.asarray(nm.n_samples),
            },
        )
        card: dict[str, Any] = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "name": name,
            "bands": list(bands),
            "factor": factor,
            "psf": {"sigma_px": list(fit.sigma_px), "kernel_size": None},
            "gamma": None
            if gamma is None
            else {
                "mean": list(gamma.mean),
                "cov": [list(r) for r in gamma.cov],
                "n_pairs": gamma.n_pairs,
            },
            "noise": {"file": "noise.npz"},
            "unet": None,
            "vae": None,
        }
        if unet is not None:
            _write_torch(tmp / "unet.pt", unet.state_dict())
            card["unet"] = {"file": "unet.pt", "format": "state_dict", "arch": unet.arch()}
        if vae is not None:
            _write_torch(tmp / "vae.pt", vae.state_dict())
            card["vae"] = {
                "file": "vae.pt",
                "arch": {
                    "n_bands": vae.n_bands,
                    "n_bins": vae.n_bins,
                    "hidden": vae.hidden,
                    "latent": vae.latent,
                },
            }
        card["data"] = dict(data)
        card["fit"] = {
            "iterations": fit.iterations,
            "noise_std_mean": [float(v) for v in fit.noise_std.mean(axis=0)],
            "scenes": [
                {
                    "scene_id": s.scene_id,
                    "roi_ids": list(s.roi_ids),
                    "sigma_px": list(s.sigma_px),
                    "noise_std": list(s.noise_std),
                    "shift_m": list(s.shift_m),
                }
                for s in fit.scenes
            ],
            "pairs": [
                {"roi_id": r, "gamma": [float(v) for v in g], "noise_std": [float(v) for v in n]}
                for r, g, n in zip(fit.roi_ids, fit.gammas, fit.noise_std, strict=True)
            ],
        }
        card["metrics"] = dict(metrics)
        card["versions"] = _versions()
        write_file(tmp / CARD_NAME, (json.dumps(card, indent=2) + "\n").encode())
    return final


@dataclass(frozen=True)
class FitSummary:
    """What :func:`run_fit` did."""

    model_dir: Path
    n_pairs: int
    n_scenes: int
    sigma_px: tuple[float, ...]
    gamma_mean: tuple[float, ...]
    noise_std: tuple[float, ...]
    trained: tuple[str, ...]
    table2: dict[str, dict[str, float]]
    evaluated_on: str
    seconds: float

    def line(self) -> str:
        """One-line summary for the CLI."""
        fmt = ", ".join
        return (
            f"fitted {self.n_pairs} pairs ({self.n_scenes} scenes): sigma "
            f"[{fmt(f'{v:.2f}' for v in self.sigma_px)}] px, gamma "
            f"[{fmt(f'{v:.3f}' for v in self.gamma_mean)}], noise std "
            f"[{fmt(f'{v:.4f}' for v in self.noise_std)}]"
            + (f", trained {'+'.join(self.trained)}" if self.trained else "")
            + f" in {self.seconds:.0f} s -> {self.model_dir}"
        )


def parse_list(
    value: str | Sequence[str] | None, allowed: Sequence[str], what: str
) -> tuple[str, ...]:
    """Split a comma list and check every entry is allowed (empty -> ())."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(v.strip() for v in items if v.strip())
    bad = [v for v in out if v not in allowed]
    if bad:
        raise DegradeError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return out


def run_fit(
    pairs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    train: Sequence[str] = (),
    split: str = "train",
    seed: int = 0,
    shift: str = "scene",
    iterations: int = 2,
    unet_epochs: int = 30,
    vae_epochs: int = 200,
    name: str | None = None,
    progress: bool = False,
) -> FitSummary:
    """``harvest degradation fit``: read pairs, fit, train, evaluate, write the model folder.

    Args:
        pairs_dir: a folder written by ``harvest fetch``.
        out_dir: the model folder to write (replaced atomically when it exists).
        train: networks to train ("unet", "vae").
        split: chips to fit on: "train" (default), "test" or "all".
        seed: seed of the network training and of the Table 2 noise.
        shift: misregistration handling ("scene", "chip", "none").
        iterations: gamma/sigma alternation rounds.
        unet_epochs: U-Net epochs.
        vae_epochs: VAE epochs.
        name: model name (default: the output folder's name).
        progress: show a progress bar.

    Returns:
        A :class:`FitSummary`.

    Raises:
        DegradeError: no usable pairs, an unknown network, split or shift mode.
        FolderLockedError: another run is writing ``out_dir`` (checked before any work).
        DiskWriteError: the disk is full or failing.
    """
    # One run per model folder (harvest.lock), taken before the minutes of fitting. The lock
    # file sits beside the folder: the folder itself is replaced in one rename.
    with folder_lock(out_dir, sibling_lock_path(out_dir)):
        return _run_fit(
            pairs_dir,
            out_dir,
            train=train,
            split=split,
            seed=seed,
            shift=shift,
            iterations=iterations,
            unet_epochs=unet_epochs,
            vae_epochs=vae_epochs,
            name=name,
            progress=progress,
        )


def _run_fit(
    pairs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    train: Sequence[str] = (),
    split: str = "train",
    seed: int = 0,
    shift: str = "scene",
    iterations: int = 2,
    unet_epochs: int = 30,
    vae_epochs: int = 200,
    name: str | None = None,
    progress: bool = False,
) -> FitSummary:
    """:func:`run_fit` once the model folder's lock is held."""
    from degradation.pretrained import load_model_folder

    started = time.perf_counter()
    train = parse_list(list(train), TRAINABLE, "network")
    chips = read_pairs(pairs_dir, split=split)
    n_scenes = len({c.scene_id for c in chips})
    held_out: list[PairChip] = []
    evaluated_on = "train"
    if split == "train":
        try:
            held_out = read_pairs(pairs_dir, split="test")
            evaluated_on = "test"
        except DegradeError:
            held_out = []
    with ProgressBar("fit", n_scenes * iterations, enabled=progress) as bar:
        fit = fit_pairs(
            chips,
            shift=shift,
            iterations=iterations,
            progress=bar.advance if bar.enabled else None,
        )
    unet, vae, logs = train_networks(
        chips, train, seed=seed, unet_epochs=unet_epochs, vae_epochs=vae_epochs
    )
    bands = ("red", "green", "blue", "nir")[: chips[0].hr.shape[0]]
    data = {
        "source": str(Path(pairs_dir).resolve()),
        "split": split,
        "n_pairs": len(chips),
        "n_scenes": n_scenes,
        "roi_ids": [c.roi_id for c in chips],
        "scene_ids": sorted({c.scene_id for c in chips}),
        "hr_gsd_m": chips[0].hr_gsd_m,
        "shift_mode": shift,
        "seed": seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    folder = write_model_folder(
        out_dir,
        name=name or Path(out_dir).name,
        bands=bands,
        factor=4,
        fit=fit,
        unet=unet,
        vae=vae,
        data=data,
        metrics={"training": logs},
    )
    # Table 2 with the model as loaded from disk (what users get), then into the card.
    model = load_model_folder(folder)
    eval_chips = held_out or chips
    t2 = table2(model, eval_chips, seed=seed)
    card_path = folder / "model.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["table2"] = t2
    card["metrics"]["table2_on"] = {"split": evaluated_on, "n_pairs": len(eval_chips)}
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
    return FitSummary(
        model_dir=folder,
        n_pairs=len(chips),
        n_scenes=n_scenes,
        sigma_px=fit.sigma_px,
        gamma_mean=tuple(float(v) for v in fit.gammas.mean(axis=0)),
        noise_std=tuple(float(v) for v in fit.noise_std.mean(axis=0)),
        trained=train,
        table2=t2,
        evaluated_on=evaluated_on,
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------------------------
# The synthetic set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HRImage:
    """One input HR image and where its outputs go (``synthetic/<roi_id>/<image_id>``)."""

    path: Path
    roi_id: str
    image_id: str


def find_hr_images(hr_dir: str | os.PathLike[str]) -> list[HRImage]:
    """The HR GeoTIFFs under ``hr_dir`` and their output names (see the module doc).

    Both names become folder names: each must be a safe id (:mod:`harvest.ids`).

    Raises:
        DegradeError: if the folder is missing or holds no GeoTIFF.
        UnsafeIdError: a folder or file name, or a chip's ``naip_id``, is not a safe id.
    """
    root = Path(hr_dir)
    if not root.is_dir():
        raise DegradeError(f"{root} is not a folder; give a folder of HR GeoTIFFs")
    if (root / "cross-sensor").is_dir():
        root = root / "cross-sensor"  # a fetch folder: kept chips only, never rejected/
    found = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in (".tif", ".tiff")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    cross = [p for p in found if p.name == "HR.tif"]
    images: list[HRImage] = []
    rename = "rename it (these names become output folder names)"
    bad_naip = "correct it in that metadata.json (it names the output folder) or move the chip out"
    for p in cross or found:
        if p.name == "HR.tif" and p.parent.name in ("early", "late"):
            roi_dir = p.parent.parent
            roi = check_id(
                _folder_name(roi_dir), field="folder name", where=str(roi_dir), fix=rename
            )
            images.append(HRImage(p, roi, p.parent.name))
        elif p.name == "HR.tif":
            roi = check_id(
                _folder_name(p.parent), field="folder name", where=str(p.parent), fix=rename
            )
            image_id: object = "image"
            meta = p.parent / "metadata.json"
            if meta.is_file():
                image_id = _read_json(meta).get("naip_id") or "image"
                if isinstance(image_id, int) and not isinstance(image_id, bool):
                    image_id = str(image_id)
            naip = check_id(image_id, field="naip_id", where=str(meta), fix=bad_naip)
            images.append(HRImage(p, roi, naip))
        else:
            roi = check_id(p.stem, field="file name", where=str(p), fix=rename)
            images.append(HRImage(p, roi, "image"))
    if not images:
        raise DegradeError(
            f"no HR images (*.tif) under {root}; give a folder of 4-band HR GeoTIFFs or a "
            "cross-sensor folder"
        )
    keys = [(i.roi_id, i.image_id) for i in images]
    if len(set(keys)) != len(keys):
        raise DegradeError(f"{root}: two HR images map to one output folder; rename them")
    return images


def _folder_name(folder: Path) -> str:
    # The name of "." is "": name the folder by its absolute path instead.
    return Path(os.path.abspath(folder)).name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DegradeError(f"cannot read {path}: {exc}; fix or remove the file") from None
    if not isinstance(loaded, dict):
        raise DegradeError(f"{path} does not hold a JSON object; fix or remove the file")
    return loaded


def _reflectance(data: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    if dtype.startswith("float"):
        return data.astype(np.float32)
    if dtype == "uint8":
        return data.astype(np.float32) / 255.0
    raise DegradeError(f"{path} holds {dtype} values; give float reflectance or uint8 NAIP-like DN")


def _write_tif(
    path: Path, data: np.ndarray, crs: Any, transform: Any, bands: Sequence[str]
) -> None:
    import rasterio

    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": "float32",
        "crs": crs,
        "transform": transform,
        "compress": "zstd",
        "predictor": 3,
        "tiled": data.shape[1] >= 256 and data.shape[2] >= 256,
        "nodata": float("nan"),
    }
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    # Encoded in memory, written with one guarded write: GDAL reports a full disk as a
    # generic write error, harvest.diskio as one naming the file (and the run stops).
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data.astype(np.float32))
            for i, b in enumerate(bands, start=1):
                ds.set_band_description(i, b)
        write_file(path, mem.read())


def _write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` through one guarded write (torch reports a full disk as a RuntimeError)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_file(path, buf.getvalue())


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` through one guarded write (a full disk names the file and stops the run)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_file(path, buf.getvalue())


def _image_seed(seed: int, key: str, method_index: int) -> int:
    digest = zlib.crc32(key.encode("utf-8"))
    return int(np.random.SeedSequence([seed, digest, method_index]).generate_state(1)[0])


@dataclass(frozen=True)
class DegradeSummary:
    """What :func:`run_degrade` did."""

    out_dir: Path
    n_images: int
    n_written: int
    n_done_before: int
    n_skipped: int
    methods: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float

    def line(self) -> str:
        """One-line summary for the CLI."""
        extra = f", {self.n_skipped} skipped (nodata)" if self.n_skipped else ""
        return (
            f"{self.n_written} image{'' if self.n_written == 1 else 's'} degraded "
            f"({', '.join(self.methods)}), "
            f"{self.n_done_before} done before{extra}, in {self.seconds:.1f} s -> "
            f"{self.out_dir / SYNTHETIC_DIR}"
        )


def run_degrade(
    hr_dir: str | os.PathLike[str],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("statistical", "deterministic", "variational"),
    seed: int = 0,
    progress: bool = False,
) -> DegradeSummary:
    """``harvest degrade``: HR_h, S2-like LR and histograms per HR image and method.

    Resumable: an image folder is written under a temporary name and renamed when complete; a
    run skips images whose folder exists. Randomness: per image and method a seed derived from
    ``seed`` and the image's output key, so results do not depend on which other images exist.

    Raises:
        DegradeError: missing folder, no images, a method the model cannot run, bad values.
        DegradationError: the model cannot be loaded.
        FolderLockedError: another run is writing to ``out_dir``.
        DiskWriteError: the disk is full or failing (the run stops there; rerun to resume).
    """
    from degradation.pipeline import Degrader
    from degradation.pretrained import load_model

    started = time.perf_counter()
    methods = parse_list(list(methods), DEGRADE_METHODS, "method")
    if not methods:
        raise DegradeError(f"give at least one method of {', '.join(DEGRADE_METHODS)}")
    images = find_hr_images(hr_dir)
    loaded = load_model(str(model))
    for m in methods:
        if m == "deterministic" and loaded.unet is None:
            raise DegradeError(
                f"model {model} has no U-Net for method deterministic; fit it with --train unet "
                "or leave the method out"
            )
        if m == "variational" and loaded.vae is None:
            raise DegradeError(
                f"model {model} has no VAE for method variational; fit it with --train vae "
                "or leave the method out"
            )
    degraders = {m: Degrader.from_model(loaded, mode=m) for m in methods}
    out = Path(out_dir)
    # One run per folder (harvest.lock): a second run's start-up sweep below deleted the image
    # folder the first run was building.
    with folder_lock(out, dataset_lock_path(out)):
        return _degrade_locked(
            images, loaded, degraders, out, seed=seed, progress=progress, started=started
        )


def _degrade_locked(
    images: Sequence[HRImage],
    loaded: Any,
    degraders: Mapping[str, Any],
    out: Path,
    *,
    seed: int,
    progress: bool,
    started: float,
) -> DegradeSummary:
    """:func:`run_degrade` once the output folder's lock is held."""
    from degradation.harmonize.histogram import band_histograms

    methods = tuple(degraders)
    base = out / SYNTHETIC_DIR
    base.mkdir(parents=True, exist_ok=True)
    # What a killed run left in the ROI folders (never through a link out of the output folder).
    remove_temporaries(p for p in base.iterdir() if is_inside(p, out))
    todo = [i for i in images if not (base / i.roi_id / i.image_id / "metadata.json").is_file()]
    bar = ProgressBar("degrade", len(todo), enabled=progress)
    skipped: list[str] = []
    n_written = 0
    factor = loaded.psf.factor
    try:
        for img in todo:
            data, info = _read_raster(img.path)
            if data.shape[0] != len(loaded.bands):
                raise DegradeError(
                    f"{img.path} has {data.shape[0]} bands; model {loaded.name} takes "
                    f"{len(loaded.bands)} ({', '.join(loaded.bands)})"
                )
            if min(data.shape[1:]) < 4 * factor:
                raise DegradeError(f"{img.path} is {data.shape[1:]} px, too small to degrade")
            hr = _reflectance(data, str(info["dtype"]), img.path)
            if not np.isfinite(hr).all():
                skipped.append(str(img.path))
                logger.warning("skipping %s: it has nodata pixels", img.path)
                bar.advance()
                continue
            with atomic_folder(base / img.roi_id / img.image_id, root=out) as tmp:
                transform = info["transform"]
                lr_transform = transform * transform.scale(factor, factor)
                bands = list(loaded.bands)
                _write_tif(tmp / "HR.tif", hr, info["crs"], transform, bands)
                hists: dict[str, np.ndarray] = {}
                record: dict[str, Any] = {}
                key = f"{img.roi_id}/{img.image_id}"
                for k, m in enumerate(methods):
                    s = _image_seed(seed, key, k)
                    pair = degraders[m](hr, s)
                    hr_h = np.asarray(pair.hr, dtype=np.float32)
                    lr = np.asarray(pair.lr, dtype=np.float32)
                    _write_tif(tmp / f"HR_{m}.tif", hr_h, info["crs"], transform, bands)
                    _write_tif(tmp / f"LR_{m}.tif", lr, info["crs"], lr_transform, bands)
                    hists[m] = np.asarray(band_histograms(lr), dtype=np.float32)
                    hists[f"{m}_hr"] = np.asarray(band_histograms(hr_h), dtype=np.float32)
                    record[m] = {
                        "seed": s,
                        "gamma": None if pair.gamma is None else [float(v) for v in pair.gamma],
                        "hr_file": f"HR_{m}.tif",
                        "lr_file": f"LR_{m}.tif",
                        "lr_shape": list(lr.shape),
                    }
                _write_npz(tmp / "histograms.npz", hists)
                meta = {
                    "roi_id": img.roi_id,
                    "image_id": img.image_id,
                    "source": str(img.path.resolve()),
                    "model": loaded.name,
                    "model_source": loaded.source,
                    "bands": bands,
                    "factor": factor,
                    "methods": record,
                    "histograms": {
                        "file": "histograms.npz",
                        "bins": 120,
                        "range": [0.0, 1.0],
                        "keys": "<method>: S2-like LR, <method>_hr: HR_h; [bands, 120] fractions",
                    },
                    "crs": None if info["crs"] is None else info["crs"].to_string(),
                    "hr_transform": list(transform)[:6],
                    "lr_transform": list(lr_transform)[:6],
                    "hr_shape": list(hr.shape),
                    "run_seed": seed,
                    "harvest_version": __version__,
                }
                write_file(tmp / "metadata.json", (json.dumps(meta, indent=2) + "\n").encode())
            n_written += 1
            bar.advance()
    finally:
        bar.close()
    return DegradeSummary(
        out_dir=out,
        n_images=len(images),
        n_written=n_written,
        n_done_before=len(images) - len(todo),
        n_skipped=len(skipped),
        methods=methods,
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
    )
