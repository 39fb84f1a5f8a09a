"""Fetch and embed on Dask: a LocalCluster and a separately started scheduler + worker give
the dataset a single process gives (same chip checksums, same selection)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest

from harvest.config import load_build_config
from harvest.pipeline import run_build
from harvest.stages._embedding import read_embeddings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "builds" / "demo.yaml"


def build(demo_world: Path, out: Path, *extra: str) -> Path:
    sets = [f"output={out}", f"catalog.world={demo_world}", "prune.precision=fp32", *extra]
    run_build(load_build_config(CONFIG, sets))
    return out


def dataset(out: Path) -> dict[str, Any]:
    m = gpd.read_parquet(out / "manifest.parquet").sort_values("roi_id")
    sel = gpd.read_parquet(out / "selection.parquet").sort_values("path")
    return {
        "chips": m[["roi_id", "status", "sha256_lr", "sha256_hr", "sha256_scl"]].to_dict("records"),
        "synthetic": {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("synthetic/*/*/*.tif"))
        },
        "selection": sel[["path", "cluster", "selected"]].to_dict("records"),
        "counts": json.loads((out / "dataset.json").read_text())["counts"],
    }


@pytest.fixture(scope="module")
def single(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(demo_world, tmp_path_factory.mktemp("single") / "ds")


def same_as_single(single: Path, other: Path) -> None:
    assert dataset(other) == dataset(single)
    a, _ = read_embeddings(single / "embeddings.parquet")
    b, _ = read_embeddings(other / "embeddings.parquet")
    assert a.rel == b.rel and a.model == b.model
    # Workers run one thread each: the same fp32 model, summed in another order at most.
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_local_cluster_of_two_processes(single: Path, demo_world: Path, tmp_path: Path) -> None:
    out = build(demo_world, tmp_path / "ds", "workers=2")
    same_as_single(single, out)


@pytest.fixture
def external_cluster(tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and `dask worker` started as their own processes on 127.0.0.1."""
    dask = Path(sys.executable).with_name("dask")
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(info)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen(
            [str(dask), "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_existing_scheduler_and_workers(
    single: Path, demo_world: Path, tmp_path: Path, external_cluster: str
) -> None:
    out = build(demo_world, tmp_path / "ds", f"scheduler={external_cluster}")
    same_as_single(single, out)


def test_embed_on_a_local_cluster_equals_one_process(tmp_path: Path) -> None:
    """Many batches over several tasks: the same rows and vectors as in one process."""
    from test_prune_stage import make_folder

    from harvest.demo.clip import write_demo_clip
    from harvest.embed import WeightsSpec
    from harvest.stages import embed as embed_stage

    make_folder(tmp_path / "ds", copies=5)  # 25 images: 7 batches of 4, 4 Dask tasks
    demo = write_demo_clip(tmp_path / "models", seed=0)
    spec = WeightsSpec(model=str(demo.config), checkpoint=demo.checkpoint)
    kw: dict[str, Any] = {"weights": spec, "precision": "fp32", "batch_size": 4}
    one = embed_stage.run(tmp_path / "ds", tmp_path / "one.parquet", **kw)
    two = embed_stage.run(tmp_path / "ds", tmp_path / "two.parquet", workers=2, **kw)
    assert one.result.n_embedded == two.result.n_embedded == 25
    a, _ = read_embeddings(tmp_path / "one.parquet")
    b, _ = read_embeddings(tmp_path / "two.parquet")
    assert a.rel == b.rel and a.footprints == b.footprints
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
