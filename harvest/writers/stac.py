"""The STAC Collection that describes a built dataset (``OUT/stac/collection.json``).

One item per sample: a kept cross-sensor (or generic-layout) chip, and one per synthetic image.
Each item carries its footprint, the acquisition time, ``ml-aoi:split`` (the ml-aoi extension),
the QA metrics, the source scenes' ids (``harvest:lr_item_id`` / ``harvest:hr_item_id``, and a
``derived_from`` link to each when the catalog is a STAC API whose item URLs are known) and its
files as assets with relative hrefs, so the folder can be moved or published as it is.

The collection's licence is ``various``: one ``license`` link per source licence
(:data:`SOURCE_LICENSES`). The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ML_AOI_SCHEMA = "https://stac-extensions.github.io/ml-aoi/v0.2.0/schema.json"
STAC_DIR = "stac"


@dataclass(frozen=True)
class SourceLicense:
    """The terms of one source collection.

    Attributes:
        title: What the data is and its terms, in one line.
        href: Where the terms are published.
        attribution: The credit line users must give (empty when none is required).
    """

    title: str
    href: str
    attribution: str = ""


SOURCE_LICENSES: dict[str, SourceLicense] = {
    "sentinel-2-l2a": SourceLicense(
        "Copernicus Sentinel-2 data: free, full and open (Copernicus Sentinel data legal notice)",
        "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
        "Contains modified Copernicus Sentinel data",
    ),
    "sentinel-1-grd": SourceLicense(
        "Copernicus Sentinel-1 data: free, full and open (Copernicus Sentinel data legal notice)",
        "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
        "Contains modified Copernicus Sentinel data",
    ),
    "naip": SourceLicense(
        "NAIP imagery (USDA Farm Production and Conservation Business Center): public domain",
        "https://naip-usdaonline.hub.arcgis.com/",
    ),
    "venus-l2a": SourceLicense(
        "VENuS L2A (CNES / Theia): see the distributor's terms of use",
        "https://www.theia-land.fr/en/product/venus/",
        "VENuS data (CNES)",
    ),
}
DEMO_LICENSE = SourceLicense(
    "Simulated by harvest's demo world (no real imagery; no restrictions)",
    "../README.md",  # the dataset card, relative to stac/collection.json
)


@dataclass(frozen=True)
class StacSample:
    """One item of the collection.

    Attributes:
        item_id: The item id (the ROI id, with the image id for synthetic images).
        product: ``cross-sensor``, ``synthetic`` or ``kept`` (generic layout).
        folder: The sample's folder, relative to the dataset folder.
        assets: File names in ``folder`` (each becomes an asset keyed by its stem).
        geometry: GeoJSON footprint (EPSG:4326).
        when: Acquisition time (the LR scene's; the HR's when there is no LR scene).
        split: ``train`` or ``test``.
        properties: More item properties (QA metrics, source ids, selection).
        sources: ``(collection, item id)`` of the source scenes.
    """

    item_id: str
    product: str
    folder: str
    assets: tuple[str, ...]
    geometry: Mapping[str, Any]
    when: datetime
    split: str
    properties: Mapping[str, Any]
    sources: tuple[tuple[str, str], ...]


def source_license(collection: str, provider: str) -> SourceLicense:
    """The licence of a source collection (the demo world's own for demo scenes)."""
    if provider == "demo":
        return DEMO_LICENSE
    return SOURCE_LICENSES.get(
        collection,
        SourceLicense(f"{collection}: see the provider's terms of use", "https://stacspec.org"),
    )


def write_collection(
    out_dir: Path,
    *,
    collection_id: str,
    description: str,
    samples: Sequence[StacSample],
    licenses: Sequence[SourceLicense],
    item_url: Mapping[str, str],
    version: str,
    extra: Mapping[str, Any],
) -> Path:
    """Write ``OUT/stac/`` (collection.json and one JSON per item), atomically.

    Args:
        out_dir: The dataset folder.
        collection_id: The collection id.
        description: Its description (Markdown).
        samples: The items.
        licenses: The source licences (one ``license`` link each).
        item_url: Per source collection, the URL of its items (``{url}/{item_id}``) when the
            catalog is a STAC API; ``derived_from`` links are made only for those.
        version: The dataset version.
        extra: More collection fields (``harvest:*``: config hash, counts).

    Returns:
        The path of ``collection.json``.
    """
    import pystac

    from harvest.store import atomic_folder, json_safe

    if samples:
        bounds = [_bounds(s.geometry) for s in samples]
        bbox = [
            min(b[0] for b in bounds),
            min(b[1] for b in bounds),
            max(b[2] for b in bounds),
            max(b[3] for b in bounds),
        ]
        times = sorted(s.when for s in samples)
        interval: list[datetime | None] = [times[0], times[-1]]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
        interval = [datetime.now(UTC), None]
    collection = pystac.Collection(
        id=collection_id,
        description=description,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license="various",
        stac_extensions=[ML_AOI_SCHEMA],
        extra_fields={"version": version, **extra},
    )
    seen: set[str] = set()
    for lic in licenses:
        if lic.href + lic.title in seen:
            continue
        seen.add(lic.href + lic.title)
        collection.add_link(
            pystac.Link("license", lic.href, media_type="text/html", title=lic.title)
        )
    for s in samples:
        props = {k: json_safe(v) for k, v in s.properties.items()}
        props.update({"ml-aoi:split": s.split, "harvest:product": s.product})
        item = pystac.Item(
            id=s.item_id,
            geometry=dict(s.geometry),
            bbox=list(_bounds(s.geometry)),
            datetime=s.when,
            properties=props,
            stac_extensions=[ML_AOI_SCHEMA],
        )
        for name in s.assets:
            item.add_asset(
                Path(name).stem,
                pystac.Asset(
                    # Relative to the item file (stac/<item id>/<item id>.json).
                    href=f"../../{s.folder}/{name}",
                    media_type=(
                        pystac.MediaType.COG if name.endswith(".tif") else pystac.MediaType.JSON
                    ),
                    roles=["data"] if name.endswith(".tif") else ["metadata"],
                ),
            )
        for coll, source_id in s.sources:
            if coll in item_url:
                item.add_link(
                    pystac.Link(
                        "derived_from",
                        f"{item_url[coll].rstrip('/')}/{source_id}",
                        media_type="application/geo+json",
                        title=source_id,
                    )
                )
        collection.add_item(item)
    final = out_dir / STAC_DIR
    with atomic_folder(final, root=out_dir) as tmp:
        collection.normalize_hrefs(str(tmp))
        collection.save(pystac.CatalogType.SELF_CONTAINED, dest_href=str(tmp))
    return final / "collection.json"


def _bounds(geometry: Mapping[str, Any]) -> tuple[float, float, float, float]:
    import shapely.geometry

    b = shapely.geometry.shape(geometry).bounds
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
