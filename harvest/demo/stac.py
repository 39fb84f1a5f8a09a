"""STAC items, collections, the static catalog and stac-geoparquet of the demo world.

Items follow the schema the real providers publish: Sentinel-2 L2A as the Planetary Computer
``sentinel-2-l2a`` collection (asset keys ``B02``..``SCL``, ``s2:*`` properties) plus the
``view:*`` angles and ``raster:bands`` scale/offset that Earth Search publishes; NAIP as the
Planetary Computer ``naip`` collection (one 4-band ``image`` asset); Sentinel-1 as
``sentinel-1-grd`` (``sar:*``, ``sat:*``, assets ``vv`` / ``vh``, here sigma0 in dB as Earth
Engine serves it); VENuS L2A after Theia's products (int16 reflectance x 1000, ``CLM`` and ``EDG``
masks).

Hrefs: inside the static catalog every href is relative (the folder can move). In the
stac-geoparquet files, asset hrefs are relative to the folder holding the parquet file (e.g.
``../sentinel-2-l2a/<id>/<file>.tif``); :func:`resolve_parquet_href` turns them into paths.

Items are written with the extension versions the providers use (``proj:epsg``, eo v1.0.0);
pystac migrates them to its newest versions when it reads them with ``migrate=True`` (the
default of ``from_file``), so read raw JSON or pass ``migrate=False`` to see them as written.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac

from harvest.diskio import replacing

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

EXT_EO = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
EXT_PROJ = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
EXT_SAT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
EXT_VIEW = "https://stac-extensions.github.io/view/v1.0.0/schema.json"
EXT_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EXT_SAR = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"

S2_BANDS: dict[str, dict[str, Any]] = {
    "B02": {"common_name": "blue", "description": "Band 2 - Blue", "cw": 0.49, "fw": 0.098},
    "B03": {"common_name": "green", "description": "Band 3 - Green", "cw": 0.56, "fw": 0.045},
    "B04": {"common_name": "red", "description": "Band 4 - Red", "cw": 0.665, "fw": 0.038},
    "B05": {
        "common_name": "rededge",
        "description": "Band 5 - Vegetation red edge 1",
        "cw": 0.704,
        "fw": 0.019,
    },
    "B06": {
        "common_name": "rededge",
        "description": "Band 6 - Vegetation red edge 2",
        "cw": 0.74,
        "fw": 0.018,
    },
    "B07": {
        "common_name": "rededge",
        "description": "Band 7 - Vegetation red edge 3",
        "cw": 0.783,
        "fw": 0.028,
    },
    "B08": {"common_name": "nir", "description": "Band 8 - NIR", "cw": 0.842, "fw": 0.145},
    "B8A": {
        "common_name": "rededge",
        "description": "Band 8A - Vegetation red edge 4",
        "cw": 0.865,
        "fw": 0.033,
    },
}

VENUS_BANDS: dict[str, tuple[float, float]] = {
    "B3": (0.492, 0.040),
    "B4": (0.555, 0.040),
    "B7": (0.667, 0.030),
    "B8": (0.702, 0.024),
    "B9": (0.742, 0.016),
    "B10": (0.782, 0.016),
    "B11": (0.865, 0.040),
    "B12": (0.910, 0.020),
}


@dataclass(frozen=True)
class RasterAsset:
    """A COG written for an item, with what its STAC asset must say."""

    key: str
    path: str  # absolute path at build time
    title: str
    gsd_m: float
    shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]
    dtype: str
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    eo_bands: tuple[dict[str, Any], ...] = ()
    roles: tuple[str, ...] = ("data",)
    description: str | None = None

    @property
    def proj_bbox(self) -> list[float]:
        """The asset's bounds in its CRS."""
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        return [c, f + e * h, c + a * w, f]


