"""Noise n: the simple signal-scaled Gaussian model and a noise level estimator.

Simple model: zero-mean Gaussian noise whose standard deviation is ``std`` times a reflectance
scale, added at LR resolution (after Phi, as in SEN2NAIP's equation). Two scalings:

- ``"pixel_rms"`` (the paper): per pixel, ``sqrt(mean over bands of x**2)``; ``std = 0.012``.
- ``"band_rms"`` (opensr-degradation's ``gaussian_noise``): per band, the root mean square of
  the band over the image; the package uses ``std = 0.025``.
- ``"none"``: constant ``std``.

Randomness comes only from an explicit ``torch.Generator``, ``numpy.random.Generator`` or integer
seed; draws on the CPU generator are the same for any thread count.

Estimator (:func:`estimate_noise_std`): Immerkaer's (1996) Laplacian-difference residual. The
3 x 3 mask ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` cancels planes and gently curved surfaces;
on white Gaussian noise of std ``s`` its response has std ``6 s``. We take a robust scale of the
response, ``1.4826 * median(|r|) / 6``, so edges and texture (a minority of pixels) barely move
it; the estimate is per band.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from degradation._tensor import to_batched
from degradation.errors import DegradationError

PAPER_NOISE_STD = 0.012
PACKAGE_NOISE_STD = 0.025
SCALINGS = ("pixel_rms", "band_rms", "none")

RandomSource = torch.Generator | np.random.Generator | int

_LAPLACE_DIFF = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
_MAD_TO_STD = 1.482602218505602


def standard_normal(shape: tuple[int, ...], rng: RandomSource, like: torch.Tensor) -> torch.Tensor:
    """Draw standard normal values with the given random source, on ``like``'s device/dtype."""
    if isinstance(rng, bool) or not isinstance(rng, torch.Generator | np.random.Generator | int):
        raise DegradationError(
            "pass an explicit random source: a torch.Generator, a numpy Generator or an int seed"
        )
    if isinstance(rng, int):
        rng = np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        # One integer from the numpy stream seeds a torch CPU generator: torch's vectorised
        # Box-Muller draws 3.5x faster than numpy's scalar ziggurat (0.8 vs 2.9 ms for an LR
        # image) and, like it, gives the same values for any thread count.
        rng = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    draw = torch.randn(shape, generator=rng, device=rng.device, dtype=torch.float32)
    return draw.to(device=like.device, dtype=like.dtype)


def simple_noise(
    x: np.ndarray | torch.Tensor,
    rng: RandomSource,
    *,
    std: float = PAPER_NOISE_STD,
    scaling: str = "pixel_rms",
) -> np.ndarray | torch.Tensor:
    """Draw the simple noise for image ``x`` (returned alone; add it to ``x`` yourself).

    Args:
        x: LR reflectance [C, H, W] or [B, C, H, W].
        rng: explicit random source (torch.Generator, numpy Generator or int seed).
        std: relative standard deviation (0.012 paper, 0.025 package).
        scaling: "pixel_rms", "band_rms" or "none" (see module doc).

    Returns:
        Noise with the shape and type of ``x``.

    Raises:
        DegradationError: on an unknown scaling or a negative std.
    """
    if scaling not in SCALINGS:
        raise DegradationError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if not std >= 0:
        raise DegradationError(f"std must be >= 0, got {std}")
    t, restore = to_batched(x)
    z = standard_normal(tuple(t.shape), rng, t)
    ref = t.detach()
    if scaling == "pixel_rms":
        scale = ref.square().mean(dim=1, keepdim=True).sqrt()
    elif scaling == "band_rms":
        scale = ref.square().mean(dim=(2, 3), keepdim=True).sqrt()
    else:
        scale = torch.ones((1, 1, 1, 1), dtype=t.dtype, device=t.device)
    return restore(z * (std * scale))


