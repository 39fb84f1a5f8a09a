"""``harvest evaluate PRED REF [--mask M] [-o report.json]``: the benchmark's metrics in one place.

Reads a prediction and a reference on the same grid, either two GeoTIFFs (same CRS, transform,
size and band count) or two Zarr stores (same ``y`` and ``x`` coordinates, bands and times),
and scores them with :func:`harvest.metrics.evaluate_image`: RMSE, MAE, PSNR, UIQI, CE90, CE99
and the structural (edge) correlation per band and on NDVI, SAM and ERGAS over all bands; on
every valid pixel, on the 50 % lowest-gradient and on the 25 % highest-gradient pixels.

Valid pixels: finite in both images, not the GeoTIFFs' nodata, and non-zero in the mask (a
one-band GeoTIFF on the reference's grid, or a Zarr store with a ``(y, x)`` or ``(time, y, x)``
variable). NDVI needs the red and near-infrared bands: taken from the band names (GeoTIFF band
descriptions or the Zarr ``band`` coordinate: ``red``/``B04``/``B4`` and ``nir``/``B08``/``B8``)
or given as 1-based ``--red``/``--nir``.

A Zarr store holds one data variable on dimensions ``y`` and ``x`` (or name it with
``--variable``; a store with a single such variable is read whatever its name), optionally
``band`` and ``time``: every time step is scored. A Sentinel-HR ``targets.zarr`` is a reference
as it is (its ``reference`` variable; ``lr`` lies on ``y_lr``/``x_lr``). The CRS comes from the
variable's grid mapping (CF) or a ``crs_wkt`` attribute; a store without one is compared by its
coordinates only. Every time step is scored, and the report's ``mean`` averages each value
over them. The report (JSON, written atomically) holds the inputs, the options and the scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harvest import __version__
from harvest.diskio import atomic_write_bytes
from harvest.errors import EvaluateError
from harvest.geoio import first_line
from harvest.metrics import STRATA, ImageEvaluation, MetricInputError, evaluate_image
from harvest.progress import NO_PROGRESS, Progress

#: Band names recognised as red and near-infrared (case-insensitive), for NDVI.
RED_NAMES = ("red", "b04", "b4")
NIR_NAMES = ("nir", "b08", "b8", "nir08")


@dataclass(frozen=True)
class Stack:
    """An input read into memory: data [T, C, H, W] (float64) and what identifies its grid.

    Attributes:
        path: where it was read from.
        kind: "geotiff" or "zarr".
        data: the values, NaN where invalid (nodata); T = 1 for a GeoTIFF.
        bands: one name per band.
        times: one label per time step (empty for a GeoTIFF).
        grid: the grid's identity, compared between the inputs (CRS and transform, or the
            coordinates).
    """

    path: Path
    kind: str
    data: np.ndarray
    bands: tuple[str, ...]
    times: tuple[str, ...]
    grid: tuple[Any, ...]


@dataclass(frozen=True)
class EvaluateSummary:
    """What :func:`run` did."""

    pred: Path
    ref: Path
    output: Path | None
    report: dict[str, Any]

    def line(self) -> str:
        """One-line summary for the CLI (the table is :func:`format_table`)."""
        where = f" -> {self.output}" if self.output else ""
        steps = len(self.report["times"]) or 1
        return f"evaluated {self.pred} against {self.ref} ({steps} image(s)){where}"


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (
        path.suffix == ".zarr" or any((path / f).exists() for f in ("zarr.json", ".zgroup"))
    )


def _read_geotiff(path: Path, what: str) -> Stack:
    import rasterio

    try:
        with rasterio.open(path) as src:
            data = src.read().astype(np.float64)
            if src.nodata is not None and not np.isnan(src.nodata):
                data[data == src.nodata] = np.nan
            bands = tuple(d or f"band{i + 1}" for i, d in enumerate(src.descriptions))
            grid = (
                src.crs.to_wkt() if src.crs else None,
                tuple(round(v, 9) for v in tuple(src.transform)[:6]),
                src.height,
                src.width,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise EvaluateError(
            f"cannot read {what} {path}: {first_line(exc)}; give a GeoTIFF or a Zarr store"
        ) from None
    return Stack(path, "geotiff", data[None], bands, (), grid)


def _read_zarr(path: Path, what: str, variable: str | None) -> Stack:
    import xarray as xr

    try:
        ds = xr.open_zarr(path)
    except Exception as exc:  # zarr raises many types for a broken store
        raise EvaluateError(f"cannot read {what} {path} as Zarr: {first_line(exc)}") from None
    # Image variables: those on the y/x grid (a Sentinel-HR targets store's lr, on y_lr/x_lr,
    # and its per-date tables are not).
    names = [str(n) for n, v in ds.data_vars.items() if {"y", "x"} <= set(v.dims)]
    if variable is not None and variable not in ds.data_vars and len(names) == 1:
        variable = names[0]  # the one image of a prediction named otherwise than the reference
    if variable is None and len(names) != 1:
        raise EvaluateError(
            f"{what} {path} holds {len(names)} image variables ({', '.join(names) or 'none'}); "
            "name one with --variable"
        )
    name = variable or names[0]
    if name not in ds.data_vars:
        raise EvaluateError(f"{what} {path} has no variable {name!r}; it has {', '.join(names)}")
    da = ds[name]
    extra = set(da.dims) - {"time", "band", "y", "x"}
    if {"y", "x"} - set(da.dims) or extra:
        raise EvaluateError(
            f"{what} {path}: variable {name!r} has dimensions {tuple(da.dims)}; expected y and x, "
            "optionally band and time"
        )
    if "band" not in da.dims:
        da = da.expand_dims("band")
    if "time" not in da.dims:
        da = da.expand_dims("time")
    da = da.transpose("time", "band", "y", "x")
    data = np.asarray(da.values, dtype=np.float64)
    fill = da.attrs.get("_FillValue", da.encoding.get("_FillValue"))
    if fill is not None and not np.isnan(fill):
        data[data == fill] = np.nan
    bands = (
        tuple(str(b) for b in da["band"].values)
        if "band" in da.coords
        else tuple(f"band{i + 1}" for i in range(da.sizes["band"]))
    )
    times = tuple(str(t) for t in da["time"].values) if "time" in da.coords else ()
    if not times and da.sizes["time"] > 1:
        times = tuple(str(i) for i in range(da.sizes["time"]))
    mapping = da.attrs.get("grid_mapping")
    mapped = ds[mapping].attrs if isinstance(mapping, str) and mapping in ds.variables else {}
    crs = da.attrs.get("crs_wkt") or mapped.get("crs_wkt") or ds.attrs.get("crs_wkt")
    grid = (
        crs,
        tuple(np.round(np.asarray(da["x"].values, dtype=np.float64), 6))
        if "x" in da.coords
        else None,
        tuple(np.round(np.asarray(da["y"].values, dtype=np.float64), 6))
        if "y" in da.coords
        else None,
        da.sizes["y"],
        da.sizes["x"],
    )
    return Stack(path, "zarr", data, bands, times, grid)


def read_stack(path: Path, what: str, variable: str | None = None) -> Stack:
    """Read a GeoTIFF or a Zarr store (see the module doc).

    Raises:
        EvaluateError: the path is missing or cannot be read.
    """
    if not path.exists():
        raise EvaluateError(f"{what} not found: {path}; check the path")
    if _is_zarr(path):
        return _read_zarr(path, what, variable)
    if path.is_dir():
        raise EvaluateError(f"{what} {path} is a folder but not a Zarr store; give a GeoTIFF")
    return _read_geotiff(path, what)


def _same_grid(a: Stack, b: Stack, what: str) -> None:
    """Raise unless ``b`` lies on ``a``'s grid."""
    if a.kind != b.kind:
        raise EvaluateError(
            f"{a.path} is {a.kind} but {b.path} is {b.kind}; give two GeoTIFFs or two Zarr stores"
        )
    grid_a, grid_b = a.grid, b.grid
    if a.kind == "zarr" and (grid_a[0] is None or grid_b[0] is None):
        # A store without a CRS (a prediction written with the reference's x/y only) is
        # compared by its coordinates.
        grid_a, grid_b = grid_a[1:], grid_b[1:]
    if grid_a != grid_b:
        names: tuple[str, ...] = ("CRS", "transform", "height", "width")
        if a.kind == "zarr":
            names = ("CRS", "x coordinates", "y coordinates", "height", "width")
            names = names[len(a.grid) - len(grid_a) :]
        diff = next(n for n, x, y in zip(names, grid_a, grid_b, strict=False) if x != y)
        raise EvaluateError(
            f"{what} {b.path} is not on the grid of {a.path} (its {diff} differs); resample it "
            "onto the reference grid first"
        )


