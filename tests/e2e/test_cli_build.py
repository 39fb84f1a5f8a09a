"""`harvest build CONFIG`: every demo twin builds; resume, kill -9, refusals, card and STAC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
from PIL import Image

from harvest.config import load_build_config
from harvest.demo.truth import load_truth

REPO = Path(__file__).resolve().parents[2]
DEMO_TWINS = sorted((REPO / "configs" / "builds").glob("demo*.yaml"))
# The synthetic-only and SEN2VENuS twins have no ROI chips: test_cli_build_synthetic.py and
# test_cli_build_sen2venus.py.
SITE_TWINS = ("demo-sen2naip-synthetic", "demo-sen2venus", "demo-sentinel-hr")
PAIR_TWINS = [p for p in DEMO_TWINS if p.stem not in SITE_TWINS]


def build(config: Path, out: Path, world: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "harvest.cli", "build", str(config),
            "--set", f"output={out}", "--set", f"catalog.world={world}", "--no-progress", *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,  # relative paths of the configs are relative to where harvest runs
    )  # fmt: skip


def validate_stac(collection_json: Path) -> int:
    """Validate the collection and every item with pystac (offline_stac_validation first)."""
    import pystac

    collection = pystac.Collection.from_file(str(collection_json))
    collection.validate()
    n = 0
    for item in collection.get_items():
        item.validate()
        assert item.properties["ml-aoi:split"] in ("train", "test")
        for asset in item.assets.values():
            assert not asset.href.startswith("/") or Path(asset.get_absolute_href()).is_file()
            assert Path(asset.get_absolute_href() or "").is_file(), asset.href
        n += 1
    return n


def manifest_counts(out: Path) -> dict[str, int]:
    m = gpd.read_parquet(out / "manifest.parquet")
    return {f"chips_{s}": int((m.status == s).sum()) for s in ("kept", "rejected", "failed")}


@pytest.mark.parametrize("config", PAIR_TWINS, ids=lambda p: p.stem)
def test_every_demo_twin_builds_a_described_dataset(
    config: Path, demo_world: Path, tmp_path: Path, offline_stac_validation: Callable[[], None]
) -> None:
    offline_stac_validation()
    out = tmp_path / "ds"
    res = build(config, out, demo_world)
    assert res.returncode == 0, res.stderr
    assert f"dataset {out} version 1.0.0" in res.stdout
    cfg = load_build_config(config, [f"output={out}", f"catalog.world={demo_world}"])

    record = json.loads((out / "dataset.json").read_text())
    assert record["version"] == "1.0.0" and record["config_hash"] == cfg.dataset_hash()
    counts = record["counts"]
    for key, n in manifest_counts(out).items():
        assert counts[key] == n, key
    assert counts["rois_sampled"] == len(gpd.read_parquet(out / "rois.parquet")) == cfg.n
    assert counts["rois_paired"] == len(gpd.read_parquet(out / "pairs.parquet"))
    assert counts["chips_kept"] >= 1, res.stdout
    resolved = (out / "config.yaml").read_text()
    assert cfg.dataset_hash() in resolved and f"output: {out}" in resolved

    # The card shows the numbers and its figures; the figures are real PNGs.
    card = (out / "README.md").read_text()
    assert f"| ROIs sampled | {cfg.n} |" in card
    assert f"| chips kept (QA passed) | {counts['chips_kept']} |" in card
    for name in ("rois.png", "qa.png"):
        assert f"figures/{name}" in card
        with Image.open(out / "figures" / name) as img:
            assert img.format == "PNG" and img.width >= 600
    assert "## Sources and licences" in card

    # The STAC Collection validates; one item per kept chip and per synthetic image.
    n_synthetic = len(list((out / "synthetic").glob("*/*/metadata.json")))
    assert validate_stac(out / "stac" / "collection.json") == counts["chips_kept"] + n_synthetic
    if "synthetic" in cfg.products:
        assert n_synthetic == counts["synthetic_images"] >= 1
    if cfg.prune is not None:
        selection = gpd.read_parquet(out / "selection.parquet")
        assert counts["selected"] == int(selection.selected.sum()) >= 1
        # A synthetic build prunes its early/late HR images before degrading them.
        wanted = "hr-pool/" if "synthetic" in cfg.products else "cross-sensor/"
        assert all(str(p).startswith(wanted) for p in selection.path)

    # Truth: a ROI whose chosen pair the demo world calls clean is kept, the others rejected.
    truth = load_truth(demo_world / "truth.json")
    recipe = "sen12" if "sen12" in config.stem else load_build_config(config).recipe
    clean = {(p.lr_item_id, p.hr_item_id) for p in truth.pairs_for(recipe) if p.clean}
    known = {(p.lr_item_id, p.hr_item_id) for p in truth.pairs_for(recipe)}
    pairs = pd.read_parquet(out / "pairs.parquet").set_index("roi_id")
    for row in gpd.read_parquet(out / "manifest.parquet").itertuples():
        key = (pairs.loc[row.roi_id, "lr_item_id"], pairs.loc[row.roi_id, "hr_item_id"])
        if key in known:
            assert (row.status == "kept") == (key in clean), (row.roi_id, row.reasons)


def dataset_state(out: Path) -> dict[str, Any]:
    """What must not change between two builds of one config: files and their checksums."""
    m = gpd.read_parquet(out / "manifest.parquet")
    sums = m[[c for c in m.columns if c.startswith("sha256_")] + ["roi_id", "status"]]
    files = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and ".harvest" not in p.parts and not p.name.startswith(".")
    )
    sel = gpd.read_parquet(out / "selection.parquet")
    return {
        "files": files,
        "manifest": sums.sort_values("roi_id").to_dict("records"),
        "selected": sorted(sel.path[sel.selected]),
        "synthetic": {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("synthetic/*/*/*.tif"))
        },
    }


def test_build_resumes_refuses_another_config_and_survives_kill_9(
    demo_world: Path, tmp_path: Path
) -> None:
    config = REPO / "configs" / "builds" / "demo.yaml"
    out = tmp_path / "ds"
    first = build(config, out, demo_world)
    assert first.returncode == 0, first.stderr
    record = (out / "dataset.json").read_bytes()
    reference = dataset_state(out)

    # Again: every stage says it was done before and nothing changes.
    again = build(config, out, demo_world, "--set", "workers=2")  # compute keys may change
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(done before)") == 8, again.stdout  # every step but write
    assert (out / "dataset.json").read_bytes() == record
    assert dataset_state(out) == reference

    # Another config on the same folder is refused before anything is written.
    other = build(config, out, demo_world, "--set", "n=5")
    assert other.returncode == 1
    assert "built from another config" in other.stderr and len(other.stderr.splitlines()) == 1
    assert dataset_state(out) == reference

    # kill -9 in the middle, at several points, then build again: the same dataset.
    for delay in (3.0, 6.0, 9.0):
        killed = tmp_path / f"killed-{delay:g}"
        run = subprocess.Popen(
            [
                sys.executable, "-m", "harvest.cli", "build", str(config),
                "--set", f"output={killed}", "--set", f"catalog.world={demo_world}",
                "--no-progress",
            ],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        time.sleep(delay)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        resumed = build(config, killed, demo_world)
        assert resumed.returncode == 0, (delay, resumed.stderr)
        assert dataset_state(killed) == reference, delay


def test_bad_input_writes_nothing(demo_world: Path, tmp_path: Path) -> None:
    config = REPO / "configs" / "builds" / "demo-sen2naip-cross-sensor.yaml"
    out = tmp_path / "ds"
    res = build(config, out, demo_world, "--set", "qa.max_shift=2")
    assert res.returncode == 1 and not out.exists()
    assert res.stderr.startswith("error: ") and "qa.max_shift" in res.stderr
    assert len(res.stderr.splitlines()) == 1

    # A folder that holds other things is not a build's: refused, left as it was.
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    res = build(config, foreign, demo_world)
    assert res.returncode == 1 and "no 'harvest build' made" in res.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
