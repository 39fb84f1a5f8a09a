"""`harvest build configs/builds/demo-sen2naip-synthetic.yaml`: SEN2NAIP's synthetic set.

Early and late NAIP per ROI, the blank filter (checked against the demo world's truth), pruning
over the images, and the paper's layout ``synthetic/ROI_x/{early,late}/`` with Table 1's fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from test_cli_build import REPO, build, validate_stac

from harvest.config import load_build_config
from harvest.demo.truth import NaipSceneTruth, load_truth

CONFIG = REPO / "configs" / "builds" / "demo-sen2naip-synthetic.yaml"
TABLE1 = (
    "roi_id", "test", "naip_id", "naip_date", "proj:epsg", "proj:geometry", "proj:centroid",
    "proj:transform", "d_sim_to_real",
)  # fmt: skip
METHODS = ("statistical", "deterministic", "variational")


@pytest.fixture(scope="module")
def synthetic_build(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    res = build(CONFIG, out, demo_world)
    assert res.returncode == 0, res.stderr
    assert f"dataset {out} version 1.0.0" in res.stdout
    return out


def chip_box(transform: list[float], px: int) -> shapely.Polygon:
    left, top, step = transform[2], transform[5], transform[0]
    return shapely.box(left, top - px * step, left + px * step, top)


def test_the_synthetic_layout_as_the_paper_publishes_it(synthetic_build: Path) -> None:
    out = synthetic_build
    cfg = load_build_config(CONFIG)
    px = cfg.synthetic.chip_px
    folders = sorted(p for p in (out / "synthetic").glob("*/*") if p.is_dir())
    assert folders, "no synthetic image written"
    rois = {f.parent.name for f in folders}
    # A written ROI has both of its images, whichever one pruning selected.
    assert sorted(f.name for f in folders) == sorted(["early", "late"] * len(rois))
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == [
            "HR.tif", "histograms.npz", "metadata.json",
        ]  # fmt: skip
        with rasterio.open(folder / "HR.tif") as ds:
            assert (ds.count, ds.height, ds.width, ds.dtypes[0]) == (4, px, px, "uint16")
            assert ds.descriptions == ("red", "green", "blue", "nir")
            assert ds.res == (2.5, 2.5)
            hr = ds.read().astype(np.float64) / 10_000
        assert 0.0 < hr.mean() < 1.0
        meta = json.loads((folder / "metadata.json").read_text())
        for key in TABLE1:
            assert key in meta, key
        assert meta["roi_id"] == folder.parent.name and meta["image"] == folder.name
        assert meta["test"] in ("train", "test")  # the paper's string form
        assert meta["proj:transform"][0] == 2.5 and list(ds.transform)[:6] == meta["proj:transform"]
        assert meta["proj:epsg"] == ds.crs.to_epsg()
        assert shapely.geometry.shape(meta["proj:geometry"]).equals(
            chip_box(meta["proj:transform"], px)
        )
        assert set(meta["d_sim_to_real"]) == set(METHODS)
        for hist in meta["d_sim_to_real"].values():
            h = np.asarray(hist)
            assert h.shape == (4, 120)
            np.testing.assert_allclose(h.sum(axis=1), 1.0, atol=1e-5)
        npz = np.load(folder / "histograms.npz")
        np.testing.assert_allclose(
            npz["statistical_hr"], meta["d_sim_to_real"]["statistical"], atol=1e-6
        )
    # Early is older than late, and both are the ROI's NAIP.
    for roi in rois:
        early = json.loads((out / "synthetic" / roi / "early" / "metadata.json").read_text())
        late = json.loads((out / "synthetic" / roi / "late" / "metadata.json").read_text())
        assert early["naip_date"] < late["naip_date"] and early["naip_id"] != late["naip_id"]
        assert early["test"] == late["test"]


def test_search_and_blank_filter_follow_the_demo_world_truth(
    synthetic_build: Path, demo_world: Path
) -> None:
    out = synthetic_build
    truth = load_truth(demo_world / "truth.json")
    naip = {s.item_id: s for s in truth.scenes if isinstance(s, NaipSceneTruth)}
    acq = pd.read_parquet(out / "acquisitions.parquet")
    table = pd.read_parquet(out / "synthetic.parquet")
    cfg = load_build_config(CONFIG)
    assert len(acq) == cfg.n and len(table) == 2 * cfg.n  # one row per image of every ROI
    by_site: dict[str, list[NaipSceneTruth]] = {}
    for s in naip.values():
        by_site.setdefault(s.site_id, []).append(s)
    statuses = set()
    for row in acq.itertuples():
        images = table[table.roi_id == row.roi_id].set_index("image")
        if row.status != "chosen":
            assert set(images.status) == {"dropped"} and set(images.reasons) == {row.status}
            statuses.add(row.status)
            continue
        early, late = naip[row.early_item_id], naip[row.late_item_id]
        site = by_site[early.site_id]
        dates = sorted(s.datetime[:10] for s in site)
        assert (early.datetime[:10], late.datetime[:10]) == (dates[0], dates[-1])
        chip = chip_box(list(row.chip_transform), int(row.chip_px))
        blank = any(
            chip.intersects(shapely.box(b.xmin, b.ymin, b.xmax, b.ymax))
            for s in (early, late)
            for b in s.blank_boxes
        )
        if blank:
            assert set(images.status) == {"rejected"} and "blank" in images.reasons.iloc[0]
            assert not (out / "synthetic" / row.roi_id).exists()
            assert not (out / "hr-pool" / row.roi_id).exists()
        else:
            assert set(images.status) == {"kept"}, images
            assert (out / "hr-pool" / row.roi_id / "early" / "HR.tif").is_file()
        statuses.add("blank" if blank else "kept")
    # The demo world exercises every outcome: kept, blank, one NAIP year only, no NAIP.
    assert {"kept", "blank", "single_acquisition", "no_hr_scene"} <= statuses

    # Pruning chose among the pooled images; a ROI is written when one of its images was chosen.
    sel = pd.read_parquet(out / "selection.parquet")
    assert all(p.startswith("hr-pool/") for p in sel.path)
    chosen_rois = {Path(p).parts[1] for p in sel.path[sel.selected]}
    written = {p.name for p in (out / "synthetic").iterdir()}
    assert written == chosen_rois and int(sel.selected.sum()) == cfg.prune.clusters  # type: ignore[union-attr]
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["synthetic_images"] == 2 * len(written)
    assert counts["synthetic_rejected_blank"] == int(
        (table.drop_duplicates("roi_id").reasons == "blank").sum()
    )
    card = (out / "README.md").read_text()
    assert "## Synthetic set" in card and "| blank filter | blank |" in card


def test_rerun_changes_nothing_and_stac_describes_each_image(
    synthetic_build: Path, demo_world: Path, offline_stac_validation: Callable[[], None]
) -> None:
    out = synthetic_build
    before = {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".harvest" not in p.parts and p.suffix in (".tif", ".json", ".npz")
        and p.name != "dataset.json"
    }  # fmt: skip
    res = build(CONFIG, out, demo_world)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(done before)") >= 4, res.stdout
    after = {k: (out / k).read_bytes() for k in before}
    assert after == before
    offline_stac_validation()
    n_images = len(list((out / "synthetic").glob("*/*/metadata.json")))
    assert validate_stac(out / "stac" / "collection.json") == n_images


def test_training_dataset_reads_the_synthetic_build(synthetic_build: Path) -> None:
    from harvest.datasets import SEN2NAIP

    px = load_build_config(CONFIG).synthetic.chip_px
    ds = SEN2NAIP(synthetic_build, split="all", mode="statistical")
    assert len(ds) == len(list((synthetic_build / "synthetic").glob("*/*/HR.tif")))
    item = ds[0]
    assert tuple(item["hr"].shape) == (4, px, px) and tuple(item["lr"].shape) == (
        4,
        px // 4,
        px // 4,
    )
    with rasterio.open(synthetic_build / "synthetic" / item["roi_id"] / "early" / "HR.tif") as src:
        assert src.dtypes[0] == "uint16"
    assert 0.0 < float(item["hr"].mean()) < 1.0


def test_extend_adds_synthetic_rois_without_touching_the_old_ones(
    synthetic_build: Path, tmp_path: Path
) -> None:
    import shutil
    import subprocess
    import sys

    out = tmp_path / "ds"
    shutil.copytree(synthetic_build, out, symlinks=True)
    acq_before = pd.read_parquet(out / "acquisitions.parquet")
    images_before = {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("synthetic/*/*/*"))
    }
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--n", "1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode in (0, 3), res.stderr  # 3: nothing new (the new ROIs found nothing)
    acq = pd.read_parquet(out / "acquisitions.parquet")
    rois = pd.read_parquet(out / "rois.parquet")
    assert len(rois) > len(acq_before) and set(acq.roi_id) == set(rois.roi_id)
    # The ROIs searched before keep their rows, scenes and written images.
    old = acq.set_index("roi_id").loc[acq_before.roi_id]
    assert list(old.status) == list(acq_before.status)
    assert list(old.early_item_id.fillna("")) == list(acq_before.early_item_id.fillna(""))
    for rel, data in images_before.items():
        assert (out / rel).read_bytes() == data, rel
    table = pd.read_parquet(out / "synthetic.parquet")
    assert len(table) == 2 * len(rois)
    record = json.loads((out / "dataset.json").read_text())
    assert record["extensions"] == 1
