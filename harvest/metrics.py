"""Image comparison metrics (pure numpy and scipy), gradient strata and the benchmark's report.

RMSE, MAE, PSNR, SAM, ERGAS, UIQI, PBIAS, Pearson, CE90/CE99, the structural (edge)
correlation and NDVI.

Every function takes a prediction and a reference with the band axis first ([C, H, W], or any
[C, ...] shape) and returns a float. Conventions:

- RMSE, MAE: over all bands and pixels.
- PSNR: ``10 log10(data_range**2 / MSE)``, infinite for identical images.
- SAM: mean over pixels of the angle (degrees) between the two spectra; pixels where either
  spectrum is all zero are skipped.
- ERGAS: ``100 * ratio * sqrt(mean_b(RMSE_b**2 / mean(ref_b)**2))`` with ``ratio`` the
  high-resolution pixel size over the low-resolution one (0.25 for x4).
- UIQI (Wang and Bovik 2002): per band over the whole image,
  ``4 cov(x, y) mean(x) mean(y) / ((var x + var y)(mean(x)**2 + mean(y)**2))``, averaged over
  bands (a global index, not the sliding-window variant).
- PBIAS: ``100 * sum(pred - ref) / sum(ref)`` (percent; positive means the prediction is high).
- Pearson: correlation per band, averaged over bands.
- CE90, CE99 (:func:`ce`): the 90th / 99th percentile of the absolute error over all bands and
  pixels ("99 % of pixels have an absolute error below ...", as the Sentinel-HR study reads it).
- Structural R (:func:`structural_r`): Pearson correlation between the Sobel gradient magnitudes
  of the two images (edges in the same places with the same contrast score 1).

:func:`evaluate_image` computes them per band, on NDVI and over-all (SAM, ERGAS) on three pixel
strata, as the Sentinel-HR hybridation benchmark does (:func:`gradient_strata`): every valid
pixel, the 50 % of lowest reference gradient and the 25 % of highest.

Two image-level metrics follow the opensr-test framework, which SEN2NAIP's Table 2 used:

- :func:`pbias_ratio`: mean over pixels of ``|pred - ref| / ref`` with each ratio clamped to
  ``[0.01, 100]`` (so always positive, 0.01 at best; a zero or negative reference, which
  Sentinel-2 L2A can hold, gives the clamp's end).
- :func:`sam_image`: the angle in degrees between the two images, each flattened to one
  vector (all bands and pixels), rather than a mean of per-pixel angles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from harvest.errors import HarvestError


class MetricInputError(HarvestError, ValueError):
    """The two images cannot be compared (shape mismatch, empty, not numeric)."""


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise MetricInputError(
            f"prediction {p.shape} and reference {r.shape} differ in shape; resample or crop "
            "one of them first"
        )
    if p.ndim < 1 or p.size == 0:
        raise MetricInputError("cannot compare empty arrays")
    if p.ndim == 1:
        return p[:, None], r[:, None]
    return p.reshape(p.shape[0], -1), r.reshape(r.shape[0], -1)


def rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Root mean square error over all bands and pixels."""
    p, r = _pair(pred, ref)
    return float(np.sqrt(np.mean((p - r) ** 2)))


