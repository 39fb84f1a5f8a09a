"""The backend registry: the catalog a ``--catalog`` value names, the reader an href needs.

No network: building a catalog or a reader sends no request (that is part of the contract).
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from harvest.backends.base import AssetMap, AssetRef
from harvest.backends.earthengine.reader import EarthEngineReader
from harvest.backends.earthengine.search import EarthEngineCatalog
from harvest.backends.gdal.reader import RasterioReader
from harvest.backends.registry import (
    ReaderSettings,
    close_readers,
    default_ee_project,
    is_demo_world,
    open_catalog,
    reader_for,
    signer_for,
)
from harvest.backends.stac_api.catalog import StacApiCatalog
from harvest.backends.stac_api.planetary_computer import PlanetaryComputerSigner
from harvest.backends.stac_parquet.catalog import StacParquetCatalog
from harvest.errors import ConfigError

PC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
ES_URL = "https://earth-search.aws.element84.com/v1"


def write_snapshot(path: Path) -> Path:
    """A one-item stac-geoparquet file (the columns the parquet backend requires)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bbox = pa.StructArray.from_arrays(
        [pa.array([v]) for v in (-1.0, -1.0, 1.0, 1.0)], names=["xmin", "ymin", "xmax", "ymax"]
    )
    table = pa.table(
        {
            "id": ["S2A_1"],
            "collection": ["sentinel-2-l2a"],
            "geometry": [shapely.to_wkb(shapely.box(-1, -1, 1, 1))],
            "bbox": bbox,
            "datetime": pa.array([datetime(2021, 6, 1, tzinfo=UTC)], pa.timestamp("us", "UTC")),
        }
    )
    pq.write_table(table, path)
    return path


