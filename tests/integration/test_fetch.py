"""The fetch stage on the demo world, whose truth is known (shifts, clouds, nodata, blanks).

Inputs are built the way the search stage builds them: scenes parsed from the demo world's
items with the demo provider profile, paired by :func:`harvest.pairing.pair_scenes` for ROIs
placed in each site's chip-safe area.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from harvest.backends.base import AssetMap, SceneRef
from harvest.backends.gdal.reader import RasterioReader
from harvest.backends.gdal.retry import ReadRetryPolicy, is_transient, with_retries
from harvest.demo.pairs import truth_pair_rows
from harvest.demo.truth import S2SceneTruth, load_truth
from harvest.errors import AssetReadError, ReadError, StoreError
from harvest.qa import QaThresholds, Reason, block_mean
from harvest.recipes import load_recipe
from harvest.stages.fetch import FetchJob
from harvest.stages.fetch import run as run_fetch
from harvest.stages.qa import run as run_qa
from harvest.store import CROSS_SENSOR_DIR, REJECTED_DIR, assign_split, read_chip_folder

RECIPE = load_recipe("sen2naip")


def demo_jobs(world: Path, offsets_m: tuple[tuple[float, float], ...] = ((0.0, 0.0),)) -> list:
    """One fetch job per (sen2naip truth pair, offset from the chip-safe centre)."""
    rows = truth_pair_rows(world, RECIPE, offsets_m, id_digits=5)
    jobs = [FetchJob(r.roi_id, r.lon_deg, r.lat_deg, r.utm_epsg, r.pair) for r in rows]
    return jobs


def _status(out: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((out / ".harvest/status").glob("*.json"))
    }


@pytest.fixture(scope="module")
def fetched(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seven sen2naip demo pairs fetched once, in this process."""
    out = tmp_path_factory.mktemp("fetch") / "dataset"
    jobs = demo_jobs(demo_world)
    summary = run_fetch(jobs, RECIPE, out)
    return {"out": out, "jobs": jobs, "summary": summary, "truth": load_truth(demo_world)}


def _pair_truth(fetched: dict[str, Any], job: FetchJob) -> Any:
    truth = fetched["truth"]
    return next(p for p in truth.pairs_for("sen2naip") if p.lr_item_id == job.pair.lr.item_id)


def test_clean_chips_kept_and_dirty_chips_rejected_for_their_reason(
    fetched: dict[str, Any],
) -> None:
    status = _status(fetched["out"])
    assert set(status) == {j.roi_id for j in fetched["jobs"]}
    wanted = {"cloud": Reason.CLOUD, "nodata": Reason.NODATA, "blank": Reason.BLANK}
    for job in fetched["jobs"]:
        pt = _pair_truth(fetched, job)
        st = status[job.roi_id]
        reasons = set(st["reasons"].split(";")) - {""}
        if pt.clean:
            assert st["status"] == "kept", (job.roi_id, pt.site_id, reasons)
        else:
            assert st["status"] == "rejected"
            for issue in pt.issues:
                assert wanted[issue].value in reasons, (pt.site_id, issue, reasons)
    s = fetched["summary"]
    n_clean = sum(_pair_truth(fetched, j).clean for j in fetched["jobs"])
    assert (s.n_kept, s.n_rejected, s.n_failed) == (n_clean, len(fetched["jobs"]) - n_clean, 0)


def test_estimated_shift_within_a_tenth_of_a_pixel_of_truth(fetched: dict[str, Any]) -> None:
    status = _status(fetched["out"])
    checked = 0
    for job in fetched["jobs"]:
        pt = _pair_truth(fetched, job)
        if "cloud" in pt.issues:  # clouds move the content: no registration to compare
            continue
        s2 = fetched["truth"].scene(job.pair.lr.item_id)
        assert isinstance(s2, S2SceneTruth)
        east_m, north_m = s2.shift_m
        # truth: LR content displaced by +shift (east, north); qa: dx east, dy south, in px.
        want_dx, want_dy = east_m / 10.0, -north_m / 10.0
        qa = status[job.roi_id]["qa"]
        assert abs(qa["shift_dx_px"] - want_dx) <= 0.1, (pt.site_id, qa["shift_dx_px"], want_dx)
        assert abs(qa["shift_dy_px"] - want_dy) <= 0.1, (pt.site_id, qa["shift_dy_px"], want_dy)
        checked += 1
    assert checked >= 5