def mae(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error over all bands and pixels."""
    p, r = _pair(pred, ref)
    return float(np.mean(np.abs(p - r)))


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for values spanning ``data_range``."""
    p, r = _pair(pred, ref)
    mse = float(np.mean((p - r) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def sam(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean spectral angle in degrees (band axis first)."""
    p, r = _pair(pred, ref)
    norms = np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0)
    valid = norms > 0
    if not np.any(valid):
        raise MetricInputError("every pixel has an all-zero spectrum; the angle is undefined")
    cos = np.sum(p * r, axis=0)[valid] / norms[valid]
    return float(np.degrees(np.mean(np.arccos(np.clip(cos, -1.0, 1.0)))))


def ergas(pred: np.ndarray, ref: np.ndarray, ratio: float = 0.25) -> float:
    """Relative dimensionless global error (ERGAS); ``ratio`` = HR pixel size / LR pixel size."""
    p, r = _pair(pred, ref)
    means = r.mean(axis=1)
    if np.any(means == 0):
        raise MetricInputError("a reference band has mean 0; ERGAS is undefined for it")
    band_mse = np.mean((p - r) ** 2, axis=1)
    return float(100.0 * ratio * np.sqrt(np.mean(band_mse / means**2)))


def uiqi(pred: np.ndarray, ref: np.ndarray) -> float:
    """Universal image quality index, global per band, averaged over bands (1 is perfect)."""
    p, r = _pair(pred, ref)
    mp, mr = p.mean(axis=1), r.mean(axis=1)
    vp, vr = p.var(axis=1), r.var(axis=1)
    cov = np.mean((p - mp[:, None]) * (r - mr[:, None]), axis=1)
    # A constant band's variance comes out as rounding noise (~1e-34), not 0: below 1e-24 of
    # its squared mean it is 0, so that a constant band is recognised.
    vp = np.where(vp <= 1e-24 * mp**2, 0.0, vp)
    vr = np.where(vr <= 1e-24 * mr**2, 0.0, vr)
    cov = np.where((vp == 0) | (vr == 0), 0.0, cov)
    den = (vp + vr) * (mp**2 + mr**2)
    if np.any(den == 0):
        raise MetricInputError("a band is constant with mean 0 in both images; UIQI is undefined")
    return float(np.mean(4.0 * cov * mp * mr / den))


def pbias(pred: np.ndarray, ref: np.ndarray) -> float:
    """Percent bias ``100 * sum(pred - ref) / sum(ref)``."""
    p, r = _pair(pred, ref)
    total = r.sum()
    if total == 0:
        raise MetricInputError("the reference sums to 0; PBIAS is undefined")
    return float(100.0 * (p - r).sum() / total)


#: The clamp of :func:`pbias_ratio`'s per-pixel ratios (opensr-test's).
PBIAS_RATIO_CLAMP = (0.01, 100.0)


def pbias_ratio(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean over pixels of ``|pred - ref| / ref``, each ratio clamped to [0.01, 100]."""
    p, r = _pair(pred, ref)
    lo, hi = PBIAS_RATIO_CLAMP
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(p - r) / r
    # A zero reference: x / 0 is +inf (clamped to hi), 0 / 0 is no error (lo); a negative
    # reference gives a negative ratio, clamped to lo.
    ratio = np.where(np.isnan(ratio), lo, ratio)
    return float(np.mean(np.clip(ratio, lo, hi)))


def sam_image(pred: np.ndarray, ref: np.ndarray) -> float:
    """Angle in degrees between the two images, each flattened to one vector."""
    p, r = _pair(pred, ref)
    den = float(np.linalg.norm(p) * np.linalg.norm(r))
    if den == 0:
        raise MetricInputError("an image is all zeros; the angle is undefined")
    cos = float(np.sum(p * r)) / den
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pearson(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation per band, averaged over bands."""
    p, r = _pair(pred, ref)
    pc = p - p.mean(axis=1, keepdims=True)
    rc = r - r.mean(axis=1, keepdims=True)
    den = np.sqrt((pc**2).sum(axis=1) * (rc**2).sum(axis=1))
    if np.any(den == 0):
        raise MetricInputError("a band is constant; its correlation is undefined")
    return float(np.mean((pc * rc).sum(axis=1) / den))


def pearson_joint(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation over every pixel of every band at once (one value per image).

    Unlike :func:`pearson` (per band, averaged), this sees the relation between bands: an
    image whose bands are each right up to a gain, but in the wrong proportions to each other,
    scores low. SEN2NAIP's Table 2 reads this way: its raw and statistical rows (one gamma for
    all bands in the published code) stay near 0.72 while the deterministic row, which restores
    the inter-band relation, reaches 0.97; no per-band monotone mapping could do that per band.
    """
    p, r = _pair(pred, ref)
    pc = p.ravel() - p.mean()
    rc = r.ravel() - r.mean()
    den = float(np.sqrt((pc**2).sum() * (rc**2).sum()))
    if den == 0:
        raise MetricInputError("an image is constant; its correlation is undefined")
    return float((pc * rc).sum() / den)


@dataclass(frozen=True)
class MetricSet:
    """All metrics of one comparison (see the module doc for the conventions)."""

    rmse: float
    mae: float
    psnr_db: float
    sam_deg: float
    ergas: float
    uiqi: float
    pbias_pct: float
    pearson: float


def compare(
    pred: np.ndarray, ref: np.ndarray, *, data_range: float = 1.0, ratio: float = 0.25
) -> MetricSet:
    """Compute every metric of ``pred`` against ``ref``."""
    return MetricSet(
        rmse=rmse(pred, ref),
        mae=mae(pred, ref),
        psnr_db=psnr(pred, ref, data_range),
        sam_deg=sam(pred, ref),
        ergas=ergas(pred, ref, ratio),
        uiqi=uiqi(pred, ref),
        pbias_pct=pbias(pred, ref),
        pearson=pearson(pred, ref),
    )


def ce(pred: np.ndarray, ref: np.ndarray, q: float = 90.0) -> float:
    """The ``q``-th percentile (0-100) of the absolute error over all bands and pixels (CE90)."""
    if not 0.0 <= q <= 100.0:
        raise MetricInputError(f"the percentile must be within [0, 100], got {q}")
    p, r = _pair(pred, ref)
    return float(np.percentile(np.abs(p - r), q))


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of each band: [C, H, W] (or [H, W]) -> the same shape.

    Edges are extended (``nearest``), so the border pixels get a one-sided gradient.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        return gradient_magnitude(x[None])[0]
    if x.ndim != 3:
        raise MetricInputError(f"expected an image [C, H, W] or [H, W], got shape {x.shape}")
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        # Band by band: on a 3-D array ndimage.sobel would also smooth across the bands.
        gy = ndimage.sobel(x[b], axis=0, mode="nearest")
        gx = ndimage.sobel(x[b], axis=1, mode="nearest")
        out[b] = np.hypot(gx, gy)
    return out


def structural_r(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the Sobel gradient magnitudes, per band, averaged over bands.

    Args:
        pred: prediction [C, H, W] or [H, W].
        ref: reference, same shape.
        mask: pixels to correlate over [H, W] (the gradients are computed on the whole image
            first); None: every pixel.
    """
    gp, gr = gradient_magnitude(pred), gradient_magnitude(ref)
    if gp.shape != gr.shape:
        raise MetricInputError(
            f"prediction {gp.shape} and reference {gr.shape} differ in shape; resample or crop "
            "one of them first"
        )
    if gp.ndim == 2:
        gp, gr = gp[None], gr[None]
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != gp.shape[-2:]:
            raise MetricInputError(f"mask {m.shape} does not match the image {gp.shape[-2:]}")
        return pearson(gp[:, m], gr[:, m])
    return pearson(gp, gr)


def ndvi(image: np.ndarray, red: int, nir: int) -> tuple[np.ndarray, np.ndarray]:
    """NDVI ``(nir - red) / (nir + red)`` of an image [C, H, W] and where it is defined.

    Returns:
        ``(ndvi [H, W], defined [H, W])``; undefined pixels (``nir + red == 0``) hold 0.
    """
    x = np.asarray(image, dtype=np.float64)
    for name, i in (("red", red), ("nir", nir)):
        if not 0 <= i < x.shape[0]:
            raise MetricInputError(
                f"the {name} band index {i} is not one of the {x.shape[0]} bands"
            )
    den = x[nir] + x[red]
    defined = den != 0
    out = np.zeros(den.shape)
    np.divide(x[nir] - x[red], den, out=out, where=defined)
    return out, defined


#: The strata of :func:`gradient_strata`, in report order.
STRATA = ("all", "low_gradient_50", "high_gradient_25")


def gradient_strata(ref: np.ndarray, valid: np.ndarray) -> tuple[tuple[str, np.ndarray], ...]:
    """The Sentinel-HR benchmark's pixel strata, each a boolean mask [H, W].

    ``all``: every valid pixel. ``low_gradient_50`` / ``high_gradient_25``: the 50 % of pixels
    with the lowest / the 25 % with the highest reference gradient magnitude (Sobel, averaged over
    bands), ranked among the valid pixels whose 3 x 3 neighbourhood is valid too (a gradient
    next to an invalid pixel is not the scene's). Ties are broken by pixel order, so the counts
    are exact.
    """
    r = np.asarray(ref, dtype=np.float64)
    if r.ndim == 2:
        r = r[None]
    v = np.asarray(valid, dtype=bool)
    if v.shape != r.shape[-2:]:
        raise MetricInputError(f"valid mask {v.shape} does not match the image {r.shape[-2:]}")
    g = gradient_magnitude(np.where(v, r, 0.0)).mean(axis=0)
    trusted = ndimage.binary_erosion(v, structure=np.ones((3, 3), bool), border_value=1)
    idx = np.flatnonzero(trusted)
    order = idx[np.argsort(g.ravel()[idx], kind="stable")]
    low = np.zeros(v.size, bool)
    low[order[: order.size // 2]] = True
    high = np.zeros(v.size, bool)
    high[order[order.size - order.size // 4 :]] = True
    return (
        ("all", v),
        ("low_gradient_50", low.reshape(v.shape)),
        ("high_gradient_25", high.reshape(v.shape)),
    )


@dataclass(frozen=True)
class BandScores:
    """One band's (or NDVI's) metrics on one stratum; NaN where a metric is undefined there."""

    rmse: float
    mae: float
    psnr_db: float
    uiqi: float
    ce90: float
    ce99: float
    struct_r: float


@dataclass(frozen=True)
class StratumScores:
    """Every metric of one stratum: per band, on NDVI (None without red and NIR), over-all."""

    name: str
    pixels: int
    bands: tuple[tuple[str, BandScores], ...]
    ndvi: BandScores | None
    sam_deg: float
    ergas: float


@dataclass(frozen=True)
class ImageEvaluation:
    """:func:`evaluate_image`'s result: one :class:`StratumScores` per stratum."""

    strata: tuple[StratumScores, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values.

        ``{stratum: {pixels, bands: {name: {metric: value}}, ndvi, sam_deg, ergas}}``; an
        undefined value (NaN) is None, an infinite one (PSNR of equal images) the string "inf".
        """

        def clean(v: float) -> float | str | None:
            if np.isnan(v):
                return None
            return ("inf" if v > 0 else "-inf") if np.isinf(v) else float(v)

        def scores(b: BandScores) -> dict[str, float | str | None]:
            return {k: clean(getattr(b, k)) for k in BandScores.__dataclass_fields__}

        return {
            s.name: {
                "pixels": s.pixels,
                "bands": {name: scores(b) for name, b in s.bands},
                "ndvi": None if s.ndvi is None else scores(s.ndvi),
                "sam_deg": clean(s.sam_deg),
                "ergas": clean(s.ergas),
            }
            for s in self.strata
        }


def _or_nan(fn: Callable[..., float], *args: Any) -> float:
    """``fn(*args)``, NaN where the metric is undefined (a constant band, an empty stratum)."""
    try:
        return fn(*args)
    except MetricInputError:
        return float("nan")


def _band_scores(p: np.ndarray, r: np.ndarray, mask: np.ndarray, data_range: float) -> BandScores:
    """Metrics of one 2-D band ``p`` against ``r`` over ``mask``."""
    if not mask.any():
        nan = float("nan")
        return BandScores(nan, nan, nan, nan, nan, nan, nan)
    pv, rv = p[mask][None], r[mask][None]
    return BandScores(
        rmse=rmse(pv, rv),
        mae=mae(pv, rv),
        psnr_db=psnr(pv, rv, data_range),
        uiqi=_or_nan(uiqi, pv, rv),
        ce90=ce(pv, rv, 90.0),
        ce99=ce(pv, rv, 99.0),
        struct_r=_or_nan(structural_r, p, r, mask),
    )


def evaluate_image(
    pred: np.ndarray,
    ref: np.ndarray,
    valid: np.ndarray | None = None,
    band_names: Sequence[str] | None = None,
    *,
    red: int | None = None,
    nir: int | None = None,
    data_range: float = 1.0,
    ratio: float = 0.25,
) -> ImageEvaluation:
    """Every benchmark metric of ``pred`` against ``ref`` on the three gradient strata.

    Args:
        pred: prediction [C, H, W] (reflectance, same units as ``ref``).
        ref: reference [C, H, W].
        valid: pixels to evaluate [H, W] (None: every pixel where both images are finite).
        band_names: one name per band (default ``band1``, ``band2``, ...).
        red: index of the red band, for NDVI (with ``nir``); None: no NDVI.
        nir: index of the near-infrared band.
        data_range: the bands' PSNR peak (1.0 for reflectance; NDVI uses 2.0, its range).
        ratio: ERGAS's HR pixel size over LR pixel size (0.25 for x4).

    Returns:
        The :class:`ImageEvaluation`.

    Raises:
        MetricInputError: shapes differ, or no pixel is valid.
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 3:
        raise MetricInputError(
            f"prediction {p.shape} and reference {r.shape} must be images [C, H, W] of the same "
            "shape; resample or crop one of them first"
        )
    v = np.all(np.isfinite(p) & np.isfinite(r), axis=0)
    if valid is not None:
        if np.shape(valid) != v.shape:
            raise MetricInputError(f"mask {np.shape(valid)} does not match the images {v.shape}")
        v &= np.asarray(valid, dtype=bool)
    if not v.any():
        raise MetricInputError("no pixel is valid in both images (and the mask); nothing to score")
    names = list(band_names) if band_names is not None else [f"band{i + 1}" for i in range(len(p))]
    if len(names) != p.shape[0]:
        raise MetricInputError(f"{len(names)} band names for {p.shape[0]} bands")
    p, r = np.where(v, p, 0.0), np.where(v, r, 0.0)
    nd = None
    if red is not None and nir is not None:
        np_, p_ok = ndvi(p, red, nir)
        nr, r_ok = ndvi(r, red, nir)
        nd = (np_, nr, p_ok & r_ok)
    out = []
    for name, mask in gradient_strata(r, v):
        bands = tuple(
            (names[b], _band_scores(p[b], r[b], mask, data_range)) for b in range(p.shape[0])
        )
        nd_scores = None if nd is None else _band_scores(nd[0], nd[1], mask & nd[2], 2.0)
        sam_deg = erg = float("nan")
        if mask.any():
            sam_deg = _or_nan(sam, p[:, mask], r[:, mask])
            erg = _or_nan(ergas, p[:, mask], r[:, mask], ratio)
        out.append(StratumScores(name, int(mask.sum()), bands, nd_scores, sam_deg, erg))
    return ImageEvaluation(tuple(out))