def make_demo_world(folder: Path) -> Path:
    (folder / "truth.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "truth.json").write_text("{}")
    write_snapshot(folder / "stac-geoparquet" / "items.parquet")
    return folder


# --- catalogs by spec ---------------------------------------------------------------------------


def test_provider_names_open_their_backend() -> None:
    pc = open_catalog("planetary-computer")
    assert (pc.kind, pc.location, pc.name) == ("stac-api", PC_URL, "planetary-computer")
    assert isinstance(pc.catalog, StacApiCatalog) and pc.catalog.provider == "planetary-computer"
    # Planetary Computer's hrefs are signed right before a read, Earth Search's are not.
    assert pc.catalog._sign == PlanetaryComputerSigner()
    es = open_catalog("earth-search")
    assert (es.kind, es.location) == ("stac-api", ES_URL)
    assert isinstance(es.catalog, StacApiCatalog) and es.catalog._sign is None
    ee = open_catalog("earth-engine", ee_project="my-project")
    assert (ee.kind, ee.location) == ("earth-engine", "my-project")
    assert isinstance(ee.catalog, EarthEngineCatalog)
    assert open_catalog("earth-engine").location == "(default project)"


def test_a_url_is_a_stac_api_with_the_profile_of_its_provider() -> None:
    known = open_catalog(ES_URL + "/")
    assert known.kind == "stac-api" and known.catalog.provider == "earth-search"
    other = open_catalog("http://127.0.0.1:9/stac")
    assert (other.kind, other.location) == ("stac-api", "http://127.0.0.1:9/stac")
    assert other.catalog.provider == "planetary-computer"  # the default vocabulary
    assert open_catalog(ES_URL, profile="demo").catalog.provider == "demo"


def test_a_parquet_file_or_folder_is_a_snapshot(tmp_path: Path) -> None:
    file = write_snapshot(tmp_path / "snap" / "items.parquet")
    opened = open_catalog(str(file))
    assert (opened.kind, opened.location) == ("stac-geoparquet", str(file))
    assert isinstance(opened.catalog, StacParquetCatalog)
    assert opened.catalog.provider == "planetary-computer"
    folder = open_catalog(str(file.parent), profile="earth-search")
    assert folder.catalog.provider == "earth-search"


def test_a_demo_world_folder_is_searched_through_its_snapshot(tmp_path: Path) -> None:
    world = make_demo_world(tmp_path / "world")
    assert is_demo_world(world) and not is_demo_world(tmp_path)
    opened = open_catalog(str(world))
    assert (opened.kind, opened.location) == ("stac-geoparquet", str(world / "stac-geoparquet"))
    assert opened.catalog.provider == "demo"
    named = open_catalog("demo", demo_world=world)
    assert named.location == str(world / "stac-geoparquet") and named.catalog.provider == "demo"


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("no-such-provider", {}, "neither a provider"),
        ("demo", {}, "needs a demo world"),
        ("demo", {"demo_world": "/nonexistent"}, "is not a demo world"),
        ("planetary-computer", {"timeout_s": 0}, "must be > 0"),
    ],
)
def test_bad_specs_are_config_errors(spec: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_catalog(spec, **kwargs)  # type: ignore[arg-type]


def test_signers_and_the_earth_engine_project() -> None:
    assert signer_for("planetary-computer", 3.0) == PlanetaryComputerSigner(timeout_s=3.0)
    assert signer_for("earth-search") is None and signer_for("unknown") is None
    assert default_ee_project({"EE_PROJECT": "a", "GOOGLE_CLOUD_PROJECT": "b"}) == "a"


# --- readers by href scheme ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_readers() -> object:
    close_readers()
    yield None
    close_readers()


@pytest.mark.parametrize(
    "href",
    ["/data/B04.tif", "file:///data/B04.tif", "https://x.org/B04.tif", "/vsis3/bucket/B04.tif"],
)
def test_every_href_but_ee_goes_to_the_gdal_reader(href: str) -> None:
    assert isinstance(reader_for(href), RasterioReader)


def test_ee_hrefs_go_to_the_earth_engine_reader() -> None:
    href = "ee://COPERNICUS/S2_SR_HARMONIZED/20210613T184919_20210613T185458_T10SGF#B4"
    reader = reader_for(href, ReaderSettings(ee_project="p", ee_url="http://127.0.0.1:9"))
    assert isinstance(reader, EarthEngineReader)
    assert (reader.project, reader.opt_url) == ("p", "http://127.0.0.1:9")
    # A scene's assets: any ee:// asset makes it an Earth Engine scene.
    scene = AssetMap({"B04": AssetRef(href), "SCL": AssetRef(href.replace("#B4", "#SCL"))})
    assert reader_for(scene, ReaderSettings(ee_project="p", ee_url="http://127.0.0.1:9")) is reader
    assert reader_for(scene, ReaderSettings(ee_project="q")) is not reader


def test_one_reader_per_process_and_settings() -> None:
    settings = ReaderSettings(sign=PlanetaryComputerSigner(), drivers=("GTiff",))
    reader = reader_for("/a.tif", settings)
    assert isinstance(reader, RasterioReader)
    assert reader.drivers == ("GTiff",) and reader.sign == PlanetaryComputerSigner()
    assert reader_for("/b.tif", settings) is reader
    # A copy of the settings (as a Dask worker receives them) finds the same reader.
    assert reader_for("/a.tif", pickle.loads(pickle.dumps(settings))) is reader
    assert reader_for("/a.tif", ReaderSettings()) is not reader
    close_readers()
    assert reader_for("/a.tif", settings) is not reader


def test_reader_settings_with_a_timeout() -> None:
    settings = ReaderSettings.with_timeout(
        7.5, gdal_options={"GDAL_CACHEMAX": 1}, ee_project="p", drivers=("GTiff",)
    )
    assert settings.gdal_options == {
        "GDAL_CACHEMAX": 1,
        "GDAL_HTTP_TIMEOUT": 8,
        "GDAL_HTTP_CONNECTTIMEOUT": 8,
    }
    assert (settings.ee_deadline_s, settings.ee_project, settings.drivers) == (7.5, "p", ("GTiff",))
    defaults = ReaderSettings.with_timeout(None)
    assert defaults.gdal_options == ReaderSettings().gdal_options
    assert defaults.ee_deadline_s is None
    ee = reader_for("ee://C/I#B", settings)
    assert isinstance(ee, EarthEngineReader) and ee.deadline_s == 7.5
    with pytest.raises(ConfigError, match="must be > 0"):
        ReaderSettings.with_timeout(0)