def test_lr_and_hr_describe_one_footprint_and_round_trip(fetched: dict[str, Any]) -> None:
    out: Path = fetched["out"]
    job = fetched["jobs"][1]  # us-ia, clean
    folder = out / CROSS_SENSOR_DIR / job.roi_id
    grids = job.grids(RECIPE)
    with rasterio.open(folder / "LR.tif") as lr_ds, rasterio.open(folder / "HR.tif") as hr_ds:
        assert (lr_ds.count, lr_ds.height, lr_ds.width) == (4, 121, 121)
        assert (hr_ds.count, hr_ds.height, hr_ds.width) == (4, 484, 484)
        assert lr_ds.descriptions == ("B04", "B03", "B02", "B08")
        assert hr_ds.descriptions == ("red", "green", "blue", "nir")
        assert lr_ds.crs.to_epsg() == hr_ds.crs.to_epsg() == job.utm_epsg
        for a, b in zip(lr_ds.bounds, hr_ds.bounds, strict=True):
            assert abs(a - b) < 0.01
        assert lr_ds.transform.c % 10 == 0 and lr_ds.transform.f % 10 == 0  # S2 pixel edges
        for ds in (lr_ds, hr_ds):  # GDAL sees the chip files as COGs
            structure = ds.tags(ns="IMAGE_STRUCTURE")
            assert (structure["LAYOUT"], structure["COMPRESSION"]) == ("COG", "ZSTD")
            assert np.isnan(ds.nodata) and ds.dtypes[0] == "float32"
        lr = lr_ds.read()
        hr = hr_ds.read()
    # Values: LR equals the stored DN * 1e-4 + offset of the source file, pixel for pixel.
    ref = job.pair.lr.assets["B04"]
    with rasterio.open(ref.href) as src:
        win = rasterio.windows.from_bounds(*grids.lr.bounds, transform=src.transform)
        dn = src.read(1, window=win.round_offsets().round_lengths())
    np.testing.assert_array_equal(lr[0], (dn * np.float32(ref.scale) + np.float32(ref.offset)))
    # HR: the 1 m NAIP area-averaged over 2.5 m; at LR resolution that is a 10 x 10 block mean.
    href = job.pair.hr.assets["red"].href
    with rasterio.open(href) as src:
        win = rasterio.windows.from_bounds(*grids.lr.bounds, transform=src.transform)
        naip = src.read(1, window=win.round_offsets().round_lengths()).astype(np.float64) / 255.0
    np.testing.assert_allclose(block_mean(hr[0], 4), block_mean(naip, 10), atol=2e-6)
    chip = read_chip_folder(folder)
    meta = chip.metadata
    for key in (
        "roi_id", "test", "s2_id", "s2_date", "s2_sen2cor_version", "s2_view_off_nadir",
        "s2_view_sun_azimuth", "s2_view_sun_elevation", "naip_id", "naip_date", "proj:epsg",
        "proj:geometry", "proj:centroid", "proj:transform", "QA_1", "QA_2", "dt_hours",
        "shift_dx_px", "shift_dy_px", "recipe", "harvest_version", "config_hash",
    ):  # fmt: skip
        assert key in meta, key
    assert meta["proj:transform"] == list(grids.lr.transform_tuple)
    assert meta["s2_id"] == job.pair.lr.item_id and meta["naip_id"] == job.pair.hr.item_id
    assert math.isclose(meta["proj:centroid"]["lon"], job.lon_deg, abs_tol=1e-3)


def test_manifest_one_row_per_chip_with_checksums(fetched: dict[str, Any]) -> None:
    import geopandas as gpd

    from harvest.store import sha256_file

    out: Path = fetched["out"]
    m = gpd.read_parquet(out / "manifest.parquet")
    assert sorted(m["roi_id"]) == sorted(j.roi_id for j in fetched["jobs"])
    assert m.crs.to_epsg() == 4326
    for row in m.itertuples():
        folder = out / row.folder
        assert (CROSS_SENSOR_DIR if row.status == "kept" else REJECTED_DIR) in row.folder
        assert row.sha256_lr == sha256_file(folder / "LR.tif")
        assert row.sha256_hr == sha256_file(folder / "HR.tif")
        assert row.sha256_metadata == sha256_file(folder / "metadata.json")


