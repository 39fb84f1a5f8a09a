"""SEN2VENuS pair processing (pure numpy/scipy): registration, patches, band mapping, selection.

One same-day Sentinel-2 / VENuS pair, read over its common footprint on nested grids (VENuS
5 m, S2 10 m and 20 m sharing pixel edges), becomes the published patch triplets as SEN2VENuS
(Michel et al. 2022; ``SCIENCE.md`` section 2) made them:

1. **Registration** (:func:`register`): one translation per pair, from SIFT matches on the blue
   band at 10 m (VENuS B3 bicubic-downsampled x2 against S2 B02), the common area cut into
   366 x 366 px patches, matches on invalid pixels and matches more than 15 m apart dropped;
   the shift is the mean displacement of every match kept. S2 (10 m and 20 m) is then moved
   back by it with bicubic interpolation (:func:`resample_s2`).
2. **Patches** (:func:`patch_grid`): a regular grid of 256 px VENuS patches (128 px at 10 m,
   64 px at 20 m) over the common footprint; any invalid pixel in any of the three drops it.
3. **Radiometry** (:func:`fit_band_mapping`): per pair and band group, least squares with
   intercept from the VENuS bands brought to the S2 resolution to the S2 bands; patches whose
   RMSE exceeds 0.2 (a cloud one mask missed) are left out of the fit. The map is applied to
   the 5 m VENuS bands (:func:`apply_band_mapping`): the published 5 m tensors are the VENuS
   image in S2's radiometry.
4. **Selection** (:func:`select_patches`): at most 500 random patches per pair (seeded), then
   those whose RMSE between S2 10 m and the mapped VENuS brought to 10 m exceeds 0.02 dropped.

"Brought to S2 resolution" is a Gaussian filter matched to the S2 MTF at Nyquist (0.3 by
default), then decimation (:func:`mtf_downsample`), the paper's evaluation filter.

Conventions: arrays are ``[C, H, W]`` float reflectance with NaN for nodata; masks are bool
``[H, W]``, True where a pixel is usable. A shift is the S2 content's displacement relative to
VENuS, in S2 10 m pixels (:class:`harvest.qa.ShiftEstimate`, ``dy`` positive southwards).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from harvest.errors import QaError
from harvest.qa import ShiftEstimate, correct_shift, sift_shift

#: The published band groups: S2 bands and the VENuS bands mapped onto them.
S2_10M_BANDS = ("B02", "B03", "B04", "B08")
S2_20M_BANDS = ("B05", "B06", "B07", "B8A")
VENUS_10M_BANDS = ("B3", "B4", "B7", "B11")
VENUS_20M_BANDS = ("B8", "B9", "B10", "B11")
#: Patch sizes in pixels at 5, 10 and 20 m.
PATCH_PX = {5: 256, 10: 128, 20: 64}
REGISTRATION_PATCH_PX = 366
MAX_MATCH_DISTANCE_M = 15.0
FIT_RMSE_MAX = 0.2
KEEP_RMSE_MAX = 0.02
MAX_PATCHES = 500
#: Sentinel-2's MTF at Nyquist assumed by the evaluation filter.
S2_MTF_AT_NYQUIST = 0.3


@dataclass(frozen=True, eq=False)
class PairImages:
    """One pair on nested grids over the same area (5 m is 2x the 10 m size, 4x the 20 m).

    Attributes:
        s2_10m: S2 B02, B03, B04, B08 [4, H, W].
        s2_20m: S2 B05, B06, B07, B8A [4, H / 2, W / 2].
        venus: the VENuS bands named by ``venus_bands`` [K, 2H, 2W] at 5 m.
        venus_bands: names of ``venus``'s bands (must hold both VENuS groups' bands).
        valid_s2_10m: usable S2 10 m pixels [H, W] (nodata, cloud, shadow, saturation,
            geophysically invalid removed).
        valid_s2_20m: usable S2 20 m pixels [H / 2, W / 2].
        valid_venus: usable VENuS pixels [2H, 2W].
    """

    s2_10m: np.ndarray
    s2_20m: np.ndarray
    venus: np.ndarray
    venus_bands: tuple[str, ...]
    valid_s2_10m: np.ndarray
    valid_s2_20m: np.ndarray
    valid_venus: np.ndarray

    def __post_init__(self) -> None:
        """Check the nesting of the grids and the bands."""
        _, h, w = self.s2_10m.shape
        want = {
            "s2_20m": ((4, h // 2, w // 2), self.s2_20m.shape),
            "venus": ((len(self.venus_bands), 2 * h, 2 * w), self.venus.shape),
            "valid_s2_10m": ((h, w), self.valid_s2_10m.shape),
            "valid_s2_20m": ((h // 2, w // 2), self.valid_s2_20m.shape),
            "valid_venus": ((2 * h, 2 * w), self.valid_venus.shape),
        }
        if self.s2_10m.shape[0] != 4 or h % 2 or w % 2:
            raise QaError(f"s2_10m must be [4, H, W] with even H and W, got {self.s2_10m.shape}")
        for name, (expected, got) in want.items():
            if tuple(got) != expected:
                raise QaError(f"{name} has shape {tuple(got)}, expected {expected} (nested grids)")
        missing = set(VENUS_10M_BANDS + VENUS_20M_BANDS) - set(self.venus_bands)
        if missing:
            raise QaError(f"the VENuS image lacks bands {sorted(missing)}; read them too")

    def venus_group(self, bands: Sequence[str]) -> np.ndarray:
        """The VENuS bands ``bands`` [len(bands), 2H, 2W]."""
        return self.venus[[self.venus_bands.index(b) for b in bands]]


def _gaussian_sigma(factor: int, mtf: float) -> float:
    """Sigma (input pixels) of the Gaussian whose MTF at the output's Nyquist is ``mtf``."""
    # MTF(f) = exp(-2 pi^2 sigma^2 f^2) at f = 1 / (2 factor) cycles per input pixel.
    return factor * math.sqrt(-2.0 * math.log(mtf)) / math.pi


