"""Load degradation models: the published SEN2NAIP weights, or a folder fitted by harvest.

This is the one module of the package that reads files (weights from a local path). It never
imports the ``opensr-degradation`` code: the ``sen2naip`` model is found by locating the files
of the installed distribution (``importlib.metadata``), or in a folder given explicitly.

``sen2naip`` (opensr-degradation 1.0.1, ``naipd/models/``):

- ``model_unet.pt``: TorchScript U-Net (EfficientNet-B0 encoder), 4 bands in and out;
- ``model_vae.pt``: state dict of the histogram VAE (4 x 120 bins, hidden 512, latent 20);
- ``model_noise.pt``: a float64 tensor [101, 101], the reflectance-to-noise matrix (rows:
  ``numpy.digitize`` of the reflectance on ``arange(0, 0.5, 0.005)``; columns: noise values
  ``arange(-0.0101, 0.0101, 0.0002)``).

Together with the paper's PSF (sigma 3.0, 2.9, 2.9, 3.4 HR pixels, kernel 13 as published) and
the published gamma model.

Fitted folder format (written by ``harvest degradation fit``), format version 1::

    model.json   the card: {"format": "harvest-degradation-model", "format_version": 1,
                 "name", "bands", "factor", "psf": {"sigma_px": [..], "kernel_size": int|null},
                 "gamma": {"mean": [..], "cov": [[..]], "n_pairs": int} | null,
                 "noise": {"file": "noise.npz"} | null,
                 "unet": {"file": "unet.pt", "format": "state_dict"|"torchscript",
                          "arch": {"in_channels", "out_channels", "width", "depth"}} | null,
                 "vae": {"file": "vae.pt", "arch": {"n_bands", "n_bins", "hidden", "latent"}}
                        | null,
                 "data": {...}, "metrics": {...}, "versions": {...}}   (free-form records)
    noise.npz    arrays reflectance_edges, noise_values, probabilities (and n_samples)
    unet.pt      SmallUNet state dict (or a TorchScript file)
    vae.pt       HistogramVAE state dict

State dicts are read with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from degradation.errors import DegradationError
from degradation.harmonize.gamma import SEN2NAIP_GAMMA, GammaModel
from degradation.harmonize.unet import SmallUNet
from degradation.harmonize.vae import HistogramVAE
from degradation.noise import SEN2NAIP_NOISE_VALUES, SEN2NAIP_REFLECTANCE_EDGES, NoiseMatrix
from degradation.psf import SEN2NAIP_KERNEL_SIZE, SEN2NAIP_SIGMA_PX, GaussianPSF

SEN2NAIP = "sen2naip"
SEN2NAIP_DISTRIBUTION = "opensr-degradation"
SEN2NAIP_FILES = {
    "unet": "model_unet.pt",
    "vae": "model_vae.pt",
    "noise": "model_noise.pt",
}
CARD_NAME = "model.json"
CARD_FORMAT = "harvest-degradation-model"
CARD_VERSION = 1
COMPONENTS = ("unet", "vae", "noise")


@dataclass(frozen=True, eq=False)
class DegradationModel:
    """A loaded degradation model: every part the :class:`~degradation.pipeline.Degrader` uses.

    Attributes:
        name: "sen2naip" or the card's name.
        bands: band names, in order.
        psf: the blur + downsampling operator (its factor is the HR/LR ratio).
        gamma: the statistical model, or None.
        noise: the reflectance-to-noise matrix, or None.
        unet: the deterministic method's network (eval mode), or None.
        vae: the variational method's VAE (eval mode), or None.
        source: where the weights were read from.
        card: the rest of the card (data, metrics, versions), read-only.
    """

    name: str
    bands: tuple[str, ...]
    psf: GaussianPSF
    gamma: GammaModel | None
    noise: NoiseMatrix | None
    unet: nn.Module | None
    vae: HistogramVAE | None
    source: str
    card: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _missing(what: str) -> DegradationError:
    return DegradationError(
        f"{what}: install the published models with `pip install harvest-eo[sen2naip]` "
        "(the opensr-degradation package) or pass the folder holding model_unet.pt, "
        "model_vae.pt and model_noise.pt"
    )


def sen2naip_files(folder: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Locate the published SEN2NAIP weight files.

    Args:
        folder: a folder holding them; None looks inside the installed opensr-degradation
            distribution (its file list; the package is not imported).

    Returns:
        {"unet": path, "vae": path, "noise": path}.

    Raises:
        DegradationError: if the distribution or a file is missing.
    """
    if folder is not None:
        base = Path(folder)
        found = {k: base / name for k, name in SEN2NAIP_FILES.items()}
    else:
        try:
            dist = importlib.metadata.distribution(SEN2NAIP_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise _missing(f"{SEN2NAIP_DISTRIBUTION} is not installed") from None
        found = {}
        for entry in dist.files or []:
            parts = entry.parts
            for key, name in SEN2NAIP_FILES.items():
                if parts[-3:] == ("naipd", "models", name):
                    found[key] = Path(str(dist.locate_file(entry)))
    for key, name in SEN2NAIP_FILES.items():
        if key not in found or not found[key].is_file():
            raise _missing(f"the SEN2NAIP weight file {name} was not found")
    return found


def load_sen2naip(
    folder: str | os.PathLike[str] | None = None,
    *,
    components: tuple[str, ...] = COMPONENTS,
    device: str | torch.device = "cpu",
) -> DegradationModel:
    """Load the published SEN2NAIP models (U-Net, VAE, noise matrix) with the paper's PSF/gamma.

    Args:
        folder: a folder with the three files; None uses the installed opensr-degradation.
        components: which of "unet", "vae", "noise" to load (the others are None).
        device: where the networks go.

    Returns:
        The :class:`DegradationModel` named "sen2naip".

    Raises:
        DegradationError: if files are missing or do not hold what is expected.
    """
    bad = set(components) - set(COMPONENTS)
    if bad:
        raise DegradationError(f"unknown components {sorted(bad)}; choose from {COMPONENTS}")
    files = sen2naip_files(folder)
    unet = _load_torchscript(files["unet"], device) if "unet" in components else None
    vae = None
    if "vae" in components:
        vae = HistogramVAE.from_state_dict(_load_tensors(files["vae"])).to(device)
    noise = None
    if "noise" in components:
        matrix = torch.load(files["noise"], map_location="cpu", weights_only=True)
        if not isinstance(matrix, torch.Tensor):
            raise DegradationError(f"{files['noise']} does not hold a tensor")
        noise = NoiseMatrix(
            SEN2NAIP_REFLECTANCE_EDGES, SEN2NAIP_NOISE_VALUES, matrix.double().numpy()
        )
    return DegradationModel(
        name=SEN2NAIP,
        bands=("red", "green", "blue", "nir"),
        psf=GaussianPSF(SEN2NAIP_SIGMA_PX, kernel_size=SEN2NAIP_KERNEL_SIZE),
        gamma=SEN2NAIP_GAMMA,
        noise=noise,
        unet=unet,
        vae=vae,
        source=str(files["unet"].parent),
    )


def _load_torchscript(path: Path, device: str | torch.device) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 deprecates jit.load
            net = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise DegradationError(
            f"{path} is not a TorchScript file ({str(exc).splitlines()[0]})"
        ) from None
    net.eval()
    return net


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
        raise DegradationError(
            f"{path} is not a readable state dict ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(state, Mapping):
        raise DegradationError(f"{path} does not hold a state dict")
    return dict(state)


def _card_part(card: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    part = card.get(key)
    if part is None:
        return None
    if not isinstance(part, Mapping):
        raise DegradationError(f"{CARD_NAME}: {key!r} must be an object or null")
    return part


def _file(folder: Path, part: Mapping[str, Any], key: str) -> Path:
    name = part.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise DegradationError(f"{CARD_NAME}: {key}.file must be a file name inside the folder")
    path = folder / name
    if not path.is_file():
        raise DegradationError(f"{path} is listed in {CARD_NAME} but missing; refit the model")
    return path


def load_model_folder(
    folder: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> DegradationModel:
    """Load a fitted model folder (``model.json`` card + weights; format in the module doc).

    Raises:
        DegradationError: on a missing or malformed card or weights file.
    """
    base = Path(folder)
    card_path = base / CARD_NAME
    if not card_path.is_file():
        raise DegradationError(
            f"{base} has no {CARD_NAME}; give a folder written by `harvest degradation fit` "
            "or the name sen2naip"
        )
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DegradationError(f"{card_path} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DegradationError(f"{card_path} is not a {CARD_FORMAT} card")
    if card.get("format_version") != CARD_VERSION:
        raise DegradationError(
            f"{card_path} has format_version {card.get('format_version')!r}; this version "
            f"reads {CARD_VERSION}: refit the model or upgrade"
        )
    try:
        bands = tuple(str(b) for b in card["bands"])
        factor = int(card.get("factor", 4))
        psf_part = card["psf"]
        psf = GaussianPSF(
            tuple(float(s) for s in psf_part["sigma_px"]),
            factor=factor,
            kernel_size=psf_part.get("kernel_size"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DegradationError(f"{card_path}: missing or bad bands/psf entry ({exc})") from None
    gamma = None
    gamma_part = _card_part(card, "gamma")
    if gamma_part is not None:
        gamma = GammaModel(
            tuple(float(v) for v in gamma_part["mean"]),
            tuple(tuple(float(v) for v in row) for row in gamma_part["cov"]),
            int(gamma_part.get("n_pairs", 0)),
        )
    noise = None
    noise_part = _card_part(card, "noise")
    if noise_part is not None:
        with np.load(_file(base, noise_part, "noise"), allow_pickle=False) as z:
            noise = NoiseMatrix(
                z["reflectance_edges"],
                z["noise_values"],
                z["probabilities"],
                z["n_samples"] if "n_samples" in z.files else np.zeros(0, dtype=np.int64),
            )
    unet: nn.Module | None = None
    unet_part = _card_part(card, "unet")
    if unet_part is not None:
        path = _file(base, unet_part, "unet")
        if unet_part.get("format", "state_dict") == "torchscript":
            unet = _load_torchscript(path, device)
        else:
            small = SmallUNet(**{k: int(v) for k, v in dict(unet_part.get("arch", {})).items()})
            try:
                small.load_state_dict(_load_tensors(path))
            except RuntimeError as exc:
                raise DegradationError(
                    f"{path} does not match the U-Net in {CARD_NAME}: {str(exc).splitlines()[0]}"
                ) from None
            unet = small.to(device).eval()
    vae = None
    vae_part = _card_part(card, "vae")
    if vae_part is not None:
        vae = HistogramVAE.from_state_dict(_load_tensors(_file(base, vae_part, "vae"))).to(device)
    rest = {k: card[k] for k in ("data", "metrics", "versions") if k in card}
    return DegradationModel(
        name=str(card.get("name", base.name)),
        bands=bands,
        psf=psf,
        gamma=gamma,
        noise=noise,
        unet=unet,
        vae=vae,
        source=str(base),
        card=MappingProxyType(rest),
    )


def load_model(
    model: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> DegradationModel:
    """Load ``"sen2naip"`` (installed package), a fitted folder, or a folder of published files.

    Raises:
        DegradationError: if nothing loadable is found.
    """
    if isinstance(model, str) and model == SEN2NAIP:
        return load_sen2naip(device=device)
    base = Path(model)
    if (base / CARD_NAME).is_file():
        return load_model_folder(base, device=device)
    if (base / SEN2NAIP_FILES["unet"]).is_file():
        return load_sen2naip(base, device=device)
    raise DegradationError(
        f"{model} is neither 'sen2naip' nor a folder with {CARD_NAME} or the published "
        "SEN2NAIP weight files"
    )
