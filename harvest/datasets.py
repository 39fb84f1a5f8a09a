"""Training datasets over written layouts: :class:`SEN2NAIP`, the paper's five dataloader modes.

``SEN2NAIP(root, split="train", mode="statistical", model="sen2naip", crop=None, seed=0)`` is a
``torch.utils.data.Dataset`` over a folder written by ``harvest build`` / ``fetch`` /
``degrade`` (or laid out as SEN2NAIP publishes it). Each item is a dict:

- ``hr``: float32 tensor [C, H, W], reflectance: the harmonized HR (the HR as read in ``raw``
  and ``real`` modes);
- ``lr``: float32 tensor [C, H / f, W / f]: made on the fly from the HR by the degradation
  model (``raw``: antialiased bilinear downsampling, no harmonization, no noise;
  ``statistical``, ``deterministic``, ``variational``: the method, the model's PSF and the
  simple Gaussian noise, as the paper's dataloaders; ``all``: one of the three at random per
  sample), or read from ``LR.tif`` (``real``, cross-sensor chips);
- ``roi_id``, ``image`` (the image's name within its ROI) and ``mode`` (the method used).

Randomness (method of ``all``, gamma, noise, crop position) comes from one generator per item,
seeded by ``(seed, epoch, index)``: the same item is the same sample whatever the number of
DataLoader workers or the order they ask in. Call :meth:`SEN2NAIP.set_epoch` before each
epoch (as with ``DistributedSampler``) for new draws. The dataset pickles (the model is loaded
lazily in each worker process).

``crop=N`` cuts a random aligned window: N x N LR pixels over (f N) x (f N) HR pixels, the HR
window starting on the LR grid, so the pair stays nested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from harvest.errors import HarvestError

MODES = ("raw", "statistical", "deterministic", "variational", "all", "real")
SPLITS = ("train", "test", "all")
NOISE = ("simple", "matrix")


class DatasetError(HarvestError, ValueError):
    """A dataset folder or option that cannot be used (one line: what and how to fix it)."""


@dataclass(frozen=True)
class Sample:
    """One item's files.

    Attributes:
        roi_id: Its ROI.
        image: Its name within the ROI (``HR`` for a cross-sensor chip, the image folder's name
            for a synthetic image).
        hr: The HR GeoTIFF.
        lr: The real LR GeoTIFF (cross-sensor chips), or None.
        split: ``train`` or ``test``.
    """

    roi_id: str
    image: str
    hr: Path
    lr: Path | None
    split: str


def _split_of(meta_path: Path, manifest: dict[str, str], roi_id: str) -> str:
    from harvest.writers.sen2naip import chip_split_of

    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if "test" in meta or "split" in meta:
            return chip_split_of(meta)
    return manifest.get(roi_id, "train")


def _manifest_splits(root: Path) -> dict[str, str]:
    path = root / "manifest.parquet"
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["roi_id", "split"]).to_pylist()
    return {r["roi_id"]: str(r["split"] or "train") for r in rows}


def find_samples(root: Path, *, real: bool) -> list[Sample]:
    """The samples of a folder, sorted by path.

    Cross-sensor chips for ``real`` (or when there is no synthetic folder), else the synthetic
    images.

    Raises:
        DatasetError: no such folder or no sample in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give a dataset folder")
    splits = _manifest_splits(root)
    synthetic = root / "synthetic"
    cross = root / "cross-sensor" if (root / "cross-sensor").is_dir() else root
    samples: list[Sample] = []
    if not real and synthetic.is_dir():
        for folder in sorted(p for p in synthetic.glob("*/*") if (p / "HR.tif").is_file()):
            roi = folder.parent.name
            split = _split_of(folder / "metadata.json", splits, roi)
            samples.append(Sample(roi, folder.name, folder / "HR.tif", None, split))
    else:
        for folder in sorted(p for p in cross.glob("*") if (p / "HR.tif").is_file()):
            lr = folder / "LR.tif"
            if real and not lr.is_file():
                continue
            split = _split_of(folder / "metadata.json", splits, folder.name)
            samples.append(Sample(folder.name, "HR", folder / "HR.tif", lr, split))
    if not samples:
        what = "cross-sensor chips (ROI/LR.tif + HR.tif)" if real else "HR images"
        raise DatasetError(
            f"no {what} under {root}: give a folder written by harvest build, fetch or degrade"
        )
    return samples


@dataclass(frozen=True)
class _Stored:
    """A GeoTIFF's pixels as stored, with how to decode them to reflectance.

    Attributes:
        data: [C, H, W] as in the file (float, or integer codes).
        scale: reflectance per code of integer data; None for float data.
        nodata: the code of missing pixels of integer data, or None.
    """

    data: np.ndarray
    scale: float | None
    nodata: float | None


def _read_stored(path: Path) -> _Stored:
    """A GeoTIFF's pixels as stored: one ``read()`` of the whole array.

    Integers are scaled by the file's scale, else by 1 / 10000 (16-bit, harvest's synthetic HR)
    or 1 / 255 (8-bit, NAIP-like DN). Reading the whole array at once is as fast as reading
    into a preallocated ``out=`` array or band by band (15.3, 15.3 and 15.5 ms for a
    4 x 1100 x 1100 uint16 ZSTD file).
    """
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        scale = float(src.scales[0]) if src.scales else 1.0
        nodata = src.nodata
    if not np.issubdtype(data.dtype, np.integer):
        return _Stored(data, None, None)
    if scale == 1.0:
        scale = 1.0 / 255.0 if data.dtype == np.uint8 else 1.0e-4
    return _Stored(data, scale, nodata)