def _asset(ra: RasterAsset) -> pystac.Asset:
    extra: dict[str, Any] = {
        "gsd": ra.gsd_m,
        "proj:shape": list(ra.shape),
        "proj:transform": list(ra.transform),
        "proj:bbox": ra.proj_bbox,
    }
    if ra.eo_bands:
        extra["eo:bands"] = [dict(b) for b in ra.eo_bands]
    band: dict[str, Any] = {"data_type": ra.dtype, "spatial_resolution": ra.gsd_m}
    if ra.nodata is not None:
        band["nodata"] = ra.nodata
    if ra.scale is not None:
        band["scale"] = ra.scale
    if ra.offset is not None:
        band["offset"] = ra.offset
    if ra.unit is not None:
        band["unit"] = ra.unit
    count = max(1, len(ra.eo_bands))
    extra["raster:bands"] = [dict(band) for _ in range(count)]
    return pystac.Asset(
        href=ra.path,
        title=ra.title,
        description=ra.description,
        media_type=COG_TYPE,
        roles=list(ra.roles),
        extra_fields=extra,
    )


def s2_eo_band(name: str) -> dict[str, Any]:
    """The ``eo:bands`` entry of a Sentinel-2 band, as the Planetary Computer writes it."""
    b = S2_BANDS[name]
    return {
        "name": name,
        "common_name": b["common_name"],
        "description": b["description"],
        "center_wavelength": b["cw"],
        "full_width_half_max": b["fw"],
    }


def make_item(
    item_id: str,
    collection: str,
    dt: datetime,
    geometry: dict[str, Any],
    bbox: Sequence[float],
    properties: dict[str, Any],
    assets: Iterable[RasterAsset],
    extensions: Sequence[str],
) -> pystac.Item:
    """Build one item (hrefs absolute at build time, made relative when the catalog is saved)."""
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=list(bbox),
        datetime=dt,
        properties=dict(properties),
        collection=collection,
        stac_extensions=list(extensions),
    )
    for ra in assets:
        item.add_asset(ra.key, _asset(ra))
    return item


COLLECTION_INFO: dict[str, dict[str, Any]] = {
    "sentinel-2-l2a": {
        "title": "Sentinel-2 Level-2A (demo world)",
        "description": "Synthetic Sentinel-2 L2A surface reflectance rendered from the demo "
        "world's landscape through a known degradation (see truth.json). Assets and "
        "properties as the Planetary Computer publishes them.",
        "license": "proprietary",
        "keywords": ["Sentinel-2", "L2A", "demo"],
    },
    "naip": {
        "title": "NAIP (demo world)",
        "description": "Synthetic NAIP-like 4-band (R, G, B, NIR) uint8 aerial imagery at 1 m.",
        "license": "proprietary",
        "keywords": ["NAIP", "aerial", "demo"],
    },
    "venus-l2a": {
        "title": "VENuS L2A (demo world)",
        "description": "Synthetic VENuS L2A (MAJA-like) surface reflectance, int16 x 1000, 5 m.",
        "license": "proprietary",
        "keywords": ["VENuS", "L2A", "demo"],
    },
    "sentinel-1-grd": {
        "title": "Sentinel-1 GRD (demo world)",
        "description": "Synthetic Sentinel-1 IW GRD sigma0 (dB, float32) with speckle, 10 m.",
        "license": "proprietary",
        "keywords": ["Sentinel-1", "GRD", "SAR", "demo"],
    },
}