def test_qa_rerun_with_other_thresholds_moves_chips(
    fetched: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(fetched["out"], out)
    strict = run_qa(out, QaThresholds(max_shift_px=0.2))
    status = _status(out)
    moved = [r for r, st in status.items() if "shift" in st["reasons"].split(";")]
    assert moved, "the shifted ks/wa chips exceed 0.2 px"
    for rid in moved:
        assert (out / REJECTED_DIR / rid).is_dir() and not (out / CROSS_SENSOR_DIR / rid).exists()
    assert strict.n_kept < fetched["summary"].n_kept
    loose = run_qa(out, QaThresholds())
    assert loose.n_kept == fetched["summary"].n_kept
    from harvest.store import sha256_file

    for st in _status(out).values():
        if st["status"] != "failed":  # the checksums name the files QA rewrote and moved
            folder = out / st["folder"]
            assert st["sha256"]["metadata.json"] == sha256_file(folder / "metadata.json")
            assert st["sha256"]["HR.tif"] == sha256_file(folder / "HR.tif")
    with pytest.raises(StoreError):
        run_qa(tmp_path / "nothing-here")


def test_shift_correction_aligns_the_lr_chip(demo_world: Path, tmp_path: Path) -> None:
    jobs = [j for j in demo_jobs(demo_world) if j.pair.lr.item_id.startswith("S2A_MSIL2A_2023")]
    assert len(jobs) == 1  # us-ks 2023: truth shift (-0.57, -5.24) m, about half a pixel
    run_fetch(jobs, RECIPE, tmp_path / "ds", correct_shift=True)
    out = tmp_path / "ds"
    meta = json.loads((out / CROSS_SENSOR_DIR / jobs[0].roi_id / "metadata.json").read_text())
    assert meta["shift_corrected"] is True and abs(meta["shift_dy_px"]) > 0.4
    again = run_qa(out)
    assert again.n_kept == 1
    qa = _status(out)[jobs[0].roi_id]["qa"]
    assert math.hypot(qa["shift_dx_px"], qa["shift_dy_px"]) < 0.15


def _copy_world_scenes(jobs: list[FetchJob], world: Path, dst: Path) -> list[FetchJob]:
    """Copy the scenes the jobs read into ``dst`` and point the jobs' assets there."""

    def moved(scene: SceneRef) -> SceneRef:
        assets = {}
        for band, ref in scene.assets.items():
            rel = Path(ref.href).relative_to(world)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (dst / rel).exists():
                shutil.copy2(ref.href, dst / rel)
            assets[band] = replace(ref, href=str(dst / rel))
        return replace(scene, assets=AssetMap(assets))

    return [
        replace(j, pair=replace(j.pair, lr=moved(j.pair.lr), hr=moved(j.pair.hr))) for j in jobs
    ]


def test_truncated_cog_fails_one_chip_on_a_two_worker_cluster(
    demo_world: Path, tmp_path: Path, fetched: dict[str, Any]
) -> None:
    jobs = _copy_world_scenes(demo_world_jobs := demo_jobs(demo_world), demo_world, tmp_path / "w")
    assert len(jobs) == len(demo_world_jobs)
    broken = Path(jobs[2].pair.hr.assets["red"].href)  # NAIP of us-ks 2021
    size = broken.stat().st_size
    with open(broken, "r+b") as fh:
        fh.truncate(size // 2)
    out = tmp_path / "ds"
    summary = run_fetch(jobs, RECIPE, out, workers=2)
    status = _status(out)
    failed = {r: st for r, st in status.items() if st["status"] == "failed"}
    assert list(failed) == [jobs[2].roi_id]
    assert broken.name in failed[jobs[2].roi_id]["error"]
    assert summary.n_failed == 1 and summary.n_kept + summary.n_rejected == len(jobs) - 1
    import geopandas as gpd

    m = gpd.read_parquet(out / "manifest.parquet")
    row = m[m["roi_id"] == jobs[2].roi_id].iloc[0]
    assert row["status"] == "failed" and broken.name in row["error"]
    # The cluster wrote the other chips byte for byte as the serial run did.
    serial = gpd.read_parquet(fetched["out"] / "manifest.parquet").set_index("roi_id")
    for r in m[m["status"] != "failed"].itertuples():
        assert r.sha256_lr == serial.loc[r.roi_id, "sha256_lr"]
        assert r.sha256_hr == serial.loc[r.roi_id, "sha256_hr"]
        assert r.status == serial.loc[r.roi_id, "status"]
    # Resume: finished chips are skipped, the failed one is tried again (and fails again).
    again = run_fetch(jobs, RECIPE, out, workers=1)
    assert again.n_done_before == len(jobs) - 1 and again.n_failed == 1
    # Repaired file: the retry succeeds.
    shutil.copy2(Path(demo_world_jobs[2].pair.hr.assets["red"].href), broken)
    fixed = run_fetch(jobs, RECIPE, out)
    assert fixed.n_failed == 0 and fixed.n_kept + fixed.n_rejected == len(jobs)


def test_reader_errors_name_the_file_and_transient_errors_are_retried(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tif")
    with pytest.raises(AssetReadError, match="nope.tif"):
        with_retries(lambda: rasterio.open(missing), missing, ReadRetryPolicy())
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise rasterio.errors.RasterioIOError("HTTP response code: 503")
        return 7

    policy = ReadRetryPolicy(attempts=4)
    assert with_retries(flaky, "https://x/a.tif", policy, sleep=waits.append) == 7
    assert len(calls) == 3 and len(waits) == 2 and waits[1] > waits[0] * 1.2

    def always_times_out() -> int:
        calls.append(1)
        raise TimeoutError("timed out")

    calls.clear()
    with pytest.raises(ReadError, match="3 tries"):
        with_retries(
            always_times_out, "https://x/a.tif", ReadRetryPolicy(attempts=3), sleep=waits.append
        )
    assert len(calls) == 3
    assert is_transient(ConnectionResetError("reset"))
    assert not is_transient(rasterio.errors.RasterioIOError("TIFFReadEncodedTile() failed"))


def test_reader_signs_hrefs_right_before_reading(demo_world: Path) -> None:
    job = demo_jobs(demo_world)[1]
    seen: list[str] = []

    def sign(href: str) -> str:
        seen.append(href)
        return href

    reader = RasterioReader(sign=sign, threads=1)
    chip = reader.read(job.pair.lr.assets, RECIPE.lr.bands, job.grids(RECIPE).lr)
    assert chip.data.dtype == np.float32 and not chip.invalid.any()
    assert sorted(seen) == sorted(job.pair.lr.assets[b].href for b in RECIPE.lr.bands)
    assert job.pair.lr.assets["B04"].href in seen  # the job's own hrefs stay unsigned
    reader.close()


def test_split_is_seeded_blocked_and_keeps_the_gap() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    lon = rng.uniform(-110, -80, n)
    lat = rng.uniform(30, 45, n)
    ids = [f"ROI_{i:06d}" for i in range(n)]
    split = assign_split(ids, lon, lat, seed=1, min_gap_km=5.0)
    assert split == assign_split(ids, lon, lat, seed=1, min_gap_km=5.0)
    assert split != assign_split(ids, lon, lat, seed=2, min_gap_km=5.0)
    test = np.array([split[i] == "test" for i in ids])
    assert 0.1 < test.mean() < 0.3
    # Brute force: no test centre within 5 km (great circle) of a train centre.
    phi, lam = np.radians(lat), np.radians(lon)
    t, r = np.flatnonzero(test), np.flatnonzero(~test)
    dphi = phi[t][:, None] - phi[r][None, :]
    dlam = lam[t][:, None] - lam[r][None, :]
    h = (
        np.sin(dphi / 2) ** 2
        + np.cos(phi[t])[:, None] * np.cos(phi[r])[None, :] * np.sin(dlam / 2) ** 2
    )
    dist_km = 2 * 6371.0088 * np.arcsin(np.sqrt(h))
    assert dist_km.min() >= 5.0


def test_fast_area_average_equals_gdal_warp(demo_world: Path) -> None:
    from affine import Affine

    from harvest.grid import ChipGrid

    jobs = demo_jobs(demo_world, ((0.0, 0.0), (-437.5, 211.25)))
    fast, warp = RasterioReader(threads=1), RasterioReader(threads=1, fast_average=False)
    for job in jobs[1:3] + jobs[8:10]:
        grid = job.grids(RECIPE).hr
        a = fast.read(job.pair.hr.assets, RECIPE.hr.bands, grid, "average").data
        b = warp.read(job.pair.hr.assets, RECIPE.hr.bands, grid, "average").data
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # With nodata (the us-nc swath edge), at 20 m: nodata drops out of each average.
    nc = next(j for j in jobs if "T18STE" in j.pair.lr.item_id)
    lr = nc.grids(RECIPE).lr
    corner = Affine(20.0, 0.0, lr.transform.c, 0.0, -20.0, lr.transform.f)
    g20 = ChipGrid(lr.epsg, corner, 60, 60, 20.0)
    a = fast.read(nc.pair.lr.assets, ["B04"], g20, "average")
    b = warp.read(nc.pair.lr.assets, ["B04"], g20, "average")
    assert a.invalid.any() and not a.invalid.all()
    np.testing.assert_array_equal(a.invalid, b.invalid)
    np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-6)


def test_existing_scheduler_address_and_progress_bar(
    demo_world: Path, tmp_path: Path, fetched: dict[str, Any]
) -> None:
    from distributed import LocalCluster

    jobs = demo_jobs(demo_world)[1:3]
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        summary = run_fetch(
            jobs, RECIPE, tmp_path / "ds", scheduler=cluster.scheduler_address, progress=True
        )
    assert summary.n_kept == 2 and summary.n_failed == 0
    mine = _status(tmp_path / "ds")
    serial = _status(fetched["out"])
    for job in jobs:
        assert mine[job.roi_id]["sha256"]["HR.tif"] == serial[job.roi_id]["sha256"]["HR.tif"]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "no-port-here"])
