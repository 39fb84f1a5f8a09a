"""The href policy (harvest.hrefs): what a remote catalog's items may make harvest read.

Name resolution is injected (a dict of answers), so no test asks DNS; IP literals are never
resolved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from harvest.backends.gdal.reader import RasterioReader
from harvest.errors import AssetReadError, ConfigError, HrefRefusedError
from harvest.hrefs import (
    LOCAL_POLICY,
    REMOTE_RASTER_DRIVERS,
    AllowedHost,
    HrefPolicy,
    infer_catalog_kind,
    parse_allowed_host,
    parse_allowed_hosts,
)
from harvest.tables import SearchMetadata

DNS = {
    "public.example": ("93.184.216.34",),
    "internal.example": ("10.0.0.5",),
    "sneaky.example": ("93.184.216.34", "127.0.0.1"),
    "metadata.example": ("169.254.169.254",),
}


def resolve(name: str) -> tuple[str, ...]:
    return DNS.get(name, ())


API = HrefPolicy.for_catalog("stac-api")
EE = HrefPolicy.for_catalog("earth-engine")


def refusal(href: str, policy: HrefPolicy = API) -> str | None:
    return policy.refusal(href, resolve)


@pytest.mark.parametrize(
    "href",
    [
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/14/S/T_B04_10m.tif",
        "http://public.example/a.tif",
        "HTTPS://Public.Example:8443/a.tif?sig=abc",
        "https://93.184.216.34/a.tif",
        "https://[2606:4700::1111]/a.tif",
        "https://unresolvable.invalid/a.tif",  # the read fails by itself; nothing to protect
        "s3://sentinel-cogs/sentinel-s2-l2a-cogs/B04.tif",
        "gs://gcp-public-data/x.tif",
        "az://container/blob.tif",
        "/vsicurl/https://public.example/a.tif",
        "/vsicurl_streaming/http://public.example/a.tif",
        "/vsis3/bucket/key.tif",
        "/vsis3_streaming/bucket/key.tif",
        "/vsigs/bucket/key.tif",
        "/vsiaz/container/blob.tif",
    ],
)
def test_public_urls_and_buckets_are_read_from_a_remote_catalog(href: str) -> None:
    assert refusal(href) is None


@pytest.mark.parametrize(
    ("href", "why"),
    [
        ("/etc/passwd", "local path"),
        ("relative/B04.tif", "local path"),
        ("C:\\data\\B04.tif", "local path"),
        ("file:///etc/passwd", "file:// URL"),
        ("FILE:///etc/passwd", "file:// URL"),
        ("ftp://public.example/a.tif", "scheme 'ftp'"),
        ("zip+https://public.example/a.zip!/a.tif", "scheme 'zip+https'"),
        ("WMS:http://public.example/wms", "scheme 'wms'"),
        ("vrt:///etc/x.tif?bands=1", "scheme 'vrt'"),
        ("ee://COPERNICUS/S2_SR/X#B4", "earth-engine provider"),
        ("", "empty"),
        (" http://public.example/a.tif", "whitespace"),
        ("http://public.example/a\n.tif", "whitespace"),
        ("http://user:pw@public.example/a.tif", "not a plain HOST"),
        ("http://127.0.0.1\\@public.example/a.tif", "not a plain HOST"),
        ("http://%31%32%37.0.0.1/a.tif", "not a plain HOST"),
        ("http://[::1/a.tif", "not a valid URL"),
        ("s3://[x/a.tif", "not a valid URL"),
        ("http:///a.tif", "not a plain HOST"),
        ("http://public.example:99999/a.tif", "not a plain HOST"),
        ("s3:///key.tif", "bucket and a key"),
        ("s3://bucket", "bucket and a key"),
    ],
)
def test_local_files_and_other_schemes_are_refused_from_a_remote_catalog(
    href: str, why: str
) -> None:
    text = refusal(href)
    assert text is not None and why in text, text
    assert text.startswith("refused a remote catalog's href (") and text.endswith(f"): {href}")


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("100.64.0.1", "not a public"),  # carrier-grade NAT: not private, not public either
        ("240.0.0.1", "reserved"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("[ff02::1]", "multicast"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("[2002:7f00:1::]", "loopback"),  # 6to4 around 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(host: str, kind: str) -> None:
    for href in (f"http://{host}/a.tif", f"https://{host}:8443/a.tif", f"/vsicurl/http://{host}/x"):
        text = refusal(href)
        assert text is not None and kind in text, text
        assert "--allow-host" in text and "HARVEST_ALLOW_HOSTS" in text


def test_names_are_judged_by_what_they_resolve_to() -> None:
    text = refusal("http://internal.example/a.tif")
    assert text is not None and "resolves to 10.0.0.5, a private address" in text
    # One bad address among good ones is enough to refuse.
    text = refusal("http://sneaky.example/a.tif")
    assert text is not None and "127.0.0.1" in text and "loopback" in text
    assert "link-local" in (refusal("http://metadata.example/latest") or "")
    assert refusal("http://public.example/a.tif") is None
    # localhost and its kin are refused without asking DNS (here it would not answer).
    for name in ("localhost", "LOCALHOST.", "api.localhost", "ip6-localhost"):
        text = refusal(f"http://{name}:8080/a.tif")
        assert text is not None and "loopback" in text, name


def test_the_default_resolver_sees_through_numeric_hosts() -> None:
    # libc reads 2130706433 and 0x7f.1 as 127.0.0.1, and so does curl: no DNS is involved.
    for host in ("2130706433", "0x7f.1", "127.1"):
        text = API.refusal(f"http://{host}/a.tif")
        assert text is not None and "127.0.0.1, a loopback address" in text, host


def test_the_allow_list_with_and_without_port() -> None:
    policy = HrefPolicy.for_catalog(
        "stac-api", ["127.0.0.1:8080", "10.0.0.5", "[::1]:9000", "Internal.Example"]
    )

    def ok(href: str) -> bool:
        return policy.refusal(href, resolve) is None

    assert ok("http://127.0.0.1:8080/a.tif")
    assert not ok("http://127.0.0.1:8081/a.tif")
    assert not ok("http://127.0.0.1/a.tif")  # port 80
    assert ok("http://10.0.0.5/a.tif") and ok("https://10.0.0.5:1234/a.tif")  # any port
    assert ok("http://[::1]:9000/a.tif") and ok("http://[0:0::1]:9000/a.tif")  # by value
    assert not ok("http://[::1]:9001/a.tif")
    assert ok("http://internal.example/a.tif") and ok("http://INTERNAL.example:81/a.tif")
    assert not ok("http://localhost:8080/a.tif")  # hosts are compared as written
    # Default ports: an entry with :80 / :443 matches URLs that leave them out.
    web = HrefPolicy.for_catalog("stac-api", ["10.0.0.7:80", "10.0.0.8:443"])
    assert web.refusal("http://10.0.0.7/a.tif") is None
    assert web.refusal("https://10.0.0.8/a.tif") is None
    assert web.refusal("https://10.0.0.7/a.tif") is not None
    # The allow-list is about hosts: it never opens local files.
    anything = HrefPolicy.for_catalog("stac-api", ["localhost", "127.0.0.1"])
    assert anything.refusal("/etc/passwd") is not None
    assert anything.refusal("file:///etc/passwd") is not None


@pytest.mark.parametrize(
    "href",
    [
        "/vsimem/x.tif",
        "/vsizip//vsicurl/https://public.example/a.zip/a.tif",
        "/vsizip/a.zip/a.tif",
        "/vsigzip//etc/x.gz",
        "/vsitar/a.tar/a.tif",
        "/vsisubfile/0_100,/etc/x",
        "/vsicrypt/key=x,file=/etc/x",
        "/vsistdin/",
        "/vsiadls/fs/x.tif",
        "/vsicurl?url=http%3A%2F%2F127.0.0.1%2Fx.tif",
        "/vsicurl/file:///etc/passwd",
        "/vsicurl//vsimem/x",
        "/vsi",
    ],
)
def test_gdal_local_and_wrapping_prefixes_are_refused(href: str) -> None:
    text = refusal(href)
    assert text is not None and text.endswith(f"): {href}"), text


@pytest.mark.parametrize(
    "href",
    [
        "https://public.example/mosaic.vrt",
        "https://public.example/mosaic.VRT?sig=abc",
        "s3://bucket/mosaic.vrt",
        "/vsicurl/https://public.example/mosaic.vrt",
        "/vsis3/bucket/mosaic.vrt",
    ],
)
def test_vrts_of_a_remote_catalog_are_refused(href: str) -> None:
    text = refusal(href)
    assert text is not None and "VRT" in text, text
    assert refusal(href, HrefPolicy.for_catalog("stac-api", ["public.example"])) is not None


def test_earth_engine_assets_only_from_the_earth_engine_provider() -> None:
    assert refusal("ee://COPERNICUS/S2_SR_HARMONIZED/X#B4", EE) is None
    assert refusal("ee://COPERNICUS/S2_SR_HARMONIZED/X#B4", API) is not None
    # The Earth Engine provider is remote: the rest of the rules hold for it too.
    assert refusal("/etc/passwd", EE) is not None
    assert refusal("http://127.0.0.1:9/a.tif", EE) is not None


@pytest.mark.parametrize(
    "href",
    [
        "/etc/passwd",
        "file:///data/x.tif",
        "/vsizip/a.zip/a.tif",
        "http://127.0.0.1:9/a.tif",
        "http://localhost/x.vrt",
        "ee://X/Y#B",
    ],
)
def test_a_local_catalog_reads_everything(href: str) -> None:
    for policy in (LOCAL_POLICY, HrefPolicy.for_catalog("stac-geoparquet")):
        assert policy.refusal(href, resolve) is None
        policy.check(href, resolve)
    assert LOCAL_POLICY.raster_drivers is None and LOCAL_POLICY.gdal_options == {}


def test_check_raises_a_read_error_naming_the_href() -> None:
    with pytest.raises(HrefRefusedError, match=r"--allow-host 127\.0\.0\.1:9\b.*: http://127"):
        API.check("http://127.0.0.1:9/a.tif")
    with pytest.raises(HrefRefusedError, match="/etc/passwd"):
        API.check_all(["https://public.example/a.tif", "/etc/passwd"], resolve)
    API.check_all(["https://public.example/a.tif", "s3://b/k.tif"], resolve)
    assert API.raster_drivers == REMOTE_RASTER_DRIVERS
    assert API.gdal_options == {"GDAL_VRT_ENABLE_RAWRASTERBAND": "NO"}


def test_allow_list_entries() -> None:
    assert parse_allowed_host("127.0.0.1:8080") == AllowedHost("127.0.0.1", 8080)
    assert parse_allowed_host(" Data.Example.ORG ") == AllowedHost("data.example.org")
    assert parse_allowed_host("[::1]:9000") == AllowedHost("::1", 9000)
    assert parse_allowed_host("[::1]") == AllowedHost("::1")
    assert parse_allowed_host("::1") == AllowedHost("::1")
    assert str(AllowedHost("::1", 9000)) == "[::1]:9000"
    assert parse_allowed_hosts(["a.example, 127.0.0.1:1", "", " , a.example", "b.example"]) == (
        AllowedHost("a.example"),
        AllowedHost("127.0.0.1", 1),
        AllowedHost("b.example"),
    )
    for bad in ("user@host", "a b", "host:0", "host:70000", "http://host", "host:", "[::1"):
        with pytest.raises(ConfigError, match="--allow-host") as info:
            parse_allowed_host(bad)
        assert "HARVEST_ALLOW_HOSTS" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="catalog kind"):
        HrefPolicy.for_catalog("ftp-server")


def test_catalog_kinds_of_old_pairs_tables() -> None:
    assert infer_catalog_kind("https://planetarycomputer.microsoft.com/api/stac/v1") == "stac-api"
    assert infer_catalog_kind("http://127.0.0.1:8080") == "stac-api"
    assert infer_catalog_kind("planetary-computer") == "stac-api"
    assert infer_catalog_kind("earth-search") == "stac-api"
    assert infer_catalog_kind("earth-engine") == "earth-engine"
    assert infer_catalog_kind("demo") == "stac-geoparquet"
    assert infer_catalog_kind("/data/snapshots/pc") == "stac-geoparquet"
    assert infer_catalog_kind("", "earth-engine") == "earth-engine"
    fields = {
        "stage": "search", "recipe": "sen2naip", "recipe_hash": "h", "provider": "demo",
        "start": "2020-01-01", "end": "2020-12-31", "n_requests": 1, "n_rois": 1,
        "all_candidates": False, "harvest_version": "0",
    }  # fmt: skip
    old = SearchMetadata.from_json({**fields, "catalog": "http://127.0.0.1:1/stac"}, Path("p"))
    assert old.catalog_kind == "" and old.kind == "stac-api"
    local = SearchMetadata.from_json({**fields, "catalog": "/data/world"}, Path("p"))
    assert local.kind == "stac-geoparquet"
    new = SearchMetadata.from_json(
        {**fields, "catalog": "/data/world", "catalog_kind": "stac-api"}, Path("p")
    )
    assert new.kind == "stac-api" and new.to_json()["catalog_kind"] == "stac-api"


def _write_cog_and_vrt(folder: Path) -> tuple[Path, Path]:
    tif = folder / "real.tif"
    profile = {
        "driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32614", "transform": from_origin(500000, 4000080, 10, 10),
    }  # fmt: skip
    with rasterio.open(tif, "w", **profile) as ds:
        ds.write(np.full((1, 8, 8), 7, np.uint8))
    disguised = folder / "disguised.tif"
    disguised.write_text(
        '<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{tif}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return tif, disguised


def test_the_remote_reader_opens_no_vrt_in_disguise(tmp_path: Path) -> None:
    tif, disguised = _write_cog_and_vrt(tmp_path)
    remote = RasterioReader(drivers=REMOTE_RASTER_DRIVERS)
    with remote._open(str(tif)) as ds:
        assert ds.driver == "GTiff"
    with pytest.raises(AssetReadError, match="not a GTiff or JP2OpenJPEG file.*VRTs are not"):
        remote._open(str(disguised))
    # Any driver for a local catalog's reader: the user's own VRT opens.
    with RasterioReader()._open(str(disguised)) as ds:
        assert ds.driver == "VRT" and int(ds.read(1).max()) == 7
