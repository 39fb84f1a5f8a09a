"""`harvest extend` on the demo world: new ROIs, new acquisitions, versions, changelog."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from pyproj import Geod

from harvest.config import load_build_config
from harvest.demo.truth import load_truth
from harvest.errors import InputFileError
from harvest.pipeline import bump_version, run_build, run_extend

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "configs" / "builds" / "demo-sen2naip-cross-sensor.yaml"


def built(demo_world: Path, out: Path, n: int, today: date | None = None) -> Path:
    config = load_build_config(
        TWIN, [f"output={out}", f"catalog.world={demo_world}", f"n={n}", "prune.clusters=1"]
    )
    run_build(config, today=today)
    return out


def kept(out: Path) -> set[str]:
    m = gpd.read_parquet(out / "manifest.parquet")
    return set(m.roi_id[m.status == "kept"])


def test_version_bump() -> None:
    assert bump_version("1.0.0") == "1.1.0"
    assert bump_version("2.9.3") == "2.10.0"


def test_new_rois_keep_the_spacing_and_get_a_new_version(demo_world: Path, tmp_path: Path) -> None:
    out = built(demo_world, tmp_path / "ds", n=2)
    before = gpd.read_parquet(out / "rois.parquet")
    kept_before = kept(out)
    summary = run_extend(out, n=5)
    after = gpd.read_parquet(out / "rois.parquet")

    # Five new ROIs, ids after the existing ones, every pair still >= 1.25 km apart.
    assert len(after) == len(before) + 5 and list(after.roi_id[:2]) == list(before.roi_id)
    assert list(after.roi_id[2:]) == ["ROI_000003", "ROI_000004", "ROI_000005", "ROI_000006",
                                      "ROI_000007"]  # fmt: skip
    geod = Geod(ellps="WGS84")
    x, y = after.geometry.x.to_numpy(), after.geometry.y.to_numpy()
    for i in range(len(x)):
        for j in range(i):
            assert geod.inv(x[i], y[i], x[j], y[j])[2] >= 1250.0 - 1e-6
    assert summary.new_rois == tuple(after.roi_id[2:])

    # Kept chips before stay, untouched; new kept chips make version 1.1.0.
    assert kept_before <= kept(out)
    assert set(summary.new_kept) == kept(out) - kept_before
    record = json.loads((out / "dataset.json").read_text())
    if summary.new_kept:
        assert summary.status == "extended" and record["version"] == "1.1.0"
        log = (out / "CHANGELOG.md").read_text()
        assert log.index("## 1.1.0") < log.index("## 1.0.0")
        for roi in summary.new_kept:
            assert roi in log
    assert record["counts"]["rois_sampled"] == 7
    assert record["counts"]["chips_kept"] == len(kept(out))
    # The card and the STAC collection are those of the new version.
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert collection["version"] == record["version"]
    assert "| ROIs sampled | 7 |" in (out / "README.md").read_text()

    # Nothing new the same day: exit status 3's case, version unchanged, no new entry.
    again = run_extend(out)
    assert again.status == "nothing_new" and again.version == record["version"]
    assert json.loads((out / "dataset.json").read_text())["history"] == record["history"]


def test_new_acquisitions_of_rois_without_a_kept_chip(demo_world: Path, tmp_path: Path) -> None:
    """Built 'on' 2020-12-31, extended 'on' 2023-12-31: the NAIP flights of 2021-2023 pair the
    ROIs that had no pair; a ROI that was kept keeps its chip."""
    truth = load_truth(demo_world / "truth.json")
    out = built(demo_world, tmp_path / "ds", n=7, today=date(2020, 12, 31))
    pairs_before = gpd.read_parquet(out / "pairs.parquet")
    assert (pairs_before.hr_datetime.dt.year <= 2020).all()
    kept_before = kept(out)
    chips_before = {
        r: (out / "cross-sensor" / r / "HR.tif").read_bytes() for r in sorted(kept_before)
    }

    summary = run_extend(out, today=date(2023, 12, 31))
    assert summary.new_rois == () and summary.researched_rois == 7 - len(kept_before)
    assert summary.since == "2020-12-31"
    pairs = gpd.read_parquet(out / "pairs.parquet").set_index("roi_id")
    assert len(pairs) > len(pairs_before)
    assert (pairs.hr_datetime.dt.year > 2020).any()
    # Every new kept chip is a pair the demo world's truth calls clean.
    clean = {(p.lr_item_id, p.hr_item_id) for p in truth.pairs_for("sen2naip") if p.clean}
    assert summary.new_kept
    for roi in summary.new_kept:
        assert (pairs.loc[roi, "lr_item_id"], pairs.loc[roi, "hr_item_id"]) in clean
    for roi, data in chips_before.items():
        assert (out / "cross-sensor" / roi / "HR.tif").read_bytes() == data
    record = json.loads((out / "dataset.json").read_text())
    assert record["version"] == "1.1.0" and record["searched_until"] == "2023-12-31"

    # Pruning was incremental: the first image selected stays selected.
    selection = gpd.read_parquet(out / "selection.parquet")
    assert int(selection.selected.sum()) == 1
    assert np.isin(selection.run, [1, 2]).all()


def test_extend_refuses_what_is_not_a_finished_build(demo_world: Path, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not a dataset folder written by 'harvest build'"):
        run_extend(tmp_path)
    out = built(demo_world, tmp_path / "ds", n=2)
    state = out / ".harvest" / "build.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "complete": False}))
    with pytest.raises(InputFileError, match="did not finish"):
        run_extend(out)


def test_the_new_rois_follow_the_builds_seed(demo_world: Path, tmp_path: Path) -> None:
    """Two copies of one dataset whose configs differ only in the seed draw other new ROIs."""
    import shutil

    import yaml

    out = built(demo_world, tmp_path / "ds", n=2)
    marker = (demo_world / ".harvest-demo-world.json").read_bytes()
    new: dict[int, list[tuple[float, float]]] = {}
    for seed in (0, 1):
        copy = tmp_path / f"seed-{seed}"
        shutil.copytree(out, copy)
        cfg = yaml.safe_load((copy / "config.yaml").read_text())
        cfg.update(seed=seed, output=str(copy), prune=None)  # a selection keeps its seed
        (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        run_extend(copy, n=3)
        rois = gpd.read_parquet(copy / "rois.parquet").iloc[2:]
        new[seed] = [(round(p.x, 6), round(p.y, 6)) for p in rois.geometry]
    assert len(new[0]) == len(new[1]) == 3 and new[0] != new[1]
    # The world the configs name (outside the datasets) is used as it is, not rebuilt with seed 1.
    assert (demo_world / ".harvest-demo-world.json").read_bytes() == marker