def test_an_unreachable_scheduler_is_a_config_error_before_anything_is_written(
    demo_world: Path, tmp_path: Path, address: str
) -> None:
    import dask

    from harvest.errors import ConfigError

    jobs = demo_jobs(demo_world)[:2]
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ConfigError, match="cannot reach the Dask scheduler at .*--scheduler"),
    ):
        run_fetch(jobs, RECIPE, tmp_path / "ds", scheduler=address)
    assert not (tmp_path / "ds").exists()


def test_repeated_roi_ids_are_a_one_line_input_error(demo_world: Path, tmp_path: Path) -> None:
    from harvest.errors import InputFileError

    job = demo_jobs(demo_world)[0]
    with pytest.raises(InputFileError, match="ROI_00001"):
        run_fetch([job, job], RECIPE, tmp_path / "ds")


def test_fast_nearest_equals_gdal_warp(demo_world: Path) -> None:
    """Nested grids read as plain windows give the WarpedVRT's values; others still warp."""
    from affine import Affine

    from harvest.backends.gdal.reader import _nearest_aligned
    from harvest.grid import ChipGrid

    jobs = demo_jobs(demo_world, ((0.0, 0.0), (-437.5, 211.25)))
    fast, warp = RasterioReader(threads=1), RasterioReader(threads=1, fast_nearest=False)
    nc = next(j for j in jobs if "T18STE" in j.pair.lr.item_id)  # crosses the swath edge
    edge_seen = False
    for job in [*jobs[:4], nc]:
        lr = job.grids(RECIPE).lr
        half = ChipGrid(lr.epsg, lr.transform @ Affine.translation(0.5, 0.0), 121, 121, 10.0)
        for grid in (lr, half):
            a = fast.read(job.pair.lr.assets, RECIPE.lr.bands, grid)
            b = warp.read(job.pair.lr.assets, RECIPE.lr.bands, grid)
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.invalid, b.invalid)
            edge_seen |= bool(a.invalid.any())
            # SCL is stored at 20 m: each source pixel covers 2 x 2 chip pixels.
            scl = job.pair.lr.assets["SCL"]
            np.testing.assert_array_equal(fast.read_raw(scl, grid), warp.read_raw(scl, grid))
        with rasterio.open(job.pair.lr.assets["B04"].href) as ds:
            assert _nearest_aligned(ds, [1], lr, ds.nodata) is not None
            assert _nearest_aligned(ds, [1], half, ds.nodata) is None
        with rasterio.open(job.pair.lr.assets["SCL"].href) as ds:
            assert ds.res == (20.0, 20.0)
            assert _nearest_aligned(ds, [1], lr, ds.nodata) is not None
    assert edge_seen, "the us-nc chip should hold nodata pixels"


