"""Published SEN2NAIP models: located without importing the package, equal to its code paths."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy import stats

from degradation.errors import DegradationError
from degradation.harmonize.gamma import SEN2NAIP_GAMMA, apply_gamma
from degradation.harmonize.unet import SmallUNet, UNetHarmonizer
from degradation.harmonize.vae import HistogramVAE, VAEHarmonizer, predict_histogram
from degradation.noise import SEN2NAIP_NOISE_VALUES, NoiseMatrix
from degradation.pretrained import (
    CARD_FORMAT,
    DegradationModel,
    load_model,
    load_model_folder,
    load_sen2naip,
    sen2naip_files,
)


@pytest.fixture(scope="module")
def sen2naip() -> DegradationModel:
    return load_sen2naip()


def _image(size: int = 150, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 4, size // 10, size // 10, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0]
    return (0.4 * up + 0.1 * torch.rand(4, size, size, generator=g)).float()


def test_files_are_located_in_the_distribution_without_importing_it() -> None:
    files = sen2naip_files()
    assert set(files) == {"unet", "vae", "noise"}
    assert all(p.is_file() and p.parent.name == "models" for p in files.values())
    dist = importlib.metadata.distribution("opensr-degradation")
    assert str(dist.locate_file("")) in str(files["unet"])


def test_published_architecture_and_noise_matrix(sen2naip: DegradationModel) -> None:
    assert isinstance(sen2naip.vae, HistogramVAE)
    assert (sen2naip.vae.n_bands, sen2naip.vae.n_bins) == (4, 120)
    assert (sen2naip.vae.hidden, sen2naip.vae.latent) == (512, 20)
    assert isinstance(sen2naip.unet, torch.jit.ScriptModule)
    assert sen2naip.noise is not None and sen2naip.noise.probabilities.shape == (101, 101)
    np.testing.assert_allclose(sen2naip.noise.probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert sen2naip.psf.kernel_size == 13 and sen2naip.psf.sigma_px == (3.0, 2.9, 2.9, 3.4)
    assert sen2naip.gamma == SEN2NAIP_GAMMA


def test_missing_package_or_files_give_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(DegradationError, match=r"harvest-eo\[sen2naip\]") as info:
        load_model("sen2naip")
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    with pytest.raises(DegradationError, match="model_unet.pt"):
        load_sen2naip(tmp_path)
    with pytest.raises(DegradationError, match="neither"):
        load_model(tmp_path)


def test_explicit_folder_of_published_files(tmp_path: Path) -> None:
    for p in sen2naip_files().values():
        shutil.copy(p, tmp_path / p.name)
    model = load_model(tmp_path)
    assert model.name == "sen2naip" and model.source == str(tmp_path)
    part = load_sen2naip(tmp_path, components=("vae",))
    assert part.unet is None and part.noise is None and part.vae is not None


def test_unet_path_equals_the_published_deterministic_path(
    sen2naip: DegradationModel, published: Callable[[str], ModuleType]
) -> None:
    harm = published("naipd.harmonization")
    assert sen2naip.unet is not None
    x = _image(150)
    ref = harm.harmonization_03(x, unet_reflectance_model=sen2naip.unet)
    # The published code runs the network on the HR itself with zero padding at the bottom
    # and right: factor 1 and pad_mode "constant" are that configuration.
    ours = UNetHarmonizer(sen2naip.unet, factor=1, pad_mode="constant")(x)
    assert isinstance(ours, torch.Tensor) and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_vae_prediction_equals_the_published_model(
    sen2naip: DegradationModel, published: Callable[[str], ModuleType]
) -> None:
    harm = published("naipd.harmonization")
    theirs = harm.SimpleVAE()
    theirs.load_state_dict(torch.load(sen2naip_files()["vae"], weights_only=True))
    theirs.eval()
    assert sen2naip.vae is not None
    x = _image(120, seed=3)
    hist = torch.stack([torch.histc(x[i], bins=120, min=0, max=1) for i in range(4)])
    hist = (hist / hist.sum(dim=1, keepdim=True))[None]
    with torch.no_grad():
        torch.manual_seed(9)
        ref, _, _ = theirs(hist)
        mine, _, _ = sen2naip.vae(hist, torch.Generator().manual_seed(9))
        mean_ref = theirs.decode(theirs.encode(hist)[0])
    torch.testing.assert_close(mine, ref, atol=1e-6, rtol=0)
    expected = torch.where(mean_ref[0] < 0.005, 0.0, mean_ref[0])
    expected = expected / expected.sum(dim=1, keepdim=True)
    pred = predict_histogram(sen2naip.vae, x)
    assert isinstance(pred, torch.Tensor)
    torch.testing.assert_close(pred, expected, atol=1e-6, rtol=0)


def test_vae_path_matches_the_published_variational_path(
    sen2naip: DegradationModel, published: Callable[[str], ModuleType]
) -> None:
    harm = published("naipd.harmonization")
    assert sen2naip.vae is not None
    theirs = harm.SimpleVAE()
    theirs.load_state_dict(torch.load(sen2naip_files()["vae"], weights_only=True))
    x = _image(300, seed=4)
    torch.manual_seed(21)
    np.random.seed(21)
    ref = harm.harmonization_04(x, vae_reflectance_model=theirs.eval())
    ours = VAEHarmonizer(sen2naip.vae, target="published")(x, torch.Generator().manual_seed(21))
    assert isinstance(ours, torch.Tensor)
    # Same predicted histogram (same latent draw); the published code then matches to ONE
    # random image drawn from it (90,000 pixels), we match to the distribution itself, so the
    # two differ by the sampling error of that draw: well below one bin (1/120 = 0.0083).
    diff = (ours - ref.float()).abs()
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 1 / 120


def test_statistical_gamma_equals_the_published_code_per_band(
    published: Callable[[str], ModuleType],
) -> None:
    harm = published("naipd.harmonization")
    x = _image(64, seed=5)
    np.random.seed(2)
    ref = harm.harmonization_02(x, percentiles=50)
    # The published code draws 100,000 gamma vectors and takes ONE percentile of all of them
    # (the same value for every band); reproduce that value from the same draws, then apply it
    # per band with our gamma on the same 8-bit quantised input.
    np.random.seed(2)
    draws = stats.multivariate_normal(
        mean=np.asarray(SEN2NAIP_GAMMA.mean), cov=np.asarray(SEN2NAIP_GAMMA.cov)
    ).rvs(size=100000)
    value = float(np.percentile(draws, 50))
    quantised = (x * 255).to(torch.uint8).float() / 255
    ours = apply_gamma(quantised, np.full(4, value))
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=0)
    # Ours applies the percentile per band: the bands differ, the collapsed value does not.
    assert np.ptp(SEN2NAIP_GAMMA.percentile(50)) > 0.1


def _write_folder(folder: Path, seed: int = 0) -> tuple[SmallUNet, HistogramVAE, NoiseMatrix]:
    torch.manual_seed(seed)  # only to fill random test weights
    unet = SmallUNet(width=8, depth=2).eval()
    vae = HistogramVAE(hidden=32, latent=4).eval()
    noise = NoiseMatrix(
        np.array([0.0, 0.2]), SEN2NAIP_NOISE_VALUES[:5], np.full((3, 5), 0.2), np.arange(3)
    )
    torch.save(unet.state_dict(), folder / "unet.pt")
    torch.save(vae.state_dict(), folder / "vae.pt")
    np.savez(
        folder / "noise.npz",
        reflectance_edges=noise.reflectance_edges,
        noise_values=noise.noise_values,
        probabilities=noise.probabilities,
        n_samples=noise.n_samples,
    )
    card = {
        "format": CARD_FORMAT,
        "format_version": 1,
        "name": "demo",
        "bands": ["red", "green", "blue", "nir"],
        "factor": 4,
        "psf": {"sigma_px": [1.0, 1.1, 1.2, 1.3], "kernel_size": None},
        "gamma": {"mean": [0.4] * 4, "cov": np.eye(4).tolist(), "n_pairs": 7},
        "noise": {"file": "noise.npz"},
        "unet": {"file": "unet.pt", "format": "state_dict", "arch": unet.arch()},
        "vae": {"file": "vae.pt", "arch": {"hidden": 32, "latent": 4}},
        "data": {"pairs": 7},
        "metrics": {"mae": 0.01},
        "versions": {"harvest": "0"},
    }
    (folder / "model.json").write_text(json.dumps(card))
    return unet, vae, noise


def test_fitted_folder_round_trip(tmp_path: Path) -> None:
    unet, vae, noise = _write_folder(tmp_path)
    model = load_model(tmp_path)
    assert model.name == "demo" and model.psf.sigma_px == (1.0, 1.1, 1.2, 1.3)
    assert model.gamma is not None and model.gamma.n_pairs == 7
    assert model.card["metrics"] == {"mae": 0.01}
    x = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    assert model.unet is not None and model.vae is not None and model.noise is not None
    with torch.no_grad():
        assert torch.equal(model.unet(x), unet(x))
        h = torch.rand(2, 4, 120)
        assert torch.equal(model.vae(h)[0], vae(h)[0])
    np.testing.assert_array_equal(model.noise.probabilities, noise.probabilities)
    np.testing.assert_array_equal(model.noise.n_samples, [0, 1, 2])


def test_bad_fitted_folders(tmp_path: Path) -> None:
    with pytest.raises(DegradationError, match="model.json"):
        load_model_folder(tmp_path)
    _write_folder(tmp_path)
    card = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(DegradationError, match="format_version"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(card))
    (tmp_path / "vae.pt").unlink()
    with pytest.raises(DegradationError, match="vae.pt"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DegradationError, match="JSON"):
        load_model(tmp_path)
    bad_unet = {**card, "vae": None, "unet": {**card["unet"], "arch": {"width": 4}}}
    (tmp_path / "model.json").write_text(json.dumps(bad_unet))
    with pytest.raises(DegradationError, match="does not match"):
        load_model(tmp_path)