def estimate_noise_std(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Estimate the per-band standard deviation of additive white noise (see module doc).

    Args:
        x: [C, H, W] or [B, C, H, W], at least 3 x 3 pixels.

    Returns:
        float64 [C] (or [B, C]).
    """
    t, _ = to_batched(x)
    if t.shape[-1] < 3 or t.shape[-2] < 3:
        raise DegradationError(f"the image needs at least 3 x 3 pixels, got {tuple(t.shape)}")
    b, c = t.shape[:2]
    with torch.no_grad():
        mask = torch.tensor(_LAPLACE_DIFF, dtype=t.dtype, device=t.device)
        r = F.conv2d(t.reshape(b * c, 1, *t.shape[-2:]), mask[None, None])
        med = r.abs().reshape(b * c, -1).median(dim=1).values
    out = (_MAD_TO_STD / 6.0 * med).double().cpu().numpy().reshape(b, c)
    return out[0] if x.ndim == 3 else out


# --- Reflectance-to-noise matrix -------------------------------------------------------------

#: Reflectance bin edges of the published SEN2NAIP matrix: pixel ``x`` falls in row
#: ``#{edges <= x}`` (``numpy.digitize``), so 100 edges give 101 rows (row 0: x < 0; row 100:
#: x >= 0.495).
SEN2NAIP_REFLECTANCE_EDGES = np.arange(0, 0.5, 0.005)
#: Noise values (columns) of the published matrix: -0.0101 to 0.0099 in steps of 0.0002.
SEN2NAIP_NOISE_VALUES = np.arange(-0.0101, 0.0101, 0.0002)
# Noise columns per uniform-lookup cell: 4096 cells leave about K / 4096 of the draws (2.5 % for
# 101 columns) needing an exact search.
_U_CELLS = 4096
_MAX_ROW_CELLS = 1 << 20


def _uniforms(n: int, rng: RandomSource | np.random.RandomState) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1) from any accepted random source."""
    if isinstance(rng, np.random.RandomState):
        return rng.random_sample(n)
    if isinstance(rng, np.random.Generator):
        return rng.random(n)
    if isinstance(rng, torch.Generator):
        return torch.rand(n, generator=rng, dtype=torch.float64, device=rng.device).cpu().numpy()
    if isinstance(rng, int) and not isinstance(rng, bool):
        return np.random.default_rng(rng).random(n)
    raise DegradationError(
        "pass an explicit random source: a torch.Generator, a numpy Generator or an int seed"
    )


@dataclass(frozen=True, eq=False)
class _RowLookup:
    """Uniform-grid lookup that gives ``#{edges <= x}`` with one correction each way."""

    low: float
    inv_width: float
    base: np.ndarray  # [cells] int64: #{edges <= cell centre}
    padded: np.ndarray  # [-inf, *edges, +inf]

    @classmethod
    def build(cls, edges: np.ndarray) -> _RowLookup | None:
        span = float(edges[-1] - edges[0]) if edges.size > 1 else 0.0
        gap = float(np.min(np.diff(edges))) if edges.size > 1 else 1.0
        # Cells narrower than the closest pair of edges hold at most one edge each.
        n = int(np.ceil(span / gap * 1.01)) + 1 if span > 0 else 1
        if n > _MAX_ROW_CELLS:
            return None
        width = span / n if span > 0 else 1.0
        centres = edges[0] + (np.arange(n) + 0.5) * width
        base = np.searchsorted(edges, centres, side="right").astype(np.int64)
        padded = np.concatenate([[-np.inf], edges, [np.inf]])
        return cls(float(edges[0]), 1.0 / width, base, padded)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        cell = np.clip((x - self.low) * self.inv_width, 0, self.base.size - 1).astype(np.int64)
        r = self.base[cell]
        # x and its cell centre are at most one edge apart (clipped extremes included).
        return r + (x >= self.padded[r + 1]) - (x < self.padded[r])


@dataclass(frozen=True, eq=False)
class NoiseMatrix:
    """Empirical noise distribution per reflectance bin (SEN2NAIP's reflectance-to-noise matrix).

    A pixel of reflectance ``x`` falls in row ``r = #{reflectance_edges <= x}`` (as
    ``numpy.digitize``); its noise is ``noise_values[k]`` with probability
    ``probabilities[r, k]``.

    Sampling is vectorised inverse-CDF lookup: per row the CDF is ``cumsum(p) / sum(p)``, and a
    uniform ``u`` picks ``k = #{cdf <= u}``, the rule numpy's ``choice`` uses, so with the same
    uniforms the draws are identical to a per-pixel ``np.random.choice(noise_values, p=row)``.
    The row comes from a uniform grid over the edges (each cell holds at most one edge, so one
    comparison each way makes it exact); ``k`` comes from a per-row table over 4096 cells of
    ``u``, exact wherever a cell holds no CDF step, and from one ``searchsorted`` over all
    rows (offset by the row number) for the few remaining draws.

    Attributes:
        reflectance_edges: increasing edges [R - 1].
        noise_values: noise value of each column [K].
        probabilities: [R, K], non-negative, every row with a positive sum.
        n_samples: residuals per row the matrix was estimated from (empty for published ones).
    """

    reflectance_edges: np.ndarray
    noise_values: np.ndarray
    probabilities: np.ndarray
    n_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        """Validate shapes and values; freeze the arrays."""
        edges = np.asarray(self.reflectance_edges, dtype=np.float64).reshape(-1)
        values = np.asarray(self.noise_values, dtype=np.float64).reshape(-1)
        p = np.asarray(self.probabilities, dtype=np.float64)
        if edges.size == 0 or np.any(np.diff(edges) <= 0) or not np.isfinite(edges).all():
            raise DegradationError("reflectance_edges must be finite and strictly increasing")
        if p.shape != (edges.size + 1, values.size):
            raise DegradationError(
                f"probabilities has shape {p.shape}; expected (len(reflectance_edges) + 1, "
                f"len(noise_values)) = {(edges.size + 1, values.size)}"
            )
        if np.any(p < 0) or np.any(p.sum(axis=1) <= 0) or not np.isfinite(p).all():
            raise DegradationError("every row of probabilities must be non-negative, sum > 0")
        for name, arr in (
            ("reflectance_edges", edges),
            ("noise_values", values),
            ("probabilities", p),
        ):
            arr = arr.copy()
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @functools.cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, _RowLookup | None]:
        p = self.probabilities
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        rows, k = p.shape
        # Rows stacked with offset r: a query u + r lands inside row r (its CDF ends at 1).
        flat = (cdf + np.arange(rows)[:, None]).reshape(-1)
        grid = np.arange(_U_CELLS + 1) / _U_CELLS
        lo = np.stack([np.searchsorted(c, grid[:-1], side="right") for c in cdf])
        hi = np.stack([np.searchsorted(c, grid[1:], side="left") for c in cdf])
        lut = np.minimum(lo, k - 1).astype(np.int16 if k < 2**15 else np.int64)
        exact = np.ascontiguousarray(lo == hi)
        return flat, lut, exact, _RowLookup.build(self.reflectance_edges)

    def rows(self, x: np.ndarray) -> np.ndarray:
        """Row index of every value of ``x`` (``numpy.digitize(x, reflectance_edges)``)."""
        lookup = self._tables[3]
        x64 = np.asarray(x, dtype=np.float64)
        if lookup is None:
            return np.searchsorted(self.reflectance_edges, x64, side="right")
        return lookup(x64)

    def sample(
        self, x: np.ndarray | torch.Tensor, rng: RandomSource | np.random.RandomState
    ) -> np.ndarray | torch.Tensor:
        """Draw the noise for image ``x`` (returned alone; add it to ``x`` yourself).

        Args:
            x: LR reflectance, any shape (typically [C, H, W] or [B, C, H, W]).
            rng: explicit random source: torch.Generator, numpy Generator, int seed, or a legacy
                ``numpy.random.RandomState`` (one uniform per pixel in C order, as numpy's
                ``choice`` draws them).

        Returns:
            float32 noise with the shape and type (device for tensors) of ``x``.

        Raises:
            DegradationError: on non-finite values or a missing random source.
        """
        if isinstance(x, torch.Tensor):
            arr = x.detach().cpu().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
        else:
            raise DegradationError(f"x must be a numpy array or a torch tensor, not {type(x)}")
        flat = arr.reshape(-1)
        if not np.isfinite(flat).all():
            raise DegradationError("x contains NaN or infinite values; fill or mask them first")
        u = _uniforms(flat.size, rng)
        cdf_flat, lut, exact, _ = self._tables
        r = self.rows(flat)
        cell = np.minimum((u * _U_CELLS).astype(np.int64), _U_CELLS - 1)
        k = lut[r, cell].astype(np.int64)
        todo = np.flatnonzero(~exact[r, cell])
        if todo.size:
            rt = r[todo]
            n_cols = self.noise_values.size
            hit = np.searchsorted(cdf_flat, u[todo] + rt, side="right") - rt * n_cols
            k[todo] = np.clip(hit, 0, n_cols - 1)
        out = self.noise_values.astype(np.float32)[k].reshape(arr.shape)
        if isinstance(x, torch.Tensor):
            return torch.from_numpy(out).to(x.device)
        return out

    def std(self) -> np.ndarray:
        """Standard deviation of the noise in every row, float64 [R]."""
        p = self.probabilities / self.probabilities.sum(axis=1, keepdims=True)
        mean = p @ self.noise_values
        return np.sqrt(np.maximum(p @ self.noise_values**2 - mean**2, 0.0))


