"""`harvest degradation fit` and `harvest degrade` as a user runs them, on demo-world chips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from harvest.diskio import TMP_MARK, is_temporary

HARVEST = str(Path(sys.executable).parent / "harvest")
METHODS = ("statistical", "deterministic", "variational")


def harvest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARVEST, *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def small_pairs(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two chips of one scene, as a cross-sensor folder without a manifest."""
    out = tmp_path_factory.mktemp("small") / "pairs"
    chips = sorted((demo_pairs / "cross-sensor").glob("ROI_*"))[:2]
    for chip in chips:
        shutil.copytree(chip, out / "cross-sensor" / chip.name)
    return out


@pytest.fixture(scope="module")
def fitted_model(small_pairs: Path) -> Path:
    model = small_pairs.parent / "model"
    r = harvest(
        "degradation", "fit", str(small_pairs), "-o", str(model), "--split", "all",
        "--train", "unet,vae", "--unet-epochs", "2", "--vae-epochs", "5", "--iterations", "1",
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "fitted 2 pairs (1 scenes)" in r.stdout
    return model


def test_fit_writes_a_loadable_model_folder_with_its_card(fitted_model: Path) -> None:
    from degradation.pretrained import load_model

    card = json.loads((fitted_model / "model.json").read_text())
    assert card["format"] == "harvest-degradation-model" and card["format_version"] == 1
    assert card["data"]["n_pairs"] == 2 and card["data"]["n_scenes"] == 1
    from degradation.fit import TABLE2_METHODS

    assert list(card["metrics"]["table2"]) == list(TABLE2_METHODS)
    assert set(card["metrics"]["table2"]["raw"]) >= {"pearson", "sam_deg", "pbias", "mae", "rmse"}
    assert card["metrics"]["table2_on"] == {"split": "train", "n_pairs": 2}
    assert len(card["fit"]["pairs"]) == 2 and "torch" in card["versions"]
    model = load_model(fitted_model)
    assert model.unet is not None and model.vae is not None and model.noise is not None
    assert all(2.0 < s < 4.5 for s in model.psf.sigma_px)
    assert not [p for p in fitted_model.parent.iterdir() if is_temporary(p)]


def _check_image(folder: Path, methods: tuple[str, ...]) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    assert set(meta["methods"]) == set(methods)
    with rasterio.open(folder / "HR.tif") as ds:
        hr_shape, hr_transform = (ds.count, ds.height, ds.width), ds.transform
    hists = np.load(folder / "histograms.npz")
    for m in methods:
        with rasterio.open(folder / f"LR_{m}.tif") as ds:
            assert (ds.count, ds.height, ds.width) == (4, hr_shape[1] // 4, hr_shape[2] // 4)
            assert ds.transform.a == pytest.approx(hr_transform.a * 4)
            assert (ds.transform.c, ds.transform.f) == (hr_transform.c, hr_transform.f)
            lr = ds.read()
        with rasterio.open(folder / f"HR_{m}.tif") as ds:
            assert (ds.count, ds.height, ds.width) == hr_shape
        assert np.isfinite(lr).all() and 0.0 < float(lr.mean()) < 0.5
        for key in (m, f"{m}_hr"):
            assert hists[key].shape == (4, 120)
            # Fractions of all pixels: the few outside [0, 1] (noise below 0) fall in no bin.
            sums = hists[key].sum(axis=1)
            assert np.all(sums <= 1.0 + 1e-5) and np.all(sums >= 0.95), sums


def test_degrade_with_the_fitted_model_writes_the_synthetic_layout_and_resumes(
    small_pairs: Path, fitted_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "synthetic-set"
    args = ("degrade", str(small_pairs), "--model", str(fitted_model), "-o", str(out))
    r = harvest(*args, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 images degraded")
    images = sorted((out / "synthetic").glob("ROI_*/*"))
    assert len(images) == 2
    for folder in images:
        naip_id = json.loads(
            (small_pairs / "cross-sensor" / folder.parent.name / "metadata.json").read_text()
        )["naip_id"]
        assert folder.name == naip_id
        _check_image(folder, METHODS)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    # What a killed run leaves in an ROI folder: a half-built image folder and a stray file.
    roi = images[0].parent
    (roi / f".{images[0].name}{TMP_MARK}123-0badcafe").mkdir()
    (roi / f".notes.txt{TMP_MARK}123-0badcafe").write_text("half")
    (roi / ".keep").write_text("not ours")
    again = harvest(*args, "--no-progress")
    assert again.returncode == 0 and "0 images degraded" in again.stdout
    assert "2 done before" in again.stdout
    assert sorted(p.name for p in roi.iterdir() if p.name.startswith(".")) == [".keep"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == before


def test_degrade_with_sen2naip_and_a_plain_folder_of_geotiffs(
    small_pairs: Path, tmp_path: Path
) -> None:
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    src = sorted((small_pairs / "cross-sensor").glob("ROI_*"))[0] / "HR.tif"
    shutil.copy(src, hr_dir / "tile_a.tif")
    out = tmp_path / "out"
    r = harvest(
        "degrade", str(hr_dir), "--model", "sen2naip", "-o", str(out),
        "--methods", "statistical,deterministic", "--progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1 image degraded (statistical, deterministic)")
    assert len(r.stdout.strip().splitlines()) == 1  # the bar went to stderr
    assert "degrade" in r.stderr and "1/1" in r.stderr
    _check_image(out / "synthetic" / "tile_a" / "image", ("statistical", "deterministic"))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "is not a folder"),
        ("empty", "no HR images"),
        ("model", "neither 'sen2naip' nor a folder"),
        ("method", "unknown method"),
    ],
)
def test_bad_degrade_inputs_are_one_line_errors(
    tmp_path: Path, small_pairs: Path, case: str, expected: str
) -> None:
    (tmp_path / "empty").mkdir()
    hr_dir = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}.get(case, small_pairs)
    model = str(tmp_path / "no-model") if case == "model" else "sen2naip"
    methods = "statistical,magic" if case == "method" else "statistical"
    r = harvest(
        "degrade", str(hr_dir), "--model", model, "-o", str(tmp_path / "o"), "--methods", methods
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr


def test_bad_fit_inputs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for folder, expected in (
        (tmp_path / "nope", "is not a folder"),
        (tmp_path / "empty", "no kept LR/HR chips"),
    ):
        r = harvest("degradation", "fit", str(folder), "-o", str(tmp_path / "m"))
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], r.stderr
    r = harvest(
        "degradation", "fit", str(tmp_path / "empty"), "-o", str(tmp_path / "m"), "--train", "gan"
    )
    assert r.returncode == 1 and "unknown network gan" in r.stderr