def build_catalog(items: Sequence[pystac.Item], root: Path) -> pystac.Catalog:
    """Assemble the catalog (one collection per product) and save it self-contained in ``root``.

    Asset files must already lie at ``root/<collection>/<item id>/``.
    """
    catalog = pystac.Catalog(
        id="harvest-demo-world",
        description="The harvest demo world: a seeded synthetic world with known ground truth.",
        title="harvest demo world",
    )
    by_coll: dict[str, list[pystac.Item]] = {}
    for it in items:
        by_coll.setdefault(str(it.collection_id), []).append(it)
    for cid in sorted(by_coll):
        its = sorted(by_coll[cid], key=lambda i: i.id)
        info = COLLECTION_INFO[cid]
        extent = pystac.Extent(
            pystac.SpatialExtent([_union_bbox([list(i.bbox or []) for i in its])]),
            pystac.TemporalExtent([[min(_dt(i) for i in its), max(_dt(i) for i in its)]]),
        )
        coll = pystac.Collection(
            id=cid,
            description=info["description"],
            extent=extent,
            title=info["title"],
            license=info["license"],
            keywords=info["keywords"],
        )
        for it in its:
            it.collection_id = None  # set again by add_item
            coll.add_item(it)
        catalog.add_child(coll)
    # A trailing separator: pystac would take a folder name with a dot for a file name.
    catalog.normalize_hrefs(str(root).rstrip(os.sep) + os.sep)
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return catalog


def _dt(item: pystac.Item) -> datetime:
    assert item.datetime is not None
    return item.datetime


def _union_bbox(boxes: list[list[float]]) -> list[float]:
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def _raw_items(world_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(item JSON path, item dict as written) for every item, sorted by collection and id.

    Raw JSON, not pystac objects: pystac would migrate the items to its newest extension
    versions (``proj:code`` instead of ``proj:epsg``), which is not what providers publish.
    """
    out = []
    for path in sorted(world_dir.glob("*/*/*.json")):
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("type") == "Feature":
            out.append((path, d))
    return sorted(out, key=lambda t: (str(t[1].get("collection")), str(t[1]["id"])))


def _rebase_assets(d: dict[str, Any], item_path: Path, base: Path | None) -> dict[str, Any]:
    """Copy of an item dict with asset hrefs absolute (base None) or relative to ``base``."""
    d = copy.deepcopy(d)
    d["links"] = []
    for asset in d["assets"].values():
        href = asset["href"]
        absolute = href if os.path.isabs(href) else os.path.normpath(item_path.parent / href)
        asset["href"] = absolute if base is None else os.path.relpath(absolute, base)
    return d


def write_geoparquet(world_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Write one stac-geoparquet file per collection (hrefs relative to ``out_dir``)."""
    import stac_geoparquet.arrow as sga

    out_dir.mkdir(parents=True, exist_ok=True)
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for path, d in _raw_items(world_dir):
        by_coll.setdefault(str(d["collection"]), []).append(_rebase_assets(d, path, out_dir))
    written: dict[str, Path] = {}
    for cid, dicts in sorted(by_coll.items()):
        table = sga.parse_stac_items_to_arrow(dicts)
        path = out_dir / f"{cid}.parquet"
        with replacing(path) as tmp:
            sga.to_parquet(table, tmp)
        written[cid] = path
    return written


def resolve_parquet_href(parquet_path: str | Path, href: str) -> Path:
    """Turn a demo-world stac-geoparquet asset href into a local path."""
    return (Path(parquet_path).parent / href).resolve()


def item_dicts_absolute(world_dir: str | Path) -> list[dict[str, Any]]:
    """Item dictionaries as written (provider schema), absolute asset hrefs, no links.

    This is what to load into a STAC API (e.g. pypgstac) or compare with search results.
    """
    root = Path(world_dir).resolve()
    return [_rebase_assets(d, path, None) for path, d in _raw_items(root)]


def load_world_items(world_dir: str | Path) -> list[pystac.Item]:
    """All items of a demo world as pystac Items (not migrated), absolute asset hrefs."""
    return [pystac.Item.from_dict(d, migrate=False) for d in item_dicts_absolute(world_dir)]


def dump_ndjson(dicts: Iterable[dict[str, Any]]) -> str:
    """Items as newline-delimited JSON (the format pypgstac loads)."""
    return "".join(json.dumps(d, sort_keys=True) + "\n" for d in dicts)
