"""`harvest build configs/builds/demo-sentinel-hr.yaml`: the Sentinel-HR series as Zarr stacks.

On the demo world (two VENuS dates per VENuS site, each with a same-day Sentinel-2 scene; the
VENuS bands are a gain and offset of the S2 landscape, displaced by known shifts): the guides
must be the world's VENuS dates thinned to the revisit, the targets the others with their S2,
registered close to the truth and mapped onto VENuS's radiometry, and the stores must read back
as CF-style Zarr (time, projected x/y, grid mapping, int16 with a scale factor and fill value).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from pyproj import CRS

from harvest.backends.base import Footprint, SearchRequest
from harvest.backends.memory import MemoryCatalog
from harvest.backends.registry import open_catalog
from harvest.demo.truth import load_truth
from harvest.recipes import load_recipe
from harvest.sentinel_hr import resample, thin_guides
from harvest.stages import _sentinel_hr as sentinel_hr

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "builds" / "demo-sentinel-hr.yaml"
REVISIT_DAYS = 30  # the demo twin's guide_revisit_days


def build(out: Path, world: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", "build", str(CONFIG), "--set", f"output={out}",
         "--set", f"catalog.world={world}", "--no-progress", *extra],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sentinel-hr") / "ds"
    res = build(out, demo_world)
    assert res.returncode == 0, res.stderr
    return {"out": out, "stdout": res.stdout, "world": demo_world}


def _venus_sites(world: Path) -> dict[str, list[Any]]:
    truth = load_truth(world / "truth.json")
    sites: dict[str, list[Any]] = {}
    for s in truth.scenes:
        if s.collection == "venus-l2a":
            sites.setdefault(s.site_id, []).append(s)
    return {k: sorted(v, key=lambda s: s.datetime) for k, v in sites.items()}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_guides_and_targets_follow_the_worlds_dates(built: dict[str, Any]) -> None:
    out, world = built["out"], built["world"]
    truth = load_truth(world / "truth.json")
    venus_sites = _venus_sites(world)
    assert venus_sites
    n_guides = n_targets = 0
    for site, scenes in venus_sites.items():
        dates = [_when(s.datetime) for s in scenes]
        guides = thin_guides(dates, REVISIT_DAYS)
        others = [s for i, s in enumerate(scenes) if i not in guides]
        guides_ds = xr.open_zarr(out / site / "guides.zarr")
        targets_ds = xr.open_zarr(out / site / "targets.zarr")
        assert list(guides_ds.attrs["venus_products"]) == [scenes[i].item_id for i in guides]
        want_times = [np.datetime64(dates[i].replace(tzinfo=None), "ns") for i in guides]
        assert list(guides_ds.time.values) == want_times
        # Every non-guide VENuS date has its same-day S2 in the world: all are targets.
        assert list(targets_ds.attrs["venus_products"]) == [s.item_id for s in others]
        for s2_id, v_id in zip(
            targets_ds.attrs["sentinel2_products"], targets_ds.attrs["venus_products"], strict=True
        ):
            s2 = next(s for s in truth.scenes if s.item_id == s2_id)
            v = next(s for s in truth.scenes if s.item_id == v_id)
            assert abs((_when(s2.datetime) - _when(v.datetime)).total_seconds()) < 86400
        n_guides += len(guides)
        n_targets += len(others)
    record = json.loads((out / "dataset.json").read_text())
    counts = record["counts"]
    assert counts["guide_dates"] == n_guides and counts["target_dates"] == n_targets >= 2
    assert counts["sites_written"] == len(venus_sites)
    # Sites without VENuS are dropped, each with its reason, in the record and the card.
    card = (out / "README.md").read_text()
    assert f"| target dates (S2 + VENuS < 1 day apart) | {n_targets} |" in card
    assert len(record["dropped_sites"]) == counts["sites"] - len(venus_sites)
    for d in record["dropped_sites"]:
        assert d["reason"] == "no VENuS scene over the site"
        assert f"- {d['site']}: {d['reason']}" in card


def test_targets_are_registered_and_mapped_onto_venus(built: dict[str, Any]) -> None:
    out, world = built["out"], built["world"]
    truth = load_truth(world / "truth.json")
    for site in _venus_sites(world):
        t = xr.open_zarr(out / site / "targets.zarr")
        for k, (s2_id, v_id) in enumerate(
            zip(t.attrs["sentinel2_products"], t.attrs["venus_products"], strict=True)
        ):
            s2 = next(s for s in truth.scenes if s.item_id == s2_id)
            v = next(s for s in truth.scenes if s.item_id == v_id)
            # S2 relative to VENuS in 10 m px (dy southwards); the truth's are (east, north) m.
            want = ((s2.shift_m[0] - v.shift_m[0]) / 10, -(s2.shift_m[1] - v.shift_m[1]) / 10)
            assert np.allclose(t.shift_px.values[k], want, atol=0.15), (site, want)
            # The LR is S2 on VENuS's radiometry: against the VENuS reference brought to 25 m
            # the paper's bounds (MAE < 0.01, RMSE < 0.03) hold with a wide margin.
            ref25 = resample(t.reference.values[k], 5.0, 25.0)
            err = t.lr.values[k] - ref25
            ok = np.all(np.isfinite(err), axis=0)
            assert ok.mean() > 0.5
            mae = np.abs(err[:, ok]).mean(axis=1)
            rmse = np.sqrt((err[:, ok] ** 2).mean(axis=1))
            assert np.all(mae < 0.005) and np.all(rmse < 0.01), (site, mae, rmse)


def test_the_stores_are_cf_style_zarr(built: dict[str, Any]) -> None:
    out, world = built["out"], built["world"]
    for site in _venus_sites(world):
        status = json.loads((out / ".harvest" / "sentinel-hr" / f"{site}.json").read_text())
        grid = status["grid"]
        a, _, c, _, e, f = grid["transform"]
        t = xr.open_zarr(out / site / "targets.zarr")
        g = xr.open_zarr(out / site / "guides.zarr")
        assert t.attrs["Conventions"] == "CF-1.8" and t.attrs["lr_gsd_m"] == 25.0
        assert g.reflectance.dims == ("time", "band", "y", "x")
        assert t.lr.dims == ("time", "band", "y_lr", "x_lr")
        assert list(t.band.values) == ["B02", "B03", "B04", "B08"]
        assert list(t.venus_band.values) == ["B3", "B4", "B7", "B11"]
        # Pixel centres in metres of the site's UTM zone; the 25 m grid nests in the 5 m one.
        assert a == 5.0 and e == -5.0
        assert g.x.values[0] == c + 2.5 and g.y.values[0] == f - 2.5
        assert t.x_lr.values[0] == c + 12.5 and t.y_lr.values[0] == f - 12.5
        assert t.sizes["x_lr"] * 25 <= grid["width"] * 5 < (t.sizes["x_lr"] + 1) * 25
        assert g.x.attrs["standard_name"] == "projection_x_coordinate" and g.x.attrs["units"] == "m"
        for ds, name in ((g, "reflectance"), (t, "lr"), (t, "reference")):
            var = ds[name]
            assert var.attrs["grid_mapping"] == "spatial_ref"
            assert var.encoding["dtype"] == np.int16
            assert var.encoding["scale_factor"] == pytest.approx(1e-4)
            assert var.encoding["_FillValue"] == -32768
            assert CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg() == grid["epsg"]
            values = var.values
            assert 0 < np.nanmean(values) < 1  # decoded reflectance
        # The raw int16 on disk: invalid pixels hold the fill value, decoded as NaN.
        raw = xr.open_zarr(out / site / "targets.zarr", mask_and_scale=False)
        assert raw.lr.dtype == np.int16
        assert (np.isnan(t.lr.values) == (raw.lr.values == -32768)).all()


def test_a_prediction_is_evaluated_against_the_targets_store(
    built: dict[str, Any], tmp_path: Path
) -> None:
    out, world = built["out"], built["world"]
    site = sorted(_venus_sites(world))[0]
    t = xr.open_zarr(out / site / "targets.zarr")
    # A perfect prediction: the reference itself, under another name and without the CRS.
    pred = xr.Dataset(
        {"prediction": (("time", "band", "y", "x"), t.reference.values)},
        coords={"time": t.time.values, "band": t.band.values, "y": t.y.values, "x": t.x.values},
    )
    pred.to_zarr(tmp_path / "pred.zarr", zarr_format=2)
    report = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "evaluate", str(tmp_path / "pred.zarr"),
         str(out / site / "targets.zarr"), "-o", str(report), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    scores = json.loads(report.read_text())
    # NDVI takes S2's red and NIR (VENuS B7 and B11), found by the band names.
    assert scores["ndvi_bands"] == ["B04", "B08"] and scores["ref"].endswith("targets.zarr")

    def rmses(node: Any) -> list[float]:
        if isinstance(node, dict):
            here = [float(node["rmse"])] if "rmse" in node else []
            return here + [x for v in node.values() for x in rmses(v)]
        return []

    found = rmses(scores["scores"])
    assert len(found) >= 15 and max(found) < 1e-4  # 4 bands + NDVI, 3 strata; int16 rounding


def test_a_second_build_does_nothing_and_extend_finds_nothing_new(built: dict[str, Any]) -> None:
    out = built["out"]

    def files() -> dict[str, bytes]:
        return {
            str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.rglob("*"))
            if p.is_file()
            and ".harvest" not in p.parts
            and p.name not in ("dataset.json", "CHANGELOG.md")
        }

    before = files()
    res = build(out, built["world"])
    assert res.returncode == 0, res.stderr
    assert "0 written" in res.stdout and "done before" in res.stdout
    assert files() == before
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--n", "2", "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 1 and "covers whole sites" in res.stderr


def test_a_site_whose_series_grows_is_rewritten_and_the_others_skipped(
    demo_world: Path, tmp_path: Path
) -> None:
    # The catalog first lacks each site's last VENuS date, then has it: the run over the full
    # catalog rewrites exactly the sites whose selection changed.
    recipe = load_recipe("sentinel-hr")
    sites = sentinel_hr.read_sites(demo_world / "sites.geojson")
    everything = open_catalog(str(demo_world)).catalog.search(
        SearchRequest(
            footprints=tuple(Footprint(s.name, s.geometry) for s in sites),
            collections=("sentinel-2-l2a", "venus-l2a"),
            start=datetime(2015, 1, 1, tzinfo=UTC),
            end=datetime(2030, 1, 1, tzinfo=UTC),
        )
    )
    venus = sorted(everything.by_collection("venus-l2a"), key=lambda s: s.datetime)
    grown = venus[-1]  # the latest VENuS date of the world, at one site
    early = MemoryCatalog([s for s in everything.scenes if s.item_id != grown.item_id])
    full = MemoryCatalog(everything.scenes)
    kwargs = {
        "recipe": recipe,
        "readers": None,
        "out_dir": tmp_path,
        "start": date(2015, 1, 1),
        "end": date(2030, 1, 1),
        "ratio": 5.0,
        "guide_revisit_days": float(REVISIT_DAYS),
    }
    first = sentinel_hr.run_sites(demo_world / "sites.geojson", catalog=early, **kwargs)
    grown_site = next(s.name for s in sites if s.geometry.intersects(grown.geometry))
    # Without its last date the site has a guide and no target: dropped, nothing written.
    assert "no target date" in dict(first.dropped)[grown_site]
    assert not (tmp_path / grown_site).exists()
    second = sentinel_hr.run_sites(demo_world / "sites.geojson", catalog=full, **kwargs)
    assert second.n_written == 1 and second.n_done_before == len(sites) - 1
    assert (tmp_path / grown_site / "targets.zarr").is_dir()
    third = sentinel_hr.run_sites(demo_world / "sites.geojson", catalog=full, **kwargs)
    assert third.n_written == 0 and third.n_done_before == len(sites)


def test_a_plain_region_finds_the_venus_sites_in_the_catalog(
    demo_world: Path, tmp_path: Path
) -> None:
    # A polygon without a site column (as world-land or conus): the sites are the VENuS scenes
    # inside it, grouped by the site in their product id, each the union of its footprints.
    truth = load_truth(demo_world / "truth.json")
    venus = [s for s in truth.scenes if s.collection == "venus-l2a"]
    plain = tmp_path / "plain.geojson"
    plain.write_text(
        json.dumps(
            {"type": "Feature", "properties": {},
             "geometry": {"type": "Polygon",
                          "coordinates": [[[-10, 20], [40, 20], [40, 50], [-10, 50], [-10, 20]]]}}
        )
    )  # fmt: skip
    catalog = open_catalog(str(demo_world)).catalog
    recipe = load_recipe("sentinel-hr")
    sites = sentinel_hr.resolve_sites(plain, catalog, recipe, date(2015, 1, 1), date(2030, 1, 1))
    want = sorted({s.item_id.split("_L2A_")[1].split("_")[0] for s in venus})
    assert [s.name for s in sites] == want == ["FR-LAM", "ISR-SDE"]
    out = tmp_path / "ds"
    res = build(out, demo_world, "--set", f"region={plain}")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir() if (p / "targets.zarr").is_dir()) == want
    # A region where the catalog has no VENuS scene: one line naming the way out.
    empty = tmp_path / "empty.geojson"
    empty.write_text(plain.read_text().replace("-10", "100").replace("40", "120"))
    res = build(tmp_path / "ds2", demo_world, "--set", f"region={empty}")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "give a polygon file of the sites" in res.stderr
