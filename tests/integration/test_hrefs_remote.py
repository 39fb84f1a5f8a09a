"""A remote catalog's hrefs stay remote: `harvest search` on a real pgstac, then `harvest fetch`.

The STAC API serves the demo world's items with their asset hrefs rewritten per site: one
site's items name local paths, one site's ``file://`` URLs and one site's
``http://127.0.0.1:PORT/...`` URLs of a loopback file server (a stand-in for an unrelated local
service; it serves the same COGs with byte ranges and records every request). Without an
allow-list every chip fails naming its href and the loopback server is never asked anything;
``--allow-host 127.0.0.1:PORT`` (or ``$HARVEST_ALLOW_HOSTS``) lets the loopback chip be read,
and only that one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from range_server import RangeFileServer
from stac_server import StacServer, StacServerError, start_stac_server

from harvest.demo.pairs import truth_pair_rows
from harvest.demo.stac import item_dicts_absolute
from harvest.demo.truth import load_truth
from harvest.geoio import write_points_geoparquet
from harvest.hrefs import LOCAL_POLICY, HrefPolicy
from harvest.recipes import load_recipe
from harvest.stages.fetch import FetchJob, jobs_from_rows
from harvest.stages.fetch import run as run_fetch
from harvest.tables import read_pairs

HARVEST = str(Path(sys.executable).parent / "harvest")
RECIPE = load_recipe("sen2naip")
# One site per kind of href; each has a sen2naip truth pair.
SITES = {"us-ca": "local", "us-ia": "file", "us-ks": "loopback"}


def harvest(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    full_env = {k: v for k, v in os.environ.items() if k != "HARVEST_ALLOW_HOSTS"}
    full_env.update(env or {})
    return subprocess.run(
        [HARVEST, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
        env=full_env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cog_server(demo_world: Path) -> Iterator[RangeFileServer]:
    with RangeFileServer(demo_world) as server:
        yield server


def _rewrite(href: str, form: str, server: RangeFileServer) -> str:
    if form == "file":
        return Path(href).as_uri()
    if form == "loopback":
        return server.url_of(href)
    return href


@pytest.fixture(scope="module")
def hostile_stac(demo_world: Path, cog_server: RangeFileServer) -> Iterator[StacServer]:
    """pgstac serving the demo world's items, hrefs rewritten per site as :data:`SITES` says."""
    truth = load_truth(demo_world)
    site_of = {s.item_id: s.site_id for s in truth.scenes}
    items = []
    for item in item_dicts_absolute(demo_world):
        form = SITES.get(site_of[item["id"]])
        if form is None:
            continue
        for asset in item["assets"].values():
            asset["href"] = _rewrite(asset["href"], form, cog_server)
        items.append(item)
    collections = [
        {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": cid,
            "description": cid,
            "license": "proprietary",
            "links": [],
            "extent": {
                "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                "temporal": {"interval": [["2010-01-01T00:00:00Z", None]]},
            },
        }  # fmt: skip
        for cid in sorted({it["collection"] for it in items})
    ]
    try:
        server = start_stac_server(collections, items)
    except StacServerError as exc:
        pytest.fail(f"cannot start the test STAC API: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def searched(
    tmp_path_factory: pytest.TempPathFactory, demo_world: Path, hostile_stac: StacServer
) -> tuple[Path, dict[str, str]]:
    """A folder holding the pairs table `harvest search` wrote, and the site of each ROI."""
    root = tmp_path_factory.mktemp("hrefs")
    truth = load_truth(demo_world)
    ids, lon, lat, site_of = [], [], [], {}
    for k, site_id in enumerate(SITES, start=1):
        site = truth.site(site_id)
        b = site.chip_safe_bounds
        to_ll = Transformer.from_crs(site.utm_epsg, 4326, always_xy=True)
        x, y = to_ll.transform((b.xmin + b.xmax) / 2, (b.ymin + b.ymax) / 2)
        rid = f"ROI_{k:06d}"
        ids.append(rid)
        lon.append(x)
        lat.append(y)
        site_of[rid] = site_id
    write_points_geoparquet(root / "rois.parquet", np.array(lon), np.array(lat), {"roi_id": ids})
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", hostile_stac.url,
        "--profile", "demo", "-o", "pairs.parquet", "--no-progress", cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = read_pairs(root / "pairs.parquet")
    assert table.metadata.catalog_kind == "stac-api"
    assert sorted(r.roi_id for r in table.rows) == ids  # one pair per site, every href form
    return root, site_of


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    frame = gpd.read_parquet(folder / "manifest.parquet")
    return {str(r["roi_id"]): dict(r) for _, r in frame.iterrows()}


def _expect_refused(row: dict[str, Any], form: str, demo_world: Path, server: RangeFileServer):
    assert row["status"] == "failed", row
    error = str(row["error"])
    assert "refused a remote catalog's href" in error, error
    named = {
        "local": f"): {demo_world.resolve()}/",
        "file": f"): file://{demo_world.resolve()}/",
        "loopback": f"): {server.url}/",
    }[form]
    assert named in error, error
    if form == "loopback":
        assert f"--allow-host 127.0.0.1:{server.port}" in error, error
    else:
        assert "local catalog" in error, error


