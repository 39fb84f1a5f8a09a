"""``harvest degradation fit PAIRS_DIR -o MODEL``: fit a degradation model on fetched pairs.

This stage reads and writes files; the numerical work is :mod:`degradation.fit`:

1. :func:`read_pairs` reads the kept LR/HR chips of a cross-sensor folder written by
   ``harvest fetch`` into :class:`~degradation.fit.pairs.PairChip` values, with the
   misregistration the fetch stage estimated (``shift_east_m`` / ``shift_north_m`` in each
   chip's metadata.json; ``shift_corrected`` when it already moved the LR).
2. :func:`degradation.fit.fit_pairs` fits the registered PSF (sigma per band and scene, the
   scene's shift refined), the per-chip gammas and the noise; ``--train unet,vae`` trains the
   networks (:func:`degradation.fit.train_networks`). The model's gamma model is the normal
   fit of the per-chip gammas.
3. :func:`write_model_folder` writes one folder in the fitted-folder format v1 of
   :mod:`degradation.pretrained` (``model.json`` card, ``noise.npz``, ``unet.pt``, ``vae.pt``),
   under a temporary name and renamed into place. Its card records the data (pairs, scenes,
   source, date), every fitted value and, under ``metrics.table2``, SEN2NAIP's Table 2
   (:func:`degradation.fit.table2` with :data:`TABLE2_METRICS`) for each method on the folder's
   test-split chips (the training chips when there are none; ``metrics.table2_on`` says which).

One run per model folder: the lock file sits beside it (:func:`harvest.lock.sibling_lock_path`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from degradation.fit import (
    SHIFT_MODES,
    TRAINABLE,
    FitResult,
    Metric,
    PairChip,
    fit_pairs,
    table2,
    train_networks,
)
from degradation.harmonize.gamma import GammaModel
from degradation.harmonize.unet import SmallUNet
from degradation.harmonize.vae import HistogramVAE
from degradation.pretrained import CARD_FORMAT, CARD_NAME, CARD_VERSION, load_model_folder
from harvest import __version__
from harvest.diskio import atomic_write_bytes, write_file
from harvest.errors import DegradeError
from harvest.lock import folder_lock, sibling_lock_path
from harvest.metrics import (
    mae,
    pbias,
    pbias_ratio,
    pearson,
    pearson_joint,
    rmse,
    sam,
    sam_image,
)
from harvest.progress import NO_PROGRESS, Progress
from harvest.stages._degradation import parse_list, read_json, read_raster, write_npz
from harvest.store import atomic_folder
from harvest.writers.sen2naip import chip_split_of

logger = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")

#: The columns of Table 2 in the card, scored with :mod:`harvest.metrics`. The paper's five, as
#: its framework (opensr-test) computes them per image: Pearson over all bands at once
#: (:func:`harvest.metrics.pearson_joint`), the spectral angle between the two images each
#: flattened to one vector (degrees), PBIAS as the mean clamped ratio ``|pred - ref| / ref``,
#: MAE, RMSE; then, under other names, the per-band Pearson, the signed percent bias and the
#: mean of per-pixel spectral angles.
TABLE2_METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        "pearson": pearson_joint,
        "sam_deg": sam_image,
        "pbias": pbias_ratio,
        "mae": mae,
        "rmse": rmse,
        "pearson_per_band": pearson,
        "pbias_signed_pct": pbias,
        "sam_pixel_mean_deg": sam,
    }
)


# --------------------------------------------------------------------------------------------
# Reading pairs
# --------------------------------------------------------------------------------------------


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
        meta = read_json(meta_path) if meta_path.is_file() else {}
        chip_split = chip_split_of(meta)
        if split != "all" and chip_split != split:
            continue
        lr, _ = read_raster(lr_path)
        hr, info = read_raster(hr_path)
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


# --------------------------------------------------------------------------------------------
# The model folder
# --------------------------------------------------------------------------------------------


def _write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` through one guarded write (torch reports a full disk as a RuntimeError)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_file(path, buf.getvalue())


def _versions() -> dict[str, str]:
    import importlib.metadata
    import platform

    import torch

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
    unet: SmallUNet | None,
    vae: HistogramVAE | None,
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write the fitted-folder format v1 (:mod:`degradation.pretrained`) atomically.

    The folder is built under a temporary name beside ``out_dir`` and renamed into place; an
    existing folder at ``out_dir`` is replaced only then.

    Raises:
        DiskWriteError: the disk is full or failing.
    """
    final = Path(out_dir)
    with atomic_folder(final) as tmp:
        gamma = GammaModel.from_samples(fit.gammas) if len(fit.gammas) >= 2 else None
        nm = fit.noise_matrix
        write_npz(
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


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitSummary:
    """What :func:`run` did."""

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


def run(
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
    progress: Progress | bool = NO_PROGRESS,
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
        progress: how to show progress (a bar on stderr, or nothing).

    Returns:
        A :class:`FitSummary`.

    Raises:
        DegradeError: no usable pairs, an unknown network, split or shift mode.
        FolderLockedError: another run is writing ``out_dir`` (checked before any work).
        DiskWriteError: the disk is full or failing.
    """
    started = time.perf_counter()
    # Arguments first: a typo costs no lock and no reading.
    networks = parse_list(list(train), TRAINABLE, "network")
    if split not in SPLITS:
        raise DegradeError(f"split must be one of {SPLITS}, got {split!r}")
    if shift not in SHIFT_MODES:
        raise DegradeError(f"shift mode must be one of {SHIFT_MODES}, got {shift!r}")
    if iterations < 1:
        raise DegradeError(f"iterations must be >= 1, got {iterations}")
    # One run per model folder (harvest.lock), taken before the minutes of fitting. The lock
    # file sits beside the folder: the folder itself is replaced in one rename.
    with folder_lock(out_dir, sibling_lock_path(out_dir)):
        return _run_locked(
            pairs_dir,
            out_dir,
            train=networks,
            split=split,
            seed=seed,
            shift=shift,
            iterations=iterations,
            unet_epochs=unet_epochs,
            vae_epochs=vae_epochs,
            name=name,
            progress=Progress.of(progress),
            started=started,
        )


def _run_locked(
    pairs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    train: tuple[str, ...],
    split: str,
    seed: int,
    shift: str,
    iterations: int,
    unet_epochs: int,
    vae_epochs: int,
    name: str | None,
    progress: Progress,
    started: float,
) -> FitSummary:
    """:func:`run` once the model folder's lock is held."""
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
    with progress.bar("fit", n_scenes * iterations) as bar:
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
    t2 = table2(model, eval_chips, TABLE2_METRICS, seed=seed)
    card_path = folder / CARD_NAME
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
