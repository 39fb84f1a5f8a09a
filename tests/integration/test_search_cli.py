"""`harvest search` end to end on the demo world: a real pgstac STAC API and its stac-geoparquet.

ROIs sit at the centre of every demo site (their chips lie inside the site, which every scene of
the site covers), one far out at sea (no scene at all) and one near a site's edge (its chip
sticks out of every scene). The expected pairs are truth.json's: the world's own record of which
scene pairs exist, computed from the schedule it rendered, not by harvest's pairing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pyproj import Transformer
from stac_server import FaultProxy

from harvest.demo.truth import WorldTruth, load_truth
from harvest.geoio import read_harvest_metadata, write_points_geoparquet
from harvest.pairing import DropReason
from harvest.recipes import load_recipe
from harvest.tables import PairsTable, read_dropped, read_pairs

HARVEST = str(Path(sys.executable).parent / "harvest")
SEA_ROI = "ROI_000090"
EDGE_ROI = "ROI_000091"
# The demo world's scenes span 2019-2023; sen12's recipe window (2016-12..2017-11) does not.
SEN12_WINDOW = ("--start", "2019-01-01", "--end", "2023-12-31")


def harvest(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    # The demo world is only found through the environment when a test says so.
    full_env = {k: v for k, v in os.environ.items() if k != "HARVEST_DEMO_WORLD"}
    full_env.update(env or {})
    return subprocess.run(
        [HARVEST, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=full_env,
    )


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def truth(demo_world: Path) -> WorldTruth:
    return load_truth(demo_world)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, truth: WorldTruth) -> Path:
    """ROI table and a sen12 recipe whose chip fits the demo sites."""
    root = tmp_path_factory.mktemp("search")
    ids = [f"ROI_{k + 1:06d}" for k in range(len(truth.sites))]
    lon = [s.lon for s in truth.sites]
    lat = [s.lat for s in truth.sites]
    # Edge ROI: 300 m inside the first site's west edge, so a 1210 m chip sticks out by ~300 m.
    site = truth.sites[0]
    to_ll = Transformer.from_crs(site.utm_epsg, 4326, always_xy=True)
    ex, ey = to_ll.transform(site.bounds.xmin + 300.0, (site.bounds.ymin + site.bounds.ymax) / 2)
    ids += [SEA_ROI, EDGE_ROI]
    lon += [-30.0, ex]
    lat += [40.0, ey]
    write_points_geoparquet(root / "rois.parquet", np.array(lon), np.array(lat), {"roi_id": ids})
    # SEN1-2's 256 px chip (2560 m) is wider than a 2400 m demo site: the same recipe with a
    # 120 px chip pairs the site centres.
    sen12 = load_recipe("sen12").model_dump(mode="json")
    sen12["lr"]["groups"][0]["chip_px"] = sen12["hr"]["groups"][0]["chip_px"] = 120
    (root / "sen12-demo.yaml").write_text(yaml.safe_dump(sen12))
    return root


def site_of(truth: WorldTruth) -> dict[str, str]:
    return {f"ROI_{k + 1:06d}": s.site_id for k, s in enumerate(truth.sites)}


def recipe_arg(recipe: str, work: Path) -> list[str]:
    if recipe == "sen12":
        return ["--recipe", str(work / "sen12-demo.yaml"), *SEN12_WINDOW]
    return ["--recipe", recipe]


def expected_drops(truth: WorldTruth, recipe: str, demo_world: Path) -> dict[str, set[str]]:
    """Drop reason(s) each unpaired ROI may have, from the items each site holds.

    An item counts when the search can return it: inside the window and, where it has a cloud
    cover, within the recipe's scene cloud limit (sent to the server as a filter).
    """
    from harvest.demo.stac import item_dicts_absolute

    rec = load_recipe(recipe)
    first = SEN12_WINDOW[1] if recipe == "sen12" else str(rec.start)
    last = SEN12_WINDOW[3] if recipe == "sen12" else str(rec.end or "9999-12-31")
    site_by_item = {s.item_id: s.site_id for s in truth.scenes}
    have = set()
    for item in item_dicts_absolute(demo_world):
        props = item["properties"]
        cloud = props.get("eo:cloud_cover")
        if first <= props["datetime"][:10] <= last and (
            cloud is None or cloud <= rec.max_scene_cloud_pct
        ):
            have.add((site_by_item[item["id"]], item["collection"]))
    paired_sites = {p.site_id for p in truth.pairs_for(recipe)}
    out: dict[str, set[str]] = {SEA_ROI: {DropReason.NO_LR_SCENE.value}}
    for roi, site in site_of(truth).items():
        if site in paired_sites:
            continue
        if (site, rec.lr.collection) not in have:
            out[roi] = {DropReason.NO_LR_SCENE.value}
        elif (site, rec.hr.collection) not in have:
            out[roi] = {DropReason.NO_HR_SCENE.value}
        else:
            out[roi] = {DropReason.CLOUDY.value, DropReason.NO_PAIR_IN_TIME_WINDOW.value}
    first_site = truth.sites[0].site_id
    if first_site in paired_sites:
        out[EDGE_ROI] = {DropReason.PARTIAL_COVERAGE.value}
    else:
        out[EDGE_ROI] = out[f"ROI_{1:06d}"]
    return out


def check_against_truth(table: PairsTable, truth: WorldTruth, recipe: str, all_rows: bool) -> None:
    sites = site_of(truth)
    want = {(p.site_id, p.lr_item_id, p.hr_item_id): p.dt_hours for p in truth.pairs_for(recipe)}
    assert want, f"the demo world has no {recipe} pairs"
    got: dict[tuple[str, str, str], float] = {}
    for row in table.rows:
        assert row.roi_id in sites, f"{row.roi_id} should have been dropped"
        key = (sites[row.roi_id], row.pair.lr.item_id, row.pair.hr.item_id)
        got[key] = row.pair.dt_hours
        assert row.pair.lr_coverage_pct == 100.0 and row.pair.hr_coverage_pct == 100.0
        assert row.chip_epsg == row.utm_epsg == truth.site(sites[row.roi_id]).utm_epsg
        assert row.pair.lr.assets and row.pair.hr.assets
        for ref in (*row.pair.lr.assets.values(), *row.pair.hr.assets.values()):
            assert Path(ref.href).is_file(), ref.href  # readable without the catalog
    if all_rows:
        assert set(got) == set(want)
        # pairing's dt is t_hr - t_lr; truth's is t_lr - t_hr.
        for key, dt in got.items():
            assert dt == pytest.approx(-want[key], abs=1e-3)
        per_roi: dict[str, list[int]] = {}
        for row in table.rows:
            per_roi.setdefault(row.roi_id, []).append(row.rank)
        assert all(ranks == list(range(len(ranks))) for ranks in per_roi.values())
    else:
        assert all(r.rank == 0 for r in table.rows)
        assert set(got) <= set(want)
        assert {k[0] for k in got} == {k[0] for k in want}  # one pair for every paired site
        for key in got:  # the chosen pair has the smallest |dt| of its site
            best = min(abs(dt) for k, dt in want.items() if k[0] == key[0])
            assert abs(got[key]) == pytest.approx(best, abs=1e-3)


@pytest.fixture(scope="module")
def proxy(demo_stac: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(demo_stac.server.url)
    try:
        yield p
    finally:
        p.close()


RECIPES = ("sen2naip", "sen2venus", "sen12")


@pytest.mark.parametrize("recipe", RECIPES)
def test_api_and_geoparquet_find_exactly_the_true_pairs(
    recipe: str, work: Path, truth: WorldTruth, demo_world: Path, proxy: FaultProxy
) -> None:
    api_out = work / f"{recipe}-api.parquet"
    proxy.plan([])
    proc = harvest(
        "search", "rois.parquet", *recipe_arg(recipe, work), "--catalog", proxy.url,
        "--profile", "demo", "-o", api_out.name, "--all-candidates", "--no-progress", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    api = read_pairs(api_out)
    check_against_truth(api, truth, recipe, all_rows=True)
    # Every request the CLI sent is in the log, and the table records that many.
    assert api.metadata.n_requests == len(proxy.log)
    # Batched: fewer searches than one per ROI and collection, even for ROIs spread over three
    # continents (the bench measures the ratio at 18,000 ROIs).
    n_rois = len(truth.sites) + 2
    assert 2 <= len(proxy.searches()) < 2 * n_rois
    assert f"in {api.metadata.n_requests} requests" in proc.stdout
    meta = read_harvest_metadata(api_out)
    assert meta["recipe"] == load_recipe(recipe_arg(recipe, work)[1]).name
    assert meta["catalog"] == proxy.url and meta["all_candidates"] is True
    assert len(meta["recipe_hash"]) == 16 and meta["harvest_version"]

    drops = {d.roi_id: d.reason.value for d in read_dropped(api_out)}
    want_drops = expected_drops(truth, recipe, demo_world)
    assert set(drops) == set(want_drops)
    for roi, reason in drops.items():
        assert reason in want_drops[roi], (roi, reason)

    # The stac-geoparquet path (the demo world folder) gives the same rows.
    gp_out = work / f"{recipe}-gp.parquet"
    proc = harvest(
        "search", "rois.parquet", *recipe_arg(recipe, work), "--catalog", str(demo_world),
        "-o", gp_out.name, "--all-candidates", "--no-progress", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    gp = read_pairs(gp_out)
    assert gp.metadata.n_requests == 2  # one query per collection
    assert len(gp.rows) == len(api.rows)
    for a, b in zip(api.rows, gp.rows, strict=True):
        ra, rb = a.to_record(), b.to_record()
        for geom in ("lr_footprint", "hr_footprint"):
            assert getattr(a.pair, geom[:2]).geometry.equals(getattr(b.pair, geom[:2]).geometry)
            ra.pop(geom), rb.pop(geom)
        _same(ra, rb)
    assert {d.roi_id: d.reason for d in read_dropped(gp_out)} == {
        d.roi_id: d.reason for d in read_dropped(api_out)
    }

    # Without --all-candidates: one rank-0 row per paired ROI, the best by the score.
    best_out = work / f"{recipe}-best.parquet"
    proc = harvest(
        "search", "rois.parquet", *recipe_arg(recipe, work), "--catalog", str(demo_world),
        "-o", best_out.name, "--no-progress", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    best = read_pairs(best_out)
    check_against_truth(best, truth, recipe, all_rows=False)
    assert len(best.rows) == len(best.roi_ids) <= len(api.rows)
    assert [r for r in api.rows if r.rank == 0] == [r for r in gp.rows if r.rank == 0]


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and isinstance(b[key], float):
            assert a[key] == pytest.approx(b[key], abs=1e-9), key
        else:
            assert a[key] == b[key], key


def test_all_candidates_adds_ranked_rows(work: Path, demo_world: Path) -> None:
    outs = {}
    for flag in ((), ("--all-candidates",)):
        out = work / f"ranks{len(flag)}.parquet"
        proc = harvest(
            "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", str(demo_world),
            "-o", out.name, "--no-progress", *flag, cwd=work,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs[bool(flag)] = read_pairs(out)
    few, many = outs[False], outs[True]
    assert len(many.rows) > len(few.rows)
    assert max(r.rank for r in many.rows) >= 1
    assert many.chosen() == few.rows


def test_search_survives_429_and_503(work: Path, truth: WorldTruth, proxy: FaultProxy) -> None:
    out = work / "faults.parquet"
    proxy.plan(["429", "503", "503"])
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", proxy.url,
        "--profile", "demo", "-o", out.name, "--all-candidates", "--no-progress", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = read_pairs(out)
    check_against_truth(table, truth, "sen2naip", all_rows=True)
    assert len({(r.roi_id, r.pair.lr.item_id, r.pair.hr.item_id) for r in table.rows}) == len(
        table.rows
    )
    assert table.metadata.n_requests == len(proxy.log)
    assert [r.action for r in proxy.searches()][:3] == ["429", "503", "503"]


def test_demo_provider_name_uses_the_environment(work: Path, demo_world: Path) -> None:
    out = work / "named.parquet"
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", "demo", "-o", out.name,
        "--no-progress", cwd=work, env={"HARVEST_DEMO_WORLD": str(demo_world)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_pairs(out).metadata.provider == "demo"
    assert "paired 5 of 9 ROIs" in proc.stdout
    assert "no_hr_scene" in proc.stdout


def test_bad_inputs_are_one_line_errors(work: Path, demo_world: Path, proxy: FaultProxy) -> None:
    base = ["--recipe", "sen2naip", "--catalog", str(demo_world), "--no-progress"]
    cases: list[tuple[list[str], str]] = [
        (["missing.parquet", *base], "ROI table not found"),
        ([str(demo_world / "stac-geoparquet" / "naip.parquet"), *base], "not a ROI table"),
        (["rois.parquet", "--recipe", "nope", "--catalog", str(demo_world)], "unknown recipe"),
        (["rois.parquet", "--recipe", "sen2naip", "--catalog", "nowhere"], "neither a provider"),
        (["rois.parquet", *base, "--start", "2021-13-01"], "is not a date"),
        (["rois.parquet", *base, "--start", "2022-01-01", "--end", "2021-01-01"], "after it"),
        (["rois.parquet", "--recipe", "sen2naip", "--catalog", "demo"], "HARVEST_DEMO_WORLD"),
    ]
    for args, needle in cases:
        out = work / "bad.parquet"
        proc = harvest("search", *args, "-o", out.name, cwd=work)
        assert needle in one_line_error(proc), (args, proc.stderr)
        assert not out.exists() and not (work / "bad.dropped.parquet").exists()
    # A server that answers garbage, and one that answers 404, are clear one-line errors.
    proxy.plan([], persistent="garbage")
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", proxy.url,
        "--profile", "demo", "-o", "bad.parquet", "--no-progress", cwd=work,
    )  # fmt: skip
    assert "not JSON" in one_line_error(proc)
    proxy.plan([])
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", proxy.url + "/nothing",
        "--profile", "demo", "-o", "bad.parquet", "--no-progress", cwd=work,
    )  # fmt: skip
    assert "HTTP 404" in one_line_error(proc)
    assert not (work / "bad.parquet").exists()
