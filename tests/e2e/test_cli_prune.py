"""``harvest embed`` and ``harvest prune`` from the shell, with CLIP weights loaded for real.

The weights are the demo's: a small CLIP architecture (an open_clip model-config JSON) with a
seeded random initialisation, saved as a local checkpoint by :mod:`harvest.demo.clip`, and
loaded through the same path as RemoteCLIP or GeoRSCLIP checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from harvest.demo.clip import write_demo_clip

HARVEST = [sys.executable, "-m", "harvest.cli"]


def harvest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HARVEST, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    demo = write_demo_clip(tmp_path_factory.mktemp("clip"), seed=0)
    return ["--model", str(demo.config), "--checkpoint", str(demo.checkpoint)]


def test_embed_writes_one_normalised_vector_per_kept_chip(
    tmp_path: Path, demo_pairs: Path, weights: list[str]
) -> None:
    out = tmp_path / "embeddings.parquet"
    res = harvest("embed", str(demo_pairs), *weights, "-o", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    kept = sorted(p.parent.name for p in (demo_pairs / "cross-sensor").glob("*/HR.tif"))
    table = gpd.read_parquet(out)
    assert sorted(table.roi_id) == kept and len(kept) >= 4
    assert set(table.path) == {f"cross-sensor/{r}/HR.tif" for r in kept}
    assert set(table.role) == {"hr"} and set(table.model) == {"demo-clip@demo-clip.pt"}
    vectors = np.stack(table.embedding.to_numpy())
    assert vectors.dtype == np.float32 and vectors.shape == (len(kept), 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Footprints in lon/lat over the chips (the demo world is in the USA).
    assert table.crs.to_epsg() == 4326 and (table.geometry.bounds.maxx < -60).all()
    assert "embedding path:" in res.stderr  # the probe says which path it chose
    # LR images are another table; the same command again embeds nothing.
    again = harvest("embed", str(demo_pairs), *weights, "-o", str(out), "--no-progress")
    assert again.returncode == 0 and again.stdout.startswith("0 images embedded"), again.stdout


def test_prune_embeds_first_then_keeps_one_image_per_cluster(
    tmp_path: Path, demo_pairs: Path, weights: list[str]
) -> None:
    out = tmp_path / "selection.parquet"
    args = ("prune", str(demo_pairs), "--clusters", "3", "--seed", "4", *weights)
    res = harvest(*args, "-o", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "embeddings.parquet").is_file()
    sel = gpd.read_parquet(out)
    assert {"roi_id", "image", "path", "cluster", "distance", "selected", "run"} <= set(sel)
    non_empty = sel.cluster.nunique()
    assert sel.selected.sum() == non_empty and sel.groupby("cluster").selected.sum().eq(1).all()
    assert (sel["distance"] >= 0).all()
    for name in ("centroids.parquet", "report.json", "report.md", "clusters.png"):
        assert (tmp_path / f"selection.{name}").is_file(), name
    assert f"{non_empty} of {len(sel)} images kept" in res.stdout
    # The same seed in another folder gives the same selection (embeddings are recomputed).
    other = tmp_path / "other" / "selection.parquet"
    res2 = harvest(*args, "-o", str(other), "--no-progress")
    assert res2.returncode == 0, res2.stderr
    sel2 = gpd.read_parquet(other)
    assert sel2[["path", "cluster", "selected"]].equals(sel[["path", "cluster", "selected"]])


def test_missing_weights_fail_at_once_in_one_line(tmp_path: Path, demo_pairs: Path) -> None:
    started = time.perf_counter()
    res = harvest(
        "embed",
        str(demo_pairs),
        "-o",
        str(tmp_path / "e.parquet"),
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")},
    )
    assert time.perf_counter() - started < 30  # interpreter start included; no retries
    assert res.returncode == 1
    line = res.stderr.strip()
    assert "\n" not in line and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in line, line
    assert "--checkpoint" in line
    assert not (tmp_path / "e.parquet").exists()


def test_bad_prune_options_are_one_line(
    tmp_path: Path, demo_pairs: Path, weights: list[str]
) -> None:
    res = harvest(
        "prune", str(demo_pairs), "--clusters", "500", *weights, "-o", str(tmp_path / "s.parquet")
    )
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "500" in res.stderr and not (tmp_path / "s.parquet").exists()
    both = harvest(
        "embed",
        str(demo_pairs),
        "--pretrained",
        "laion2b_s34b_b79k",
        "--checkpoint",
        str(tmp_path / "x.pt"),
        "-o",
        str(tmp_path / "e.parquet"),
    )
    assert both.returncode == 2 and "not both" in both.stderr
    missing = harvest(
        "prune", str(tmp_path / "nope"), "--clusters", "2", *weights, "-o", str(tmp_path / "s")
    )
    assert missing.returncode == 1 and "not a folder" in missing.stderr