def test_remote_hrefs_are_refused_without_the_allow_list(
    searched: tuple[Path, dict[str, str]], demo_world: Path, cog_server: RangeFileServer
) -> None:
    root, site_of = searched
    cog_server.clear()
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "--no-progress"]
    proc = harvest(*args, "-o", "ds-none", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 kept, 0 rejected, 3 failed"), proc.stdout
    rows = _manifest(root / "ds-none")
    assert sorted(rows) == sorted(site_of)
    for rid, site in site_of.items():
        _expect_refused(rows[rid], SITES[site], demo_world, cog_server)
    assert cog_server.seen() == []  # not one request reached the local service
    assert not (root / "ds-none" / "cross-sensor").exists() or not any(
        (root / "ds-none" / "cross-sensor").iterdir()
    )
    # An allowed host on another port does not open this one.
    proc = harvest(*args, "-o", "ds-other-port", "--allow-host", "127.0.0.1:1", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 kept, 0 rejected, 3 failed"), proc.stdout
    assert cog_server.seen() == []
    # The hrefs themselves are fine: trusted as a local catalog's, every chip is read.
    trusted = run_fetch(
        read_pairs(root / "pairs.parquet"), RECIPE, root / "ds-trusted", href_policy=LOCAL_POLICY
    )
    assert trusted.n_failed == 0 and trusted.n_kept + trusted.n_rejected == 3
    assert cog_server.seen()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_allow_list_opens_the_loopback_host_only(
    how: str,
    searched: tuple[Path, dict[str, str]],
    demo_world: Path,
    cog_server: RangeFileServer,
) -> None:
    root, site_of = searched
    cog_server.clear()
    allowed = f"127.0.0.1:{cog_server.port}"
    out = f"ds-{how}"
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", out, "--no-progress"]
    if how == "option":
        proc = harvest(*args, "--allow-host", "data.example.org", "--allow-host", allowed, cwd=root)
    else:
        env = {"HARVEST_ALLOW_HOSTS": f"data.example.org, {allowed}"}
        proc = harvest(*args, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = _manifest(root / out)
    for rid, site in site_of.items():
        if SITES[site] == "loopback":
            assert rows[rid]["status"] in ("kept", "rejected"), rows[rid]
        else:  # the allow-list is about hosts: local files stay refused
            _expect_refused(rows[rid], SITES[site], demo_world, cog_server)
    seen = cog_server.seen()
    assert seen and any(r.method == "GET" and r.range for r in seen)
    assert all(r.path.startswith(("/sentinel-2-l2a/", "/naip/")) for r in seen)


def test_a_bad_allow_list_entry_is_a_one_line_error(searched: tuple[Path, dict[str, str]]) -> None:
    root, _ = searched
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds-bad", "--no-progress"]
    for proc in (
        harvest(*args, "--allow-host", "user@127.0.0.1", cwd=root),
        harvest(*args, cwd=root, env={"HARVEST_ALLOW_HOSTS": "127.0.0.1:99999"}),
    ):
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: allowed host"), proc.stderr
        assert "--allow-host" in lines[0] and "HARVEST_ALLOW_HOSTS" in lines[0]
    assert not (root / "ds-bad").exists()


# --- VRTs are not followed ---------------------------------------------------------------------


def _with_hr_href(job: FetchJob, href: str) -> FetchJob:
    hr = job.pair.hr
    assets = {band: replace(ref, href=href) for band, ref in hr.assets.items()}
    return replace(job, pair=replace(job.pair, hr=replace(hr, assets=assets)))


def _with_lr_server(job: FetchJob, server: RangeFileServer) -> FetchJob:
    lr = job.pair.lr
    assets = {band: replace(ref, href=server.url_of(ref.href)) for band, ref in lr.assets.items()}
    return replace(job, pair=replace(job.pair, lr=replace(lr, assets=assets)))


def test_a_remote_catalogs_vrt_is_not_followed(
    demo_world: Path, cog_server: RangeFileServer, tmp_path: Path
) -> None:
    """A VRT naming a local COG, served as .tif and as .vrt from an allowed host: never read.

    The same VRT from a local catalog is the user's own file and is read.
    """
    jobs = jobs_from_rows(truth_pair_rows(demo_world, RECIPE, [(0.0, 0.0)]))[:2]
    naip = Path(next(iter(jobs[0].pair.hr.assets.values())).href)
    with rasterio.open(naip) as ds:
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{naip}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
            for b in range(1, ds.count + 1)
        )
        geo = ", ".join(repr(v) for v in ds.transform.to_gdal())
        text = (
            f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}">'
            f"<SRS>{escape(ds.crs.to_wkt())}</SRS><GeoTransform>{geo}</GeoTransform>"
            f"{bands}</VRTDataset>"
        )
    served = tmp_path / "served"
    served.mkdir()
    (served / "disguised.tif").write_text(text)
    (served / "plain.vrt").write_text(text)
    with RangeFileServer(served) as evil:
        hosts = [f"127.0.0.1:{cog_server.port}", f"127.0.0.1:{evil.port}"]
        policy = HrefPolicy.for_catalog("stac-api", hosts)
        hostile = [
            _with_hr_href(_with_lr_server(job, cog_server), evil.url_of(served / name))
            for job, name in zip(jobs, ("disguised.tif", "plain.vrt"), strict=True)
        ]
        summary = run_fetch(hostile, RECIPE, tmp_path / "ds", href_policy=policy)
        assert summary.n_failed == 2
        rows = _manifest(tmp_path / "ds")
        disguised, plain = (str(rows[j.roi_id]["error"]) for j in hostile)
        assert "disguised.tif" in disguised and "VRTs are not followed" in disguised
        assert "plain.vrt" in plain and "VRT" in plain
        # The .vrt href was refused before any request; the disguised one was looked at only.
        assert all(r.path.endswith("disguised.tif") for r in evil.seen())
    # From a local catalog the user's VRT is theirs to use.
    local = [_with_hr_href(jobs[0], str(served / "disguised.tif"))]
    summary = run_fetch(local, RECIPE, tmp_path / "ds-local")
    assert summary.n_failed == 0