def sen2naip_noise_grid() -> tuple[np.ndarray, np.ndarray]:
    """The published matrix's (reflectance_edges, noise_values): copies, safe to modify."""
    return SEN2NAIP_REFLECTANCE_EDGES.copy(), SEN2NAIP_NOISE_VALUES.copy()


def _as_list(
    x: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
) -> list[np.ndarray | torch.Tensor]:
    if isinstance(x, np.ndarray | torch.Tensor):
        return [x]
    return list(x)


def estimate_noise_matrix(
    lr: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    reference: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor] | None = None,
    *,
    reflectance_edges: np.ndarray = SEN2NAIP_REFLECTANCE_EDGES,
    noise_values: np.ndarray = SEN2NAIP_NOISE_VALUES,
    min_count: int = 50,
) -> NoiseMatrix:
    """Estimate a reflectance-to-noise matrix from cloud-free LR images.

    Estimator. Every pixel gives one noise residual and the reflectance it is binned by:

    - with ``reference`` (the noise-free prediction of each LR image, e.g. the PSF-degraded
      harmonised HR of the same scene): residual ``lr - reference``, binned by ``reference``;
    - without it: Immerkaer's Laplacian-difference response (see :func:`estimate_noise_std`)
      divided by 6, binned by the 3 x 3 mean of ``lr`` (interior pixels only). On white noise
      this residual has exactly the noise's variance; smooth signal (planes, gentle curvature)
      cancels. It keeps the noise's variance per reflectance, not its exact shape.

    Residuals are histogrammed per row into the columns (nearest noise value; values beyond the
    range go to the end columns). A row with fewer than ``min_count`` residuals takes the
    pooled residuals of the nearest rows that together reach ``min_count``.

    Args:
        lr: LR images, one array [C, H, W] / [B, C, H, W] or a sequence of them (any sizes).
        reference: noise-free predictions matching ``lr`` one to one, or None.
        reflectance_edges: row edges (default: the published SEN2NAIP grid).
        noise_values: column values, increasing (default: the published grid).
        min_count: fewest residuals behind any row.

    Returns:
        The :class:`NoiseMatrix` (``n_samples`` holds the residuals actually in each row).

    Raises:
        DegradationError: on mismatched shapes or fewer than ``min_count`` residuals in all.
    """
    images = _as_list(lr)
    refs: list[np.ndarray | torch.Tensor] | None = None
    if reference is not None:
        refs = _as_list(reference)
        if len(refs) != len(images):
            raise DegradationError(
                f"got {len(images)} LR images but {len(refs)} references; give one per image"
            )
    edges = np.asarray(reflectance_edges, dtype=np.float64)
    values = np.asarray(noise_values, dtype=np.float64)
    if values.size < 2 or np.any(np.diff(values) <= 0):
        raise DegradationError("noise_values must be strictly increasing with >= 2 values")
    resid_parts: list[np.ndarray] = []
    level_parts: list[np.ndarray] = []
    for i, img in enumerate(images):
        t, _ = to_batched(img, "lr")
        t = t.detach().to(torch.float64).cpu()
        if refs is not None:
            ref, _ = to_batched(refs[i], "reference")
            ref = ref.detach().to(torch.float64).cpu()
            if ref.shape != t.shape:
                raise DegradationError(
                    f"reference {i} has shape {tuple(ref.shape)}, LR {tuple(t.shape)}"
                )
            resid, level = t - ref, ref
        else:
            if t.shape[-1] < 3 or t.shape[-2] < 3:
                raise DegradationError(f"LR image {i} needs at least 3 x 3 pixels")
            b, c, h, w = t.shape
            flat = t.reshape(b * c, 1, h, w)
            mask = torch.tensor(_LAPLACE_DIFF, dtype=t.dtype)[None, None]
            resid = F.conv2d(flat, mask) / 6.0
            level = F.avg_pool2d(flat, 3, stride=1)
        resid_parts.append(resid.reshape(-1).numpy())
        level_parts.append(level.reshape(-1).numpy())
    resid_all = np.concatenate(resid_parts)
    level_all = np.concatenate(level_parts)
    keep = np.isfinite(resid_all) & np.isfinite(level_all)
    resid_all, level_all = resid_all[keep], level_all[keep]
    if resid_all.size < min_count:
        raise DegradationError(
            f"only {resid_all.size} usable pixels, fewer than min_count={min_count}; "
            "give more or larger cloud-free LR images"
        )
    n_rows, n_cols = edges.size + 1, values.size
    row = np.searchsorted(edges, level_all, side="right")
    mids = (values[1:] + values[:-1]) / 2
    col = np.searchsorted(mids, resid_all, side="right")
    counts = np.bincount(row * n_cols + col, minlength=n_rows * n_cols).reshape(n_rows, n_cols)
    per_row = counts.sum(axis=1)
    probs = counts.astype(np.float64)
    for r in np.flatnonzero(per_row < min_count).tolist():
        # Widen a window around the row until it holds enough residuals.
        lo, hi = r, r
        while counts[lo : hi + 1].sum() < min_count:
            lo, hi = max(lo - 1, 0), min(hi + 1, n_rows - 1)
        probs[r] = counts[lo : hi + 1].sum(axis=0)
    probs /= probs.sum(axis=1, keepdims=True)
    return NoiseMatrix(edges, values, probs, per_row.astype(np.int64))
