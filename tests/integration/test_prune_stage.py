"""``harvest embed`` / ``harvest prune`` stages on real GeoTIFF folders.

The embedder here is a plain feature extractor that separates the planted textures for certain
(colour and gradient statistics): these tests are about the stage (which images, resume,
incremental runs, files), not about CLIP; tests/e2e/test_cli_prune.py runs CLIP weights through
the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from harvest.errors import EmbedError, PruneError
from harvest.stages import embed as embed_stage
from harvest.stages import prune as prune_stage
from harvest.stages._embedding import find_images, parts_dir

TEXTURES = ("red-stripes", "green-checker", "blue-smooth", "grey-noise", "yellow-dots")


def texture(name: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """(4, size, size) float32 reflectance of a planted texture, with noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = {
        "red-stripes": ((0.30, 0.05, 0.05), np.sin(xx / 2.0)),
        "green-checker": ((0.05, 0.30, 0.05), np.sign(np.sin(xx / 3) * np.sin(yy / 3))),
        "blue-smooth": ((0.05, 0.05, 0.30), (xx + yy) / size),
        "grey-noise": ((0.15, 0.15, 0.15), rng.normal(0, 1, (size, size))),
        "yellow-dots": ((0.30, 0.30, 0.02), (np.sin(xx / 1.5) * np.sin(yy / 1.5) > 0.8) * 1.0),
    }[name]
    colour, pattern = base
    out = np.zeros((4, size, size), np.float32)
    for b in range(3):
        out[b] = colour[b] * (1 + 0.3 * pattern) + rng.normal(0, 0.005, (size, size))
    out[3] = 0.3
    return out


def write_tif(path: Path, data: np.ndarray, *, x0: float = 500_000.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype="float32",
        crs="EPSG:32614",
        transform=from_origin(x0, 4_200_000.0, 2.5, 2.5),
        nodata=float("nan"),
    ) as ds:
        ds.write(data)
        for i, name in enumerate(("red", "green", "blue", "nir")[: data.shape[0]], start=1):
            ds.set_band_description(i, name)