def _band_index(names: Sequence[str], wanted: tuple[str, ...], given: int | None) -> int | None:
    if given is not None:
        if not 1 <= given <= len(names):
            raise EvaluateError(f"band {given} does not exist: the images have {len(names)} bands")
        return given - 1
    hits = [i for i, n in enumerate(names) if n.strip().lower() in wanted]
    return hits[0] if len(hits) == 1 else None


def _mean_reports(reports: list[Any]) -> Any:
    """Each numeric leaf averaged over the reports (None where any is undefined)."""
    first = reports[0]
    if isinstance(first, dict):
        return {k: _mean_reports([r[k] for r in reports]) for k in first}
    if any(r is None for r in reports):
        return None
    if any(isinstance(r, str) for r in reports):
        # "inf" (a PSNR of equal images) in any step: the mean is infinite too.
        return "inf"
    return float(np.mean(reports))


def run(
    pred: Path,
    ref: Path,
    *,
    mask: Path | None = None,
    output: Path | None = None,
    red: int | None = None,
    nir: int | None = None,
    data_range: float = 1.0,
    ratio: float = 0.25,
    variable: str | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> EvaluateSummary:
    """``harvest evaluate``: score ``pred`` against ``ref`` (see the module doc).

    Args:
        pred: the prediction (GeoTIFF or Zarr).
        ref: the reference, on the same grid.
        mask: pixels to score (non-zero), on the same grid; None: every valid pixel.
        output: the JSON report to write; None: none.
        red: 1-based red band for NDVI; None: from the band names.
        nir: 1-based near-infrared band; None: from the band names.
        data_range: PSNR's peak value of the bands (1.0 for reflectance).
        ratio: ERGAS's HR pixel size over LR pixel size (0.25 for x4).
        variable: the Zarr variable to read (when a store holds several).
        progress: a bar over the time steps (on stderr), or nothing.

    Returns:
        The :class:`EvaluateSummary` (its ``report`` is what the JSON holds).

    Raises:
        EvaluateError: unreadable inputs, different grids, bad options.
    """
    if data_range <= 0 or ratio <= 0:
        raise EvaluateError(f"--data-range and --ratio must be positive, got {data_range}, {ratio}")
    r = read_stack(ref, "REF", variable)
    p = read_stack(pred, "PRED", variable)
    _same_grid(r, p, "PRED")
    if p.data.shape != r.data.shape:
        raise EvaluateError(
            f"PRED {pred} has shape {p.data.shape[:2]} (times, bands) but REF {ref} "
            f"{r.data.shape[:2]}; give images with the same bands and times"
        )
    if p.times != r.times:
        raise EvaluateError(f"PRED {pred} and REF {ref} hold different time steps")
    valid = np.ones(r.data.shape[-2:], bool)[None].repeat(r.data.shape[0], axis=0)
    if mask is not None:
        m = read_stack(mask, "MASK", None)
        _same_grid(r, m, "MASK")
        if m.data.shape[1] != 1 or m.data.shape[0] not in (1, r.data.shape[0]):
            raise EvaluateError(
                f"MASK {mask} must have one band (and one or every time step), got "
                f"{m.data.shape[:2]} (times, bands)"
            )
        valid = np.broadcast_to(np.nan_to_num(m.data[:, 0]) != 0, valid.shape)
    i_red = _band_index(r.bands, RED_NAMES, red)
    i_nir = _band_index(r.bands, NIR_NAMES, nir)
    evaluations: list[ImageEvaluation] = []
    with Progress.of(progress).bar("evaluate", r.data.shape[0]) as bar:
        for t in range(r.data.shape[0]):
            try:
                evaluations.append(
                    evaluate_image(
                        p.data[t], r.data[t], valid[t], r.bands, red=i_red, nir=i_nir,
                        data_range=data_range, ratio=ratio,
                    )
                )  # fmt: skip
            except MetricInputError as exc:
                label = f" at time {r.times[t]}" if r.times else ""
                raise EvaluateError(f"cannot score PRED {pred}{label}: {first_line(exc)}") from None
            bar.advance()
    scores = [e.to_dict() for e in evaluations]
    report: dict[str, Any] = {
        "harvest_version": __version__,
        "pred": str(pred),
        "ref": str(ref),
        "mask": None if mask is None else str(mask),
        "bands": list(r.bands),
        "ndvi_bands": None if i_red is None or i_nir is None else [r.bands[i_red], r.bands[i_nir]],
        "data_range": data_range,
        "ergas_ratio": ratio,
        "strata": list(STRATA),
        "times": list(r.times),
        "scores": scores[0] if len(scores) == 1 else _mean_reports(scores),
    }
    if len(scores) > 1:
        report["per_time"] = dict(zip(r.times, scores, strict=True))
    if output is not None:
        body = json.dumps(report, indent=2).encode() + b"\n"
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output, body)
    return EvaluateSummary(pred, ref, output, report)


def format_table(report: dict[str, Any]) -> str:
    """The ``all`` stratum of a report as a text table (bands and NDVI as rows)."""
    s = report["scores"]["all"]
    cols = ("rmse", "mae", "psnr_db", "uiqi", "ce90", "ce99", "struct_r")
    rows = list(s["bands"].items()) + ([("NDVI", s["ndvi"])] if s["ndvi"] else [])

    def cell(v: Any) -> str:
        return "-" if v is None else (v if isinstance(v, str) else f"{v:.4g}")

    lines = ["band      " + "".join(f"{c:>10}" for c in cols)]
    lines += [f"{name[:10]:<10}" + "".join(f"{cell(b[c]):>10}" for c in cols) for name, b in rows]
    lines.append(
        f"all bands: SAM {cell(s['sam_deg'])} deg, ERGAS {cell(s['ergas'])}, "
        f"{s['pixels']} pixels (strata: {', '.join(report['strata'])})"
    )
    return "\n".join(lines)