def mtf_downsample(x: np.ndarray, factor: int, mtf: float = S2_MTF_AT_NYQUIST) -> np.ndarray:
    """Gaussian filter matched to the MTF at Nyquist, then decimation by ``factor``.

    The output pixel ``i`` is the filtered value at the centre of the ``factor`` input pixels it
    covers (grids sharing pixel edges). NaN inputs spread to the outputs they touch.
    """
    a = np.asarray(x, dtype=np.float64)
    sigma = _gaussian_sigma(factor, mtf)
    spatial = (0.0,) * (a.ndim - 2) + (sigma, sigma)
    blurred = ndimage.gaussian_filter(a, spatial, mode="mirror", truncate=4.0)
    # Centres of the output pixels in input coordinates: (i + 0.5) factor - 0.5.
    h, w = a.shape[-2] // factor, a.shape[-1] // factor
    rows = (np.arange(h) + 0.5) * factor - 0.5
    cols = (np.arange(w) + 0.5) * factor - 0.5
    if factor % 2 == 0:
        # Between two input pixels: the mean of the two (bilinear at a half-pixel).
        r0, c0 = rows.astype(int), cols.astype(int)
        sub = blurred[..., r0, :] + blurred[..., r0 + 1, :]
        return np.asarray((sub[..., c0] + sub[..., c0 + 1]) / 4.0)
    return np.asarray(blurred[..., rows.astype(int), :][..., cols.astype(int)])


def _bicubic_half(x: np.ndarray) -> np.ndarray:
    """Bicubic downsampling by 2 onto the grid sharing pixel edges (no prefilter)."""
    return np.asarray(
        ndimage.zoom(
            np.asarray(x, dtype=np.float64), 0.5, order=3, grid_mode=True, mode="grid-mirror"
        )
    )