def _decode(stored: _Stored) -> np.ndarray:
    """Float32 reflectance of stored pixels; nodata and NaN become 0."""
    import torch

    from degradation.pipeline import counts_to_reflectance

    if stored.scale is not None:
        return counts_to_reflectance(stored.data, stored.scale, stored.nodata)
    data = stored.data.astype(np.float32, copy=False)
    # In place, and torch's one fused pass: numpy's nan_to_num took 6.6 ms of a 4 x 1100 x 1100
    # image (a mask per value class), torch's 0.8 ms; the same values (+-inf to the float32
    # extremes).
    torch.nan_to_num_(torch.from_numpy(data), nan=0.0)
    return data


def _read(path: Path) -> np.ndarray:
    """A GeoTIFF as float32 reflectance; nodata and NaN become 0.

    Integers are scaled by the file's scale, else by 1 / 10000 (16-bit) or 1 / 255 (8-bit).
    """
    return _decode(_read_stored(path))


class SEN2NAIP(Dataset[dict[str, Any]]):
    """A ``torch.utils.data.Dataset`` of (LR, HR) pairs over a SEN2NAIP-style folder.

    Args:
        root: A dataset folder (``cross-sensor/`` and/or ``synthetic/`` inside), or a
            cross-sensor folder.
        split: ``train``, ``test`` or ``all``.
        mode: ``raw``, ``statistical``, ``deterministic``, ``variational``, ``all`` or ``real``.
        model: ``sen2naip`` (the published models) or a folder from ``harvest degradation
            fit``.
        crop: LR side of a random nested crop (None: whole images).
        seed: The run seed (with the epoch and the index, it seeds every item).
        noise: ``simple`` (Gaussian, the paper's dataloaders) or ``matrix`` (the model's
            reflectance-to-noise matrix).

    Raises:
        DatasetError: an unknown option, or a folder without samples.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        mode: str = "statistical",
        model: str | Path = "sen2naip",
        crop: int | None = None,
        seed: int = 0,
        noise: str = "simple",
    ) -> None:
        if mode not in MODES:
            raise DatasetError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if split not in SPLITS:
            raise DatasetError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if noise not in NOISE:
            raise DatasetError(f"noise {noise!r} is not one of {', '.join(NOISE)}")
        if crop is not None and crop < 1:
            raise DatasetError(f"crop {crop}: give the LR side of the crop in pixels (>= 1)")
        self.root = Path(root)
        self.split = split
        self.mode = mode
        self.model = str(model)
        self.crop = crop
        self.seed = int(seed)
        self.noise = noise
        self.epoch = 0
        found = find_samples(self.root, real=mode == "real")
        self.samples = tuple(s for s in found if split == "all" or s.split == split)
        if not self.samples:
            raise DatasetError(
                f"{self.root} has no {split} sample (of {len(found)}); ask for split='all' "
                "or another split"
            )
        self._degrader: Any = None
        self._factor: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def set_epoch(self, epoch: int) -> None:
        """Draw new randomness from now on (the items of an epoch are fixed by the seed)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_degrader"] = None  # each worker process loads the model itself
        return state

    def _get_degrader(self) -> Any:
        if self._degrader is None:
            from degradation.pipeline import Degrader
            from degradation.pretrained import load_model

            model = load_model(self.model)
            overrides: dict[str, Any] = {}
            if self.noise == "simple":
                overrides["noise_matrix"] = None
            mode = "raw" if self.mode == "real" else self.mode
            self._degrader = Degrader.from_model(model, mode=mode, **overrides)
            self._factor = int(model.psf.factor)
        return self._degrader

    @property
    def factor(self) -> int:
        """HR pixels per LR pixel (the model's)."""
        self._get_degrader()
        assert self._factor is not None
        return self._factor

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        sample = self.samples[index]
        rng = self.item_rng(index)
        degrader = self._get_degrader()
        f = self.factor
        stored = _read_stored(sample.hr)
        if self.mode == "real":
            assert sample.lr is not None
            hr = _decode(stored)
            lr = _read(sample.lr)
            if self.crop is not None:
                y, x = self._window(rng, lr.shape[1], lr.shape[2])
                c = self.crop
                lr = lr[:, y : y + c, x : x + c]
                hr = hr[:, y * f : (y + c) * f, x * f : (x + c) * f]
            out_hr, out_lr, mode = hr, lr, "real"
        else:
            # Integer images stay coded until the Degrader: it decodes them (for the statistical
            # mode together with the gamma, by table lookup), after the crop.
            hr = stored.data if stored.scale is not None else _decode(stored)
            if self.crop is not None:
                y, x = self._window(rng, hr.shape[1] // f, hr.shape[2] // f)
                c = self.crop
                hr = hr[:, y * f : (y + c) * f, x * f : (x + c) * f]
            else:
                # Whole LR pixels only: an HR side that is not a multiple of f is trimmed.
                hr = hr[:, : hr.shape[1] // f * f, : hr.shape[2] // f * f]
            pair = degrader.degrade_image(
                np.ascontiguousarray(hr), rng, scale=stored.scale, nodata=stored.nodata
            )
            out_hr, out_lr = np.asarray(pair.hr), np.asarray(pair.lr)
            mode = pair.modes[0] if pair.modes else self.mode
        return {
            "lr": torch.from_numpy(np.ascontiguousarray(out_lr, dtype=np.float32)),
            "hr": torch.from_numpy(np.ascontiguousarray(out_hr, dtype=np.float32)),
            "roi_id": sample.roi_id,
            "image": sample.image,
            "mode": mode,
        }

    def _window(self, rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
        c = self.crop
        assert c is not None
        if c > h or c > w:
            raise DatasetError(f"crop {c} is larger than an LR image ({h} x {w}): ask for less")
        return int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
