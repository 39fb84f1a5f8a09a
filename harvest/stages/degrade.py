"""``harvest degrade HR_DIR --model sen2naip|MODEL -o OUT``: the SEN2NAIP synthetic set.

This stage reads and writes files; the numerical work is :class:`degradation.pipeline.Degrader`
(one per method) on a model of :func:`degradation.pretrained.load_model`. Layout (one folder per
HR image, written atomically, skipped when present)::

    OUT/synthetic/ROI_xxxxx/IMAGE/HR.tif              the input HR, float32 reflectance
    OUT/synthetic/ROI_xxxxx/IMAGE/HR_<method>.tif     HR_h: the harmonised HR of a method
    OUT/synthetic/ROI_xxxxx/IMAGE/LR_<method>.tif     the Sentinel-2-like LR of a method
    OUT/synthetic/ROI_xxxxx/IMAGE/histograms.npz      per method, 4 x 120 fractions over [0, 1]:
                                                      ``<method>`` (LR) and ``<method>_hr`` (HR_h)
    OUT/synthetic/ROI_xxxxx/IMAGE/metadata.json       ids, source, model, seed, gammas, grids

With ``images=False`` (the synthetic build, as the paper published it) only ``HR.tif`` (uint16
reflectance x 10,000), ``histograms.npz`` and ``metadata.json`` are written; metadata.json then
carries the input folder's metadata.json fields (Table 1's) and ``d_sim_to_real``: per method the
``[bands, 120]`` histogram fractions of HR_h, the target a dataloader matches the HR to.

A ``harvest fetch`` folder contributes only its kept chips (``cross-sensor/``).
``ROI_xxxxx`` and ``IMAGE`` come from the input path: ``.../ROI_x/{early,late}/HR.tif`` keeps both
names; ``.../ROI_x/HR.tif`` (a cross-sensor chip) uses ``ROI_x`` and the NAIP id of its
metadata.json (else ``image``); any other ``NAME.tif`` uses ``NAME`` and ``image``. Both names
must be safe ids (:mod:`harvest.ids`). Input values: float GeoTIFFs are reflectance; uint8 is
NAIP-like DN and is divided by 255.

One run per output folder: it holds ``OUT/.harvest/lock`` (:mod:`harvest.lock`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harvest import __version__
from harvest.diskio import write_file
from harvest.errors import DegradeError
from harvest.ids import check_id, is_inside
from harvest.lock import dataset_lock_path, folder_lock
from harvest.progress import NO_PROGRESS, Progress
from harvest.stages._degradation import parse_list, read_json, read_raster, write_npz
from harvest.store import atomic_folder, remove_temporaries

if TYPE_CHECKING:
    # torch comes with these: imported when the stage runs, not when the CLI parses.
    from degradation.pipeline import Degrader
    from degradation.pretrained import DegradationModel

logger = logging.getLogger(__name__)

DEGRADE_METHODS = ("raw", "statistical", "deterministic", "variational")
SYNTHETIC_DIR = "synthetic"
HR_UINT16_SCALE = 10_000
"""uint16 HR GeoTIFFs hold reflectance x 10,000 (harvest's synthetic HR.tif)."""


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
                image_id = read_json(meta).get("naip_id") or "image"
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


def _reflectance(data: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    if dtype.startswith("float"):
        return data.astype(np.float32)
    if dtype == "uint8":
        return data.astype(np.float32) / 255.0
    if dtype == "uint16":
        return data.astype(np.float32) / HR_UINT16_SCALE
    raise DegradeError(
        f"{path} holds {dtype} values; give float reflectance, uint16 reflectance x 10000 or "
        "uint8 NAIP-like DN"
    )


def _write_tif(
    path: Path,
    data: np.ndarray,
    crs: Any,
    transform: Any,
    bands: Sequence[str],
    *,
    uint16: bool = False,
) -> None:
    import rasterio

    if uint16:
        data = np.clip(np.rint(data * HR_UINT16_SCALE), 0, np.iinfo(np.uint16).max)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": "uint16" if uint16 else "float32",
        "crs": crs,
        "transform": transform,
        "compress": "zstd",
        "predictor": 2 if uint16 else 3,
        "tiled": data.shape[1] >= 256 and data.shape[2] >= 256,
        "nodata": None if uint16 else float("nan"),
    }
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    # Encoded in memory, written with one guarded write: GDAL reports a full disk as a
    # generic write error, harvest.diskio as one naming the file (and the run stops).
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data.astype(np.uint16 if uint16 else np.float32))
            for i, b in enumerate(bands, start=1):
                ds.set_band_description(i, b)
        write_file(path, mem.read())


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no second copy on disk), else a copy (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        write_file(dst, src.read_bytes())


def _image_seed(seed: int, key: str, method_index: int) -> int:
    digest = zlib.crc32(key.encode("utf-8"))
    return int(np.random.SeedSequence([seed, digest, method_index]).generate_state(1)[0])


@dataclass(frozen=True)
class DegradeSummary:
    """What :func:`run` did."""

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


def run(
    hr_dir: str | os.PathLike[str],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("statistical", "deterministic", "variational"),
    seed: int = 0,
    only: Collection[tuple[str, str]] | None = None,
    images: bool = True,
    progress: Progress | bool = NO_PROGRESS,
) -> DegradeSummary:
    """``harvest degrade``: HR_h, S2-like LR and histograms per HR image and method.

    Resumable: an image folder is written under a temporary name and renamed when complete; a
    run skips images whose folder exists. Randomness: per image and method a seed derived from
    ``seed`` and the image's output key, so results do not depend on which other images exist.

    Args:
        hr_dir: a folder of HR GeoTIFFs, or a folder written by ``harvest fetch``.
        model: "sen2naip" (the published models) or a folder from ``degradation fit``.
        out_dir: the dataset folder to write (``OUT/synthetic/...``).
        methods: Degrader methods, of :data:`DEGRADE_METHODS`.
        seed: the run seed of gammas, latents and noise.
        only: Degrade only these ``(roi_id, image_id)`` of the images found.
        images: Write ``HR_<method>.tif`` and ``LR_<method>.tif``; False: the paper's synthetic
            layout (see the module docstring).
        progress: how to show progress (a bar on stderr, or nothing).

    Returns:
        A :class:`DegradeSummary`.

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
    found = find_hr_images(hr_dir)
    if only is not None:
        found = [i for i in found if (i.roi_id, i.image_id) in only]
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
            found,
            loaded,
            degraders,
            out,
            seed=seed,
            write_images=images,
            progress=Progress.of(progress),
            started=started,
        )


def _degrade_locked(
    images: Sequence[HRImage],
    loaded: DegradationModel,
    degraders: Mapping[str, Degrader],
    out: Path,
    *,
    seed: int,
    write_images: bool = True,
    progress: Progress,
    started: float,
) -> DegradeSummary:
    """:func:`run` once the output folder's lock is held."""
    from degradation.harmonize.histogram import band_histograms

    methods = tuple(degraders)
    base = out / SYNTHETIC_DIR
    base.mkdir(parents=True, exist_ok=True)
    # What a killed run left in the ROI folders (never through a link out of the output folder).
    remove_temporaries(p for p in base.iterdir() if is_inside(p, out))
    todo = [i for i in images if not (base / i.roi_id / i.image_id / "metadata.json").is_file()]
    bar = progress.bar("degrade", len(todo))
    skipped: list[str] = []
    n_written = 0
    factor = loaded.psf.factor
    try:
        for img in todo:
            data, info = read_raster(img.path)
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
                if write_images:
                    _write_tif(tmp / "HR.tif", hr, info["crs"], transform, bands)
                elif str(info["dtype"]) == "uint16":
                    _link_or_copy(img.path, tmp / "HR.tif")  # already the layout's encoding
                else:
                    _write_tif(tmp / "HR.tif", hr, info["crs"], transform, bands, uint16=True)
                hists: dict[str, np.ndarray] = {}
                record: dict[str, Any] = {}
                key = f"{img.roi_id}/{img.image_id}"
                for k, m in enumerate(methods):
                    s = _image_seed(seed, key, k)
                    pair = degraders[m](hr, s)
                    hr_h = np.asarray(pair.hr, dtype=np.float32)
                    lr = np.asarray(pair.lr, dtype=np.float32)
                    if write_images:
                        _write_tif(tmp / f"HR_{m}.tif", hr_h, info["crs"], transform, bands)
                        _write_tif(tmp / f"LR_{m}.tif", lr, info["crs"], lr_transform, bands)
                    hists[m] = np.asarray(band_histograms(lr), dtype=np.float32)
                    hists[f"{m}_hr"] = np.asarray(band_histograms(hr_h), dtype=np.float32)
                    record[m] = {
                        "seed": s,
                        "gamma": None if pair.gamma is None else [float(v) for v in pair.gamma],
                        "lr_shape": list(lr.shape),
                    }
                    if write_images:
                        record[m].update(hr_file=f"HR_{m}.tif", lr_file=f"LR_{m}.tif")
                write_npz(tmp / "histograms.npz", hists)
                meta: dict[str, Any] = {}
                source_meta = img.path.parent / "metadata.json"
                if not write_images and source_meta.is_file():
                    meta.update(read_json(source_meta))  # Table 1's fields of the image
                meta.update(
                    {
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
                            "keys": (
                                "<method>: S2-like LR, <method>_hr: HR_h; [bands, 120] fractions"
                            ),
                        },
                        "crs": None if info["crs"] is None else info["crs"].to_string(),
                        "hr_transform": list(transform)[:6],
                        "lr_transform": list(lr_transform)[:6],
                        "hr_shape": list(hr.shape),
                        "run_seed": seed,
                        "harvest_version": __version__,
                    }
                )
                if not write_images:
                    meta["source"] = os.path.relpath(img.path.resolve(), out.resolve())
                    meta["d_sim_to_real"] = {
                        m: np.round(hists[f"{m}_hr"].astype(np.float64), 7).tolist()
                        for m in methods
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