def test_local_reads_are_serial_remote_reads_parallel() -> None:
    from harvest.backends.gdal.reader import is_remote

    assert not is_remote("/data/B04.tif") and not is_remote("file:///data/B04.tif")
    assert not is_remote("/vsimem/x.tif")
    assert is_remote("https://example.com/B04.tif") and is_remote("s3://bucket/B04.tif")
    assert is_remote("/vsicurl/https://example.com/B04.tif")


def test_scene_order_keeps_scenes_together(demo_world: Path) -> None:
    from harvest.stages.fetch import scene_batches, scene_order

    jobs = demo_jobs(demo_world, tuple((dx, 0.0) for dx in (-400.0, -200.0, 0.0, 200.0, 400.0)))
    shuffled = [jobs[i] for i in np.random.default_rng(3).permutation(len(jobs))]
    ordered = scene_order(shuffled)
    assert sorted(j.roi_id for j in ordered) == sorted(j.roi_id for j in jobs)
    keys = [(j.pair.lr.item_id, j.pair.hr.item_id) for j in ordered]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys)) == 7  # each scene pair in one run of 5
    assert runs[0] == (shuffled[0].pair.lr.item_id, shuffled[0].pair.hr.item_id)
    # Within a scene the input order stays.
    first = [j.roi_id for j in shuffled if j.pair.lr.item_id == runs[0][0]]
    assert [j.roi_id for j in ordered[:5]] == first
    # Batches: one scene pair each, 5 chips in at most 2 per batch -> sizes 2, 2, 1.
    batches = scene_batches(shuffled, 2)
    assert [j.roi_id for b in batches for j in b] == [j.roi_id for j in ordered]
    assert all(len({(j.pair.lr.item_id, j.pair.hr.item_id) for j in b}) == 1 for b in batches)
    assert [len(b) for b in batches] == [2, 2, 1] * 7


