"""Benchmark `harvest search`: the stac-geoparquet bulk path vs one STAC API search per ROI.

1. Snapshot: >= 1,000,000 synthetic Planetary-Computer-style items written with pyarrow in the
   stac-geoparquet column layout (id, collection, geometry WKB, bbox struct, datetime,
   properties, assets struct): Sentinel-2 L2A on a 1-degree tile grid over CONUS with a pass
   every 5 days (cloud cover uniform 0-100 %, seeded), and NAIP quads of 0.0625 degrees over
   CONUS, one acquisition each in summer 2021. Generation time is reported on its own.
2. 18,000 CONUS ROIs (`run_sample`, 5 km apart, seed 7).
3. harvest: the whole `run_search` (ROI read, chip footprints, one DuckDB query per collection,
   parsing, pairing, writing pairs.parquet) for the sen2naip recipe, window --start/--end.
4. Baseline: one pystac-client search per ROI (both collections, the chip's polygon, the same
   window, every page read) against a local stac-fastapi-pgstac holding a few thousand items;
   the per-request rate over --baseline-requests requests is extrapolated to 18,000 ROIs.
5. Requests the batched STAC API path (`run_search` with StacApiCatalog) makes for the same
   18,000 ROIs against that local server, from SearchStats (every HTTP request, landing page
   and pages included).

Usage: .venv/bin/python bench/bench_search.py [--n-rois 18000] [--baseline-requests 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

CONUS = (-125.0, 24.0, -66.0, 50.0)
S2_ASSETS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S2_FIRST = datetime(2019, 1, 1, 17, 0, tzinfo=UTC)
S2_STEP_DAYS = 5
NAIP_DEG = 0.0625
NAIP_FIRST = datetime(2021, 6, 1, tzinfo=UTC)
SEED = 7


def _bbox_struct(geoms: np.ndarray) -> pa.StructArray:
    b = shapely.bounds(geoms)
    return pa.StructArray.from_arrays(
        [pa.array(b[:, i]) for i in range(4)], names=["xmin", "ymin", "xmax", "ymax"]
    )


def _assets(ids: pa.Array, keys: tuple[str, ...], base: str) -> pa.StructArray:
    fields = []
    for key in keys:
        href = pc.binary_join_element_wise(base, ids, f"/{key}.tif", "")
        fields.append(pa.StructArray.from_arrays([href], names=["href"]))
    return pa.StructArray.from_arrays(fields, names=list(keys))


def write_s2(path: Path, n_passes: int, rng: np.random.Generator) -> int:
    """S2 items: one per 1-degree tile and pass, written one pass block at a time."""
    lons = np.arange(CONUS[0], CONUS[2])
    lats = np.arange(CONUS[1], CONUS[3])
    tx, ty = np.meshgrid(lons, lats)
    tx, ty = tx.ravel(), ty.ravel()
    tiles = shapely.box(tx, ty, tx + 1.0, ty + 1.0)
    tile_names = np.array(
        [f"T{int(x) + 180:03d}{int(y) + 90:03d}" for x, y in zip(tx, ty, strict=True)]
    )
    writer = None
    n = 0
    block = 50
    for p0 in range(0, n_passes, block):
        passes = np.arange(p0, min(n_passes, p0 + block))
        k = np.repeat(passes, len(tiles))
        t = np.tile(np.arange(len(tiles)), len(passes))
        # Per-tile time of day spreads passes over the day (as orbits do).
        seconds = k * S2_STEP_DAYS * 86400 + (t % 97) * 61
        when = np.datetime64(S2_FIRST.replace(tzinfo=None), "us") + (seconds * 1_000_000).astype(
            "timedelta64[us]"
        )
        ids = pa.array(
            np.char.add(np.char.add("S2_", tile_names[t]), np.char.add("_", k.astype(str)))
        )
        geoms = tiles[t]
        table = pa.table(
            {
                "id": ids,
                "collection": pa.array(np.full(len(t), "sentinel-2-l2a")),
                "geometry": pa.array(shapely.to_wkb(geoms), type=pa.binary()),
                "bbox": _bbox_struct(geoms),
                "datetime": pa.array(when, type=pa.timestamp("us", tz="UTC")),
                "eo:cloud_cover": pa.array(np.round(rng.uniform(0, 100, len(t)), 3)),
                "platform": pa.array(np.where(k % 2 == 0, "Sentinel-2A", "Sentinel-2B")),
                "proj:epsg": pa.array(np.full(len(t), 32614, dtype=np.int64)),
                "s2:processing_baseline": pa.array(np.full(len(t), "04.00")),
                "assets": _assets(ids, (*S2_ASSETS, "SCL"), "https://example.test/s2/"),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=100_000)
        n += table.num_rows
    assert writer is not None
    writer.close()
    return n


def write_naip(path: Path, rng: np.random.Generator) -> int:
    """NAIP quads over the CONUS box, one acquisition each in June-August 2021."""
    nx = int(round((CONUS[2] - CONUS[0]) / NAIP_DEG))
    ny = int(round((CONUS[3] - CONUS[1]) / NAIP_DEG))
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
    x = CONUS[0] + ix.ravel() * NAIP_DEG
    y = CONUS[1] + iy.ravel() * NAIP_DEG
    geoms = shapely.box(x, y, x + NAIP_DEG, y + NAIP_DEG)
    days = rng.integers(0, 92, len(x))
    when = np.datetime64(NAIP_FIRST.replace(tzinfo=None), "us") + (days * 86_400_000_000).astype(
        "timedelta64[us]"
    )
    ids = pa.array(np.char.add("naip_", np.arange(len(x)).astype(str)))
    table = pa.table(
        {
            "id": ids,
            "collection": pa.array(np.full(len(x), "naip")),
            "geometry": pa.array(shapely.to_wkb(geoms), type=pa.binary()),
            "bbox": _bbox_struct(geoms),
            "datetime": pa.array(when, type=pa.timestamp("us", tz="UTC")),
            "gsd": pa.array(np.full(len(x), 0.6)),
            "proj:epsg": pa.array(np.full(len(x), 26914, dtype=np.int64)),
            "assets": _assets(ids, ("image",), "https://example.test/naip/"),
        }
    )
    pq.write_table(table, path, compression="zstd", row_group_size=100_000)
    return table.num_rows


def api_items(n_s2_passes: int) -> list[dict[str, Any]]:
    """A few thousand items for the local STAC API: S2 tiles over CONUS, a few passes."""
    items = []
    for x in np.arange(CONUS[0], CONUS[2]):
        for y in np.arange(CONUS[1], CONUS[3]):
            geom = shapely.box(x, y, x + 1.0, y + 1.0)
            for k in range(n_s2_passes):
                when = (
                    NAIP_FIRST.replace(hour=17) if k == 0 else datetime(2021, 7, 1, 17, tzinfo=UTC)
                )
                item_id = f"S2_{int(x)}_{int(y)}_{k}"
                items.append(
                    {
                        "type": "Feature",
                        "stac_version": "1.0.0",
                        "stac_extensions": [],
                        "id": item_id,
                        "collection": "sentinel-2-l2a",
                        "geometry": shapely.geometry.mapping(geom),
                        "bbox": list(geom.bounds),
                        "properties": {
                            "datetime": when.isoformat().replace("+00:00", "Z"),
                            "eo:cloud_cover": 10.0,
                            "proj:epsg": 32614,
                        },
                        "assets": {
                            a: {"href": f"https://example.test/{item_id}/{a}.tif"}
                            for a in (*S2_ASSETS, "SCL")
                        },
                        "links": [],
                    }
                )
    return items


def collection(cid: str) -> dict[str, Any]:
    return {
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rois", type=int, default=18_000)
    parser.add_argument("--s2-passes", type=int, default=400)
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--end", default="2021-12-31")
    parser.add_argument("--baseline-requests", type=int, default=200)
    parser.add_argument("--api-passes", type=int, default=2)
    parser.add_argument("--skip-api", action="store_true")
    args = parser.parse_args()

    from harvest.backends.profiles import load_profile
    from harvest.backends.stac_parquet.catalog import StacParquetCatalog
    from harvest.geoio import read_roi_points
    from harvest.recipes import load_recipe
    from harvest.stages.sample import run as run_sample
    from harvest.stages.search import chip_footprints
    from harvest.stages.search import run as run_search

    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        snap = root / "snapshot"
        snap.mkdir()
        t0 = time.perf_counter()
        n_s2 = write_s2(snap / "sentinel-2-l2a.parquet", args.s2_passes, rng)
        n_naip = write_naip(snap / "naip.parquet", rng)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in snap.iterdir()) / 1e6
        print(
            f"snapshot: {n_s2 + n_naip:,} items ({n_s2:,} S2, {n_naip:,} NAIP), "
            f"{size_mb:.0f} MB, generated in {gen_s:.1f} s"
        )

        t0 = time.perf_counter()
        rois = root / "rois.parquet"
        run_sample(n=args.n_rois, output=rois, region="conus", seed=SEED, min_distance_km=5.0)
        print(f"sample: {args.n_rois:,} CONUS ROIs in {time.perf_counter() - t0:.1f} s")

        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
        catalog = StacParquetCatalog(snap, load_profile("planetary-computer"))
        t0 = time.perf_counter()
        summary = run_search(
            rois,
            recipe="sen2naip",
            catalog=catalog,
            output=root / "pairs.parquet",
            catalog_name=str(snap),
            start=start,
            end=end,
        )
        bulk_s = time.perf_counter() - t0
        print(f"harvest search (stac-geoparquet): {bulk_s:.1f} s; {summary.line()}")
        if args.skip_api:
            return

        import pystac_client
        from stac_server import start_stac_server

        from harvest.backends.stac_api.catalog import StacApiCatalog

        items = api_items(args.api_passes)
        t0 = time.perf_counter()
        server = start_stac_server(
            [collection("sentinel-2-l2a"), collection("naip")], items, ready_timeout_s=120
        )
        print(f"local STAC API: {len(items):,} items, up in {time.perf_counter() - t0:.1f} s")
        try:
            points = read_roi_points(rois)
            _, geoms = chip_footprints(points.lon_deg, points.lat_deg, load_recipe("sen2naip"))
            client = pystac_client.Client.open(server.url)
            window = f"{args.start}T00:00:00Z/{args.end}T23:59:59Z"
            n_req = args.baseline_requests
            found = 0
            t0 = time.perf_counter()
            for g in geoms[:n_req]:
                search = client.search(
                    collections=["sentinel-2-l2a", "naip"],
                    intersects=shapely.geometry.mapping(g),
                    datetime=window,
                    limit=1000,
                )
                found += len(search.item_collection())
            per_s = (time.perf_counter() - t0) / n_req
            print(
                f"baseline: {n_req} per-ROI searches, {per_s * 1000:.1f} ms each "
                f"({found} items); {args.n_rois:,} ROIs -> {per_s * args.n_rois:.0f} s, "
                f"{args.n_rois:,} searches"
            )
            api = StacApiCatalog(server.url, load_profile("planetary-computer"))
            t0 = time.perf_counter()
            api_summary = run_search(
                rois,
                recipe="sen2naip",
                catalog=api,
                output=root / "pairs-api.parquet",
                catalog_name=server.url,
                start=start,
                end=end,
            )
            api_s = time.perf_counter() - t0
            ratio = args.n_rois / api_summary.n_requests
            print(
                f"harvest search (STAC API, batched): {api_summary.n_requests} requests for "
                f"{args.n_rois:,} ROIs ({ratio:.0f}x fewer than one per ROI), {api_s:.1f} s"
            )
        finally:
            server.close()


if __name__ == "__main__":
    main()