def register_blue(
    s2_blue: np.ndarray,
    venus_blue: np.ndarray,
    valid_s2: np.ndarray,
    valid_venus: np.ndarray,
    *,
    patch_px: int = REGISTRATION_PATCH_PX,
    max_match_distance_m: float = MAX_MATCH_DISTANCE_M,
    upsample: int = 1,
    min_matches: int = 5,
) -> ShiftEstimate:
    """S2's translation relative to VENuS (10 m px) from SIFT on the blue bands.

    ``s2_blue`` [H, W] at 10 m, ``venus_blue`` [2H, 2W] at 5 m (bicubic-downsampled x2 here);
    per ``patch_px`` square, :func:`harvest.qa.sift_shift` on the pixels valid in both; the
    result is the mean over every match kept in every patch (patch means weighted by their
    match counts). ``upsample`` > 1 helps SIFT on small areas (the demo world's sites).
    """
    blue_v = _bicubic_half(venus_blue)
    valid_v = _bicubic_half(valid_venus.astype(np.float64)) > 0.999
    valid = valid_s2 & valid_v & np.isfinite(s2_blue) & np.isfinite(blue_v)
    h, w = s2_blue.shape
    sums = np.zeros(2)
    n = 0
    for r in range(0, h, patch_px):
        for c in range(0, w, patch_px):
            win = (slice(r, min(r + patch_px, h)), slice(c, min(c + patch_px, w)))
            if valid[win].sum() < 64:
                continue
            est = sift_shift(
                s2_blue[win], blue_v[win], valid[win], gsd_m=10.0, upsample=upsample,
                max_match_distance_m=max_match_distance_m, min_matches=1,
            )  # fmt: skip
            if est.ok:
                sums += est.n_matches * np.array([est.dx_px, est.dy_px])
                n += est.n_matches
    if n < min_matches:
        return ShiftEstimate(math.nan, math.nan, 10.0, "sift", n)
    return ShiftEstimate(float(sums[0] / n), float(sums[1] / n), 10.0, "sift", n)


def register(
    pair: PairImages,
    *,
    patch_px: int = REGISTRATION_PATCH_PX,
    max_match_distance_m: float = MAX_MATCH_DISTANCE_M,
    upsample: int = 1,
    min_matches: int = 5,
) -> ShiftEstimate:
    """The pair's translation (S2 relative to VENuS, 10 m px): S2 B02 against VENuS B3."""
    return register_blue(
        pair.s2_10m[0], pair.venus_group(("B3",))[0], pair.valid_s2_10m, pair.valid_venus,
        patch_px=patch_px, max_match_distance_m=max_match_distance_m, upsample=upsample,
        min_matches=min_matches,
    )  # fmt: skip


def resample_s2(pair: PairImages, shift: ShiftEstimate) -> PairImages:
    """S2 10 m and 20 m moved back by ``shift`` (bicubic), masks moved with them.

    A pixel stays valid only where its interpolation read valid pixels only (the mask is moved
    with linear interpolation and must stay 1).
    """
    half = ShiftEstimate(shift.dx_px / 2, shift.dy_px / 2, 20.0, shift.method, shift.n_matches)
    out = []
    groups = ((pair.s2_10m, pair.valid_s2_10m, shift), (pair.s2_20m, pair.valid_s2_20m, half))
    for img, valid, s in groups:
        filled = np.where(np.isfinite(img) & valid, img, 0.0)
        moved = correct_shift(filled, s, order=3)
        reach = correct_shift(
            (valid & np.all(np.isfinite(img), axis=0)).astype(np.float64), s, order=1
        )
        # Bicubic reads two pixels each side: the mask must be valid over that reach too.
        ok = ndimage.minimum_filter(reach, size=5, mode="nearest") > 0.999
        out.append((moved, ok))
    return PairImages(
        out[0][0], out[1][0], pair.venus, pair.venus_bands, out[0][1], out[1][1], pair.valid_venus
    )