def test_lost_task_keeps_the_chips_it_finished(
    demo_world: Path, tmp_path: Path, fetched: dict[str, Any]
) -> None:
    """A lost Dask task: a chip written before the loss stays kept, another becomes failed."""
    from harvest.stages.fetch import _recorded_or_failed

    out = tmp_path / "ds"
    shutil.copytree(fetched["out"], out)
    done, lost = fetched["jobs"][0], fetched["jobs"][1]
    (out / ".harvest" / "status" / f"{lost.roi_id}.json").unlink()
    exc = RuntimeError("worker died")
    kept = _recorded_or_failed(out, done, "train", exc, CROSS_SENSOR_DIR)
    assert kept.to_json() == _status(out)[done.roi_id]
    failed = _recorded_or_failed(out, lost, "train", exc, CROSS_SENSOR_DIR)
    assert failed.status == "failed" and "worker died" in (failed.error or "")
    assert _status(out)[lost.roi_id]["status"] == "failed"


def test_local_cluster_workers_keep_freed_memory() -> None:
    """Workers keep freed memory (Dask's 64 KiB trim threshold made chips 1.6x slower) and
    run without the statistical profiler."""
    import os

    from distributed import Client

    from harvest.stages.fetch import local_cluster

    def probe() -> tuple[dict[str, str], bool]:
        import dask

        return dict(os.environ), dask.config.get("distributed.worker.profile.enabled")

    with local_cluster(1) as cluster, Client(cluster) as client:
        env, profiling = next(iter(client.run(probe).values()))
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) >= 64 * 1024 * 1024
    assert int(env["MALLOC_MMAP_THRESHOLD_"]) >= 1024 * 1024
    assert profiling is False


def test_two_local_clusters_at_once_start_without_port_warnings() -> None:
    """Two fetch runs on one machine: neither cluster's HTTP server fights for port 8787."""
    import warnings

    from harvest.stages.fetch import local_cluster

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with local_cluster(1) as first, local_cluster(1) as second:
            assert first.scheduler_address != second.scheduler_address
    assert not [w for w in caught if "already in use" in str(w.message)]
