"""The STAC Collection writer: links to source items of a STAC API, licences, validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pystac

from harvest.writers.stac import StacSample, source_license, write_collection

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[-100.0, 38.0], [-99.99, 38.0], [-99.99, 38.01], [-100.0, 38.01],
                     [-100.0, 38.0]]],
}  # fmt: skip


def test_items_link_their_source_items_and_the_collection_its_licences(
    tmp_path: Path, offline_stac_validation: Callable[[], None]
) -> None:
    folder = tmp_path / "cross-sensor" / "ROI_000001"
    folder.mkdir(parents=True)
    for name in ("LR.tif", "HR.tif"):
        (folder / name).write_bytes(b"II*\x00")
    sample = StacSample(
        item_id="ROI_000001",
        product="cross-sensor",
        folder="cross-sensor/ROI_000001",
        assets=("HR.tif", "LR.tif"),
        geometry=SQUARE,
        when=datetime(2021, 6, 19, 17, 26, tzinfo=UTC),
        split="test",
        properties={"qa1_px": 0.4, "qa2_deg": float("nan")},
        sources=(("sentinel-2-l2a", "S2A_MSIL2A_X"), ("naip", "ks_m_1")),
    )
    api = "https://planetarycomputer.microsoft.com/api/stac/v1"
    licences = [
        source_license("sentinel-2-l2a", "planetary-computer"),
        source_license("naip", "pc"),
    ]
    path = write_collection(
        tmp_path,
        collection_id="ds",
        description="test",
        samples=[sample],
        licenses=licences,
        item_url={c: f"{api}/collections/{c}/items" for c in ("sentinel-2-l2a", "naip")},
        version="1.2.0",
        extra={"harvest:config_hash": "abc"},
    )
    offline_stac_validation()
    collection = pystac.Collection.from_file(str(path))
    collection.validate()
    assert collection.license == "various" and collection.extra_fields["version"] == "1.2.0"
    titles = [link.title or "" for link in collection.get_links("license")]
    assert any("Copernicus Sentinel" in t for t in titles) and any("NAIP" in t for t in titles)
    item = next(collection.get_items())
    item.validate()
    assert item.properties["ml-aoi:split"] == "test"
    assert item.properties["qa2_deg"] is None  # NaN is not JSON
    hrefs = sorted(link.href for link in item.get_links("derived_from"))
    assert hrefs == [
        f"{api}/collections/naip/items/ks_m_1",
        f"{api}/collections/sentinel-2-l2a/items/S2A_MSIL2A_X",
    ]
    raw = json.loads((tmp_path / "stac" / "ROI_000001" / "ROI_000001.json").read_text())
    assert raw["assets"]["HR"]["href"] == "../../cross-sensor/ROI_000001/HR.tif"
    assert Path(item.assets["HR"].get_absolute_href() or "").read_bytes() == b"II*\x00"


def test_demo_scenes_carry_the_demo_licence() -> None:
    assert "Simulated" in source_license("sentinel-2-l2a", "demo").title
    assert "see the provider" in source_license("landsat-c2-l2", "earth-search").title