def patch_grid(pair: PairImages, *, patch_px: int = PATCH_PX[5]) -> list[tuple[int, int]]:
    """Top-left (row, col) on the 5 m grid of every all-valid patch of a regular grid.

    The grid starts at the area's top-left corner; a patch is kept only if every pixel of its
    5 m, 10 m and 20 m windows is valid and finite.
    """
    if patch_px % 4:
        raise QaError(f"the 5 m patch must be a multiple of 4 px to nest in 20 m, got {patch_px}")
    h, w = pair.valid_venus.shape
    v5 = pair.valid_venus & np.all(np.isfinite(pair.venus), axis=0)
    v10 = pair.valid_s2_10m & np.all(np.isfinite(pair.s2_10m), axis=0)
    v20 = pair.valid_s2_20m & np.all(np.isfinite(pair.s2_20m), axis=0)
    kept = []
    for r in range(0, h - patch_px + 1, patch_px):
        for c in range(0, w - patch_px + 1, patch_px):
            if (
                v5[r : r + patch_px, c : c + patch_px].all()
                and v10[r // 2 : (r + patch_px) // 2, c // 2 : (c + patch_px) // 2].all()
                and v20[r // 4 : (r + patch_px) // 4, c // 4 : (c + patch_px) // 4].all()
            ):
                kept.append((r, c))
    return kept


def _design(x: np.ndarray) -> np.ndarray:
    """[K, N] samples -> [N, K + 1] with a column of ones (the intercept)."""
    return np.concatenate([x.T, np.ones((x.shape[1], 1))], axis=1)


def fit_band_mapping(
    venus_lr: np.ndarray,
    s2: np.ndarray,
    windows: Sequence[tuple[slice, slice]],
    *,
    rmse_max: float = FIT_RMSE_MAX,
) -> np.ndarray:
    """Least squares with intercept from VENuS (at S2 resolution) to S2 bands, over patches.

    Args:
        venus_lr: VENuS bands on the S2 grid [K, h, w].
        s2: S2 bands [B, h, w].
        windows: the patches on that grid.
        rmse_max: patches whose RMSE between ``venus_lr`` and ``s2`` (raw, band by band)
            exceeds this are left out of the fit.

    Returns:
        ``W`` [K + 1, B] (last row: intercepts): ``s2 ~ venus_lr.T @ W[:-1] + W[-1]``.

    Raises:
        QaError: no patch is left for the fit.
    """
    xs, ys = [], []
    k = min(venus_lr.shape[0], s2.shape[0])
    for win in windows:
        v, s = venus_lr[(slice(None), *win)], s2[(slice(None), *win)]
        if np.sqrt(np.mean((v[:k] - s[:k]) ** 2)) > rmse_max:
            continue
        xs.append(v.reshape(v.shape[0], -1))
        ys.append(s.reshape(s.shape[0], -1))
    if not xs:
        raise QaError(f"every patch differs by RMSE > {rmse_max}; no radiometric fit possible")
    x, y = np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)
    w, *_ = np.linalg.lstsq(_design(x), y.T, rcond=None)
    return np.asarray(w)


def apply_band_mapping(venus: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``W`` of :func:`fit_band_mapping` applied to VENuS bands [K, H, W] -> [B, H, W]."""
    k, h, width = venus.shape
    out = _design(venus.reshape(k, -1)) @ w
    return np.asarray(out.T.reshape(w.shape[1], h, width))


def select_patches(
    patches: Sequence[tuple[int, int]],
    s2_10m: np.ndarray,
    venus_mapped_5m: np.ndarray,
    rng: np.random.Generator,
    *,
    max_patches: int = MAX_PATCHES,
    rmse_max: float = KEEP_RMSE_MAX,
    patch_px: int = PATCH_PX[5],
) -> tuple[list[tuple[int, int]], list[float]]:
    """At most ``max_patches`` random patches, then those within ``rmse_max`` of S2 at 10 m.

    Returns:
        The kept patches (in grid order) and their RMSE.
    """
    order = sorted(patches)
    if len(order) > max_patches:
        pick = rng.choice(len(order), size=max_patches, replace=False)
        order = [order[i] for i in sorted(pick)]
    kept, errors = [], []
    for r, c in order:
        v = mtf_downsample(venus_mapped_5m[:, r : r + patch_px, c : c + patch_px], 2)
        s = s2_10m[:, r // 2 : (r + patch_px) // 2, c // 2 : (c + patch_px) // 2]
        err = float(np.sqrt(np.mean((v - s) ** 2)))
        if err <= rmse_max:
            kept.append((r, c))
            errors.append(err)
    return kept, errors


@dataclass(frozen=True, eq=False)
class PairPatches:
    """What :func:`process_pair` keeps of a pair, ready for the writer.

    Attributes:
        patches: top-left (row, col) of each patch on the 5 m grid.
        venus_10m: mapped VENuS, S2 B02/B03/B04/B08 equivalents [n, 4, 256, 256].
        s2_10m: S2 10 m [n, 4, 128, 128].
        venus_20m: mapped VENuS, S2 B05/B06/B07/B8A equivalents [n, 4, 256, 256].
        s2_20m: S2 20 m [n, 4, 64, 64].
        shift: the registration.
        mapping_10m: W of the 10 m group [5, 4].
        mapping_20m: W of the 20 m group [5, 4].
        rmse: per patch, the RMSE of the selection.
        n_grid: all-valid patches of the grid, before the random cap and the RMSE filter.
    """

    patches: tuple[tuple[int, int], ...]
    venus_10m: np.ndarray
    s2_10m: np.ndarray
    venus_20m: np.ndarray
    s2_20m: np.ndarray
    shift: ShiftEstimate
    mapping_10m: np.ndarray
    mapping_20m: np.ndarray
    rmse: tuple[float, ...]
    n_grid: int


def process_pair(
    pair: PairImages,
    rng: np.random.Generator,
    *,
    upsample: int = 1,
    max_patches: int = MAX_PATCHES,
    patch_px: int = PATCH_PX[5],
) -> PairPatches:
    """Steps 1-4 of the module doc on one pair.

    Raises:
        QaError: the registration failed (too few SIFT matches) or no patch is valid.
    """
    shift = register(pair, upsample=upsample)
    if not shift.ok:
        raise QaError(f"registration failed: {shift.n_matches} SIFT matches; the pair is dropped")
    reg = resample_s2(pair, shift)
    grid = patch_grid(reg, patch_px=patch_px)
    if not grid:
        raise QaError("no patch of the pair is valid in VENuS, S2 10 m and S2 20 m")
    p10, p20 = patch_px // 2, patch_px // 4
    win10 = [(slice(r // 2, r // 2 + p10), slice(c // 2, c // 2 + p10)) for r, c in grid]
    win20 = [(slice(r // 4, r // 4 + p20), slice(c // 4, c // 4 + p20)) for r, c in grid]
    v10 = pair.venus_group(VENUS_10M_BANDS)
    v20 = pair.venus_group(VENUS_20M_BANDS)
    w10 = fit_band_mapping(mtf_downsample(v10, 2), reg.s2_10m, win10)
    w20 = fit_band_mapping(mtf_downsample(v20, 4), reg.s2_20m, win20)
    m10, m20 = apply_band_mapping(v10, w10), apply_band_mapping(v20, w20)
    kept, rmse = select_patches(
        grid, reg.s2_10m, m10, rng, max_patches=max_patches, patch_px=patch_px
    )

    def cut(img: np.ndarray, scale: int) -> np.ndarray:
        size = patch_px // scale
        stack = [
            img[:, r // scale : r // scale + size, c // scale : c // scale + size] for r, c in kept
        ]
        return np.stack(stack) if stack else np.zeros((0, img.shape[0], size, size))

    return PairPatches(
        tuple(kept), cut(m10, 1), cut(reg.s2_10m, 2), cut(m20, 1), cut(reg.s2_20m, 4),
        shift, w10, w20, tuple(rmse), len(grid),
    )  # fmt: skip