class PlantedEmbedder:
    """Colour means and gradient energies: separates the planted textures for certain."""

    model_name = "planted-features"
    weights_sha256 = "0" * 64

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(rgb.astype(np.float64))
        gx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
        gy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
        return np.concatenate([x.mean(axis=(1, 2)) * 3, gx * 4, gy * 4]).astype(np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(batch)
        return (batch / np.linalg.norm(batch, axis=1, keepdims=True)).astype(np.float32)


def make_folder(root: Path, copies: int = 4, seed: int = 0, textures=TEXTURES) -> dict[str, str]:
    """A folder of GeoTIFFs: ``copies`` noisy copies of each texture; file stem -> texture."""
    rng = np.random.default_rng(seed)
    truth = {}
    for t in textures:
        for c in range(copies):
            stem = f"{t}-{seed}-{c}"
            write_tif(root / f"{stem}.tif", texture(t, rng), x0=500_000.0 + 200 * c)
            truth[stem] = t
    return truth


def selection(path: Path) -> dict[str, dict]:
    rows = pq.read_table(path).to_pylist()
    return {r["roi_id"]: r for r in rows}


def test_every_planted_texture_keeps_exactly_one_image(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "ds")
    for strategy in ("random", "nearest"):
        out = tmp_path / strategy / "selection.parquet"
        summary = prune_stage.run(
            tmp_path / "ds",
            out,
            clusters=len(TEXTURES),
            seed=3,
            strategy=strategy,
            embedder=PlantedEmbedder(),
        )
        meta = json.loads(pq.read_schema(out).metadata[b"harvest"])
        assert (meta["kmeans"], meta["strategy"]) == ("lloyd", strategy)
        rows = selection(out)
        assert len(rows) == len(truth) == summary.n_images
        kept = sorted(truth[r] for r, row in rows.items() if row["selected"])
        assert kept == sorted(TEXTURES)
        # Clusters are the textures: one cluster id per texture, no sharing.
        by_texture = {}
        for roi, row in rows.items():
            by_texture.setdefault(truth[roi], set()).add(row["cluster"])
        assert all(len(c) == 1 for c in by_texture.values())
        assert len(set().union(*by_texture.values())) == len(TEXTURES)
        if strategy == "nearest":
            for row in rows.values():
                if row["selected"]:
                    same = [r for r in rows.values() if r["cluster"] == row["cluster"]]
                    assert row["distance"] == min(r["distance"] for r in same)
        files = summary.files
        report = json.loads(files.report_json.read_text())
        assert report["n_selected"] == len(TEXTURES) and report["n_images"] == len(truth)
        assert report["cluster_size_histogram"]["4"] == len(TEXTURES)
        assert "![clusters](selection.clusters.png)" in files.report_md.read_text()
        png = files.contact_sheet.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_minibatch_backend_is_there_for_comparison(tmp_path: Path) -> None:
    """``--kmeans minibatch`` (the paper's MiniBatchKMeans) runs the same stage and records it."""
    truth = make_folder(tmp_path / "ds")
    out = tmp_path / "selection.parquet"
    summary = prune_stage.run(
        tmp_path / "ds", out, clusters=3, seed=1, kmeans="minibatch", embedder=PlantedEmbedder()
    )
    meta = json.loads(pq.read_schema(out).metadata[b"harvest"])
    assert meta["kmeans"] == "minibatch"
    rows = selection(out)
    assert len(rows) == len(truth)
    clusters = {row["cluster"] for row in rows.values()}
    kept = [row["cluster"] for row in rows.values() if row["selected"]]
    assert sorted(kept) == sorted(clusters) and summary.n_selected == len(clusters)
    with pytest.raises(PruneError, match="--kmeans"):
        prune_stage.run(tmp_path / "ds", tmp_path / "x.parquet", clusters=3, kmeans="kmedoids")


def test_contact_sheet_frames_the_kept_image(tmp_path: Path) -> None:
    from PIL import Image

    make_folder(tmp_path / "ds", copies=3, textures=TEXTURES[:2])
    summary = prune_stage.run(
        tmp_path / "ds", tmp_path / "s.parquet", clusters=2, embedder=PlantedEmbedder()
    )
    sheet = np.asarray(Image.open(summary.files.contact_sheet).convert("RGB"))
    orange = np.all(sheet == (255, 140, 0), axis=-1)
    # One framed thumbnail per row (two clusters): two orange frames of the same size.
    from scipy import ndimage

    labels, n = ndimage.label(orange)
    assert n == 2
    assert sheet.shape[0] > 2 * prune_stage.THUMB_PX


def test_same_seed_same_selection_and_embedding_resumes(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds", copies=3)
    a = tmp_path / "a" / "selection.parquet"
    b = tmp_path / "b" / "selection.parquet"
    first = PlantedEmbedder()
    prune_stage.run(tmp_path / "ds", a, clusters=4, seed=11, embedder=first)
    prune_stage.run(tmp_path / "ds", b, clusters=4, seed=11, embedder=PlantedEmbedder())
    ra, rb = selection(a), selection(b)
    assert {k: (v["cluster"], v["selected"]) for k, v in ra.items()} == {
        k: (v["cluster"], v["selected"]) for k, v in rb.items()
    }
    assert first.images == 15
    # A second run on the same output embeds nothing and changes nothing.
    again = PlantedEmbedder()
    before = a.read_bytes()
    summary = prune_stage.run(tmp_path / "ds", a, clusters=4, seed=11, embedder=again)
    assert again.images == 0 and summary.n_embedded == 0 and summary.n_new == 0
    assert a.read_bytes() == before


class Interrupting(PlantedEmbedder):
    """Stops the run (as Ctrl-C does) after ``after`` batches."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if self.calls >= self.after:
            raise KeyboardInterrupt
        return super().embed(batch)


def test_embedding_resumes_after_an_interruption(tmp_path: Path, monkeypatch) -> None:
    from harvest.stages import _embedding

    make_folder(tmp_path / "ds", copies=4)  # 20 images
    monkeypatch.setattr(_embedding, "PART_ROWS", 4)
    out = tmp_path / "emb.parquet"
    with pytest.raises(KeyboardInterrupt):
        embed_stage.run(tmp_path / "ds", out, embedder=Interrupting(after=3), batch_size=4)
    assert not out.exists()
    parts = sorted(parts_dir(out).glob("part-*.parquet"))
    assert len(parts) == 3  # 12 images saved before the interruption
    resumed = PlantedEmbedder()
    summary = embed_stage.run(tmp_path / "ds", out, embedder=resumed, batch_size=4)
    assert resumed.images == 8 and summary.result.n_done_before == 12
    assert not parts_dir(out).exists()
    table = pq.read_table(out)
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 20
    # The same vectors as one uninterrupted run.
    whole = tmp_path / "whole.parquet"
    embed_stage.run(tmp_path / "ds", whole, embedder=PlantedEmbedder(), batch_size=4)
    assert (
        pq.read_table(whole).column("embedding").to_pylist()
        == table.column("embedding").to_pylist()
    )
    meta = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert meta["primary_column"] == "geometry"


def test_incremental_run_keeps_the_existing_selection(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    make_folder(ds, copies=3, textures=TEXTURES[:3], seed=1)
    out = tmp_path / "selection.parquet"
    prune_stage.run(ds, out, clusters=3, seed=5, embedder=PlantedEmbedder())
    before = selection(out)
    # New images: more copies of known textures, and two textures never seen.
    truth = make_folder(ds, copies=2, textures=TEXTURES, seed=2)
    summary = prune_stage.run(ds, out, clusters=3, seed=5, embedder=PlantedEmbedder())
    after = selection(out)
    assert summary.incremental and summary.n_new == 10
    for roi, row in before.items():
        assert (after[roi]["cluster"], after[roi]["selected"], after[roi]["run"]) == (
            row["cluster"],
            row["selected"],
            1,
        )
    # New images of known textures join their clusters and are not selected.
    assert summary.n_new_selected == 0
    assert all(after[r]["run"] == 2 for r in truth)
    assert sum(r["selected"] for r in after.values()) == 3
    # --grow 2: two clusters fitted on the new images; the new textures get one image each.
    truth3 = make_folder(ds, copies=2, textures=TEXTURES[3:], seed=3)
    with pytest.raises(PruneError, match="--clusters 3"):
        prune_stage.run(ds, out, clusters=7, seed=5, embedder=PlantedEmbedder())
    grown = prune_stage.run(ds, out, clusters=3, seed=5, grow=2, embedder=PlantedEmbedder())
    assert grown.n_clusters == 5
    rows = selection(out)
    assert all(rows[r]["cluster"] in (3, 4) for r in truth3)
    assert all(rows[r] == {**after[r], "run": after[r]["run"]} for r in after)
    assert grown.n_selected == 5
    cent = pq.read_table(summary.files.centroids)
    assert cent.num_rows == 5 and cent.column("run").to_pylist() == [1, 1, 1, 3, 3]
    report = json.loads(summary.files.report_json.read_text())
    assert [r["run"] for r in report["runs"]] == [1, 2, 3]
    # Options that contradict the selection are refused in one line.
    with pytest.raises(PruneError, match="--seed 5"):
        prune_stage.run(ds, out, clusters=3, seed=6, embedder=PlantedEmbedder())
    with pytest.raises(PruneError, match="--strategy random"):
        prune_stage.run(ds, out, clusters=3, seed=5, strategy="nearest", embedder=PlantedEmbedder())


def test_more_clusters_than_images_is_one_line(tmp_path: Path) -> None:
    from harvest.cluster import ClusteringError

    make_folder(tmp_path / "ds", copies=1, textures=TEXTURES[:2])
    with pytest.raises(ClusteringError) as info:
        prune_stage.run(
            tmp_path / "ds", tmp_path / "s.parquet", clusters=3, embedder=PlantedEmbedder()
        )
    assert "\n" not in str(info.value) and "2" in str(info.value)
    assert not (tmp_path / "s.parquet").exists()


def test_find_images_reads_the_written_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fetch = tmp_path / "fetch"
    for roi in ("ROI_000001", "ROI_000002"):
        write_tif(fetch / "cross-sensor" / roi / "HR.tif", texture("grey-noise", rng))
        write_tif(fetch / "cross-sensor" / roi / "LR.tif", texture("grey-noise", rng, 12))
    write_tif(fetch / "rejected" / "ROI_000003" / "HR.tif", texture("grey-noise", rng))
    hr = find_images(fetch, "hr")
    assert [(i.roi_id, i.image, i.rel) for i in hr] == [
        ("ROI_000001", "HR", "cross-sensor/ROI_000001/HR.tif"),
        ("ROI_000002", "HR", "cross-sensor/ROI_000002/HR.tif"),
    ]
    assert [i.rel for i in find_images(fetch, "lr")][0] == "cross-sensor/ROI_000001/LR.tif"
    synthetic = tmp_path / "syn"
    for image in ("early", "late"):
        folder = synthetic / "synthetic" / "ROI_000007" / image
        write_tif(folder / "HR.tif", texture("grey-noise", rng))
        write_tif(folder / "LR_deterministic.tif", texture("grey-noise", rng, 12))
        write_tif(folder / "LR_statistical.tif", texture("grey-noise", rng, 12))
    assert [(i.roi_id, i.image) for i in find_images(synthetic, "hr")] == [
        ("ROI_000007", "early"),
        ("ROI_000007", "late"),
    ]
    assert {Path(i.rel).name for i in find_images(synthetic, "lr")} == {"LR_statistical.tif"}
    generic = tmp_path / "generic"
    write_tif(generic / "kept" / "ROI_000009" / "hr_5m.tif", texture("grey-noise", rng))
    write_tif(generic / "kept" / "ROI_000009" / "lr_10m.tif", texture("grey-noise", rng, 12))
    write_tif(generic / "kept" / "ROI_000009" / "lr_20m.tif", texture("grey-noise", rng, 6))
    assert [i.rel for i in find_images(generic, "lr")] == ["kept/ROI_000009/lr_10m.tif"]


def test_an_empty_folder_and_a_corrupt_image_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedError, match="no HR images"):
        find_images(tmp_path / "empty", "hr")
    with pytest.raises(EmbedError, match="not a folder"):
        find_images(tmp_path / "missing", "hr")
    make_folder(tmp_path / "ds", copies=1, textures=TEXTURES[:2])
    (tmp_path / "ds" / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(EmbedError, match="broken.tif") as info:
        embed_stage.run(tmp_path / "ds", tmp_path / "e.parquet", embedder=PlantedEmbedder())
    assert "\n" not in str(info.value)
    assert not (tmp_path / "e.parquet").exists()
