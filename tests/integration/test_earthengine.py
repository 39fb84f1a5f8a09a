"""The Earth Engine backend driven through the real earthengine-api client, against loopback.

The client is initialised against :mod:`tests.integration.ee_server` (discovery document and
algorithm list from the ee wheel, ``value:compute`` evaluated by a tiny interpreter over a fake
catalog). The tests check what goes over the wire (the expression graph), how answers become
SceneRefs, the request count, and the reaction to 429 and to "User memory limit exceeded.".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import google.auth.credentials
import numpy as np
import pytest
import shapely
import shapely.geometry
from ee_server import EEServer, FakeImage, fake_earth_engine, graph_invocations

from harvest.backends.base import Footprint, SearchRequest
from harvest.backends.earthengine.assets import CLOUD_SCORE_ASSET, split_ee_href
from harvest.backends.earthengine.search import EarthEngineCatalog, plan_batches
from harvest.backends.registry import default_ee_project
from harvest.errors import CatalogError

S2 = "COPERNICUS/S2_SR_HARMONIZED"
CS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
NAIP = "USDA/NAIP/DOQQ"
S1 = "COPERNICUS/S1_GRD"
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12", "SCL")
START = datetime(2021, 6, 1, tzinfo=UTC)
END = datetime(2021, 6, 30, 23, 59, 59, tzinfo=UTC)

# Three areas: A (California), B (Nebraska), C (North Carolina).
BOX_A = (-120.2, 36.9, -118.9, 38.1)
BOX_B = (-100.3, 39.9, -99.0, 41.1)
BOX_C = (-80.6, 34.9, -79.4, 36.1)


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def _s2(index: str, box: tuple[float, ...], when: int, cloud: float, baseline: str, tile: str,
        epsg: int) -> FakeImage:  # fmt: skip
    return FakeImage(
        collection=S2,
        index=index,
        time_start_ms=when,
        footprint=shapely.box(*box),
        properties={
            "CLOUDY_PIXEL_PERCENTAGE": cloud,
            "MGRS_TILE": tile,
            "PROCESSING_BASELINE": baseline,
            "SPACECRAFT_NAME": "Sentinel-2A",
            "MEAN_SOLAR_AZIMUTH_ANGLE": 140.5,
            "MEAN_SOLAR_ZENITH_ANGLE": 22.0,
            "MEAN_INCIDENCE_ZENITH_ANGLE_B8": 6.25,
        },
        bands=S2_BANDS,
        crs=f"EPSG:{epsg}",
        scale_m=10.0,
    )


def fake_catalog() -> list[FakeImage]:
    """A handful of S2, Cloud Score+, NAIP and S1 images around the three areas."""
    s2 = [
        _s2("20210603T184919_20210603T185749_T10SGF", BOX_A, _ms(2021, 6, 3, 18, 59), 4.5,
            "03.00", "10SGF", 32610),
        _s2("20210608T184921_20210608T185950_T10SGF", BOX_A, _ms(2021, 6, 8, 18, 59), 55.0,
            "04.00", "10SGF", 32610),
        _s2("20210613T184919_20210613T185458_T10SGF", BOX_A, _ms(2021, 6, 13, 18, 59), 0.0,
            "04.00", "10SGF", 32610),
        _s2("20210610T173901_20210610T174520_T14TLK", BOX_B, _ms(2021, 6, 10, 17, 40), 12.0,
            "04.00", "14TLK", 32614),
        _s2("20210720T155829_20210720T160413_T17SPV", BOX_C, _ms(2021, 7, 20, 16, 0), 1.0,
            "04.00", "17SPV", 32617),  # outside the window
        _s2("20210612T103021_20210612T103546_T32TMT", (8.0, 46.0, 9.3, 47.1),
            _ms(2021, 6, 12, 10, 35), 1.0, "04.00", "32TMT", 32632),  # far from every footprint
        _s2("20210531T184919_20210531T185749_T10SGF", BOX_A, _ms(2021, 5, 31, 18, 59), 1.0,
            "03.00", "10SGF", 32610),  # the day before the window
    ]  # fmt: skip
    scores = [
        FakeImage(CS, s2[i].index, s2[i].time_start_ms, s2[i].footprint, {}, ("cs", "cs_cdf"))
        for i in (0, 2, 3)  # the 55 % cloudy scene has no score image
    ]
    naip = [
        FakeImage(NAIP, "m_3711901_ne_11_060_20210605", _ms(2021, 6, 5), shapely.box(*BOX_A),
                  {}, ("R", "G", "B", "N"), "EPSG:26911", 0.6),
        FakeImage(NAIP, "m_3711901_ne_11_1_20210606", _ms(2021, 6, 6), shapely.box(*BOX_A),
                  {}, ("R", "G", "B"), "EPSG:26911", 1.0),  # no NIR: dropped
    ]  # fmt: skip
    s1 = [
        FakeImage(S1, "S1A_IW_GRDH_1SDV_20210604T015102_20210604T015127_038183_04815C_A1B2",
                  _ms(2021, 6, 4, 1, 51), shapely.box(*BOX_B),
                  {"instrumentMode": "IW", "transmitterReceiverPolarisation": ["VV", "VH"],
                   "platform_number": "A"}, ("VV", "VH", "angle"), "EPSG:4326", 10.0),
        FakeImage(S1, "S1B_EW_GRDM_1SDH_20210605T015102_20210605T015127_027183_03415C_C3D4",
                  _ms(2021, 6, 5, 1, 51), shapely.box(*BOX_B),
                  {"instrumentMode": "EW", "transmitterReceiverPolarisation": ["HH", "HV"],
                   "platform_number": "B"}, ("HH", "HV", "angle"), "EPSG:4326", 40.0),
        FakeImage(S1, "S1A_IW_GRDH_1SSH_20210616T015102_20210616T015127_038358_04815C_E5F6",
                  _ms(2021, 6, 16, 1, 51), shapely.box(*BOX_B),
                  {"instrumentMode": "IW", "transmitterReceiverPolarisation": ["HH"],
                   "platform_number": "A"}, ("HH", "angle"), "EPSG:4326", 10.0),
    ]  # fmt: skip
    return s2 + scores + naip + s1


def footprints(n_per_area: int, seed: int = 0) -> tuple[Footprint, ...]:
    """Small disjoint squares (about 1 km) inside the three areas."""
    rng = np.random.default_rng(seed)
    out = []
    for name, box in (("a", BOX_A), ("b", BOX_B), ("c", BOX_C)):
        xs = np.linspace(box[0] + 0.1, box[2] - 0.1, n_per_area)
        ys = rng.uniform(box[1] + 0.1, box[3] - 0.1, n_per_area)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            out.append(Footprint(f"{name}{i}", shapely.box(x, y, x + 0.01, y + 0.01)))
    return tuple(out)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EEServer]:
    """A fresh fake Earth Engine per test; the client state is reset afterwards."""
    with fake_earth_engine(monkeypatch, fake_catalog()) as srv:
        yield srv


def make_catalog(srv: EEServer, **kwargs: Any) -> EarthEngineCatalog:
    return EarthEngineCatalog(
        project="harvest-test",
        opt_url=srv.url,
        credentials=google.auth.credentials.AnonymousCredentials(),
        **kwargs,
    )


def request(fps: tuple[Footprint, ...], collections: tuple[str, ...], cloud: float | None = 20.0
            ) -> SearchRequest:  # fmt: skip
    return SearchRequest(footprints=fps, collections=collections, start=START, end=END,
                         max_cloud_pct=cloud)  # fmt: skip


def truth(srv: EEServer, req: SearchRequest, collection_id: str, cloud_key: str | None) -> set[str]:
    """What an exact search of the fake catalog must return (ids)."""
    start_ms = int(req.start.timestamp() * 1000)
    end_ms = int(req.end.timestamp() * 1000)
    union = shapely.unary_union([f.geometry for f in req.footprints])
    out = set()
    for img in srv.catalog:
        if img.collection != collection_id or not start_ms <= img.time_start_ms <= end_ms:
            continue
        cloud = img.properties.get(cloud_key) if cloud_key else None
        if req.max_cloud_pct is not None and cloud is not None and cloud > req.max_cloud_pct:
            continue
        if img.footprint.intersects(union):
            out.add(img.index)
    return out


def calls(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(graph_invocations(body["expression"]))


def region_of(body: dict[str, Any]) -> shapely.geometry.MultiPolygon:
    """The search region of a request (the same node wherever the graph uses it)."""
    regions = [
        json.dumps(a["coordinates"])
        for n, a in calls(body)
        if n == "GeometryConstructors.MultiPolygon"
    ]
    assert regions and len(set(regions)) == 1
    coords = json.loads(regions[0])
    return shapely.geometry.MultiPolygon([shapely.geometry.Polygon(p[0], p[1:]) for p in coords])


# --- wire format and parsing -----------------------------------------------------------------


def test_constructor_is_lazy_and_search_initialises_against_the_server(server: EEServer) -> None:
    catalog = make_catalog(server)
    assert server.requests == []  # no network in the constructor
    catalog.search(request(footprints(2), ("sentinel-2-l2a",)))
    paths = [r.path for r in server.requests]
    assert paths[0].startswith("/$discovery/rest")
    assert any(p.split("?")[0].endswith("/algorithms") for p in paths)
    api_calls = [p for p in paths if not p.startswith("/$discovery/")]
    assert api_calls and all("/projects/harvest-test/" in p for p in api_calls)


def test_one_request_carries_every_footprint_with_date_bounds_and_cloud_filters(
    server: EEServer,
) -> None:
    fps = footprints(15)  # 45 footprints in three areas
    req = request(fps, ("sentinel-2-l2a",), cloud=20.0)
    result = make_catalog(server).search(req)

    (sent,) = server.compute_requests()
    invocations = calls(sent.body)
    loaded = {a["id"] for n, a in invocations if n == "ImageCollection.load"}
    assert loaded == {S2, CS}
    ranges = [a for n, a in invocations if n == "DateRange"]
    assert ranges and all(
        r == {"start": int(START.timestamp() * 1000), "end": int(END.timestamp() * 1000) + 1}
        for r in ranges
    )
    # ee.Filter.lte travels as not(greaterThan): scenes above 20 % are filtered server side
    cloud_filters = [a for n, a in invocations if n == "Filter.greaterThan"]
    assert cloud_filters == [{"leftField": "CLOUDY_PIXEL_PERCENTAGE", "rightValue": 20.0}]
    assert [n for n, _ in invocations if n == "Filter.not"] == ["Filter.not"]
    region = region_of(sent.body)
    assert len(region.geoms) == len(fps)  # disjoint squares: one polygon each, all in ONE request
    assert all(region.buffer(1e-6).covers(f.geometry) for f in fps)
    joins = [a for n, a in invocations if n == "Join.saveFirst"]
    assert joins and joins[0]["outer"] is True
    assert {"leftField": "system:index", "rightField": "system:index"} in [
        a for n, a in invocations if n == "Filter.equals"
    ]
    limits = [a["limit"] for n, a in invocations if n == "Collection.limit"]
    assert limits == [5000]

    ids = {s.item_id for s in result.scenes}
    assert ids == truth(server, req, S2, "CLOUDY_PIXEL_PERCENTAGE")
    assert ids == {
        "20210603T184919_20210603T185749_T10SGF",
        "20210613T184919_20210613T185458_T10SGF",
        "20210610T173901_20210610T174520_T14TLK",
    }
    assert result.stats.n_requests == 1
    assert result.stats.n_footprints == 45
    assert result.stats.n_scenes == 3


def test_answers_are_parsed_into_scene_refs(server: EEServer) -> None:
    result = make_catalog(server).search(request(footprints(3), ("sentinel-2-l2a",), cloud=None))
    by_id = {s.item_id: s for s in result.scenes}
    scene = by_id["20210613T184919_20210613T185458_T10SGF"]
    assert scene.collection == "sentinel-2-l2a"
    assert scene.provider == "earth-engine"
    assert scene.datetime == datetime(2021, 6, 13, 18, 59, tzinfo=UTC)
    assert scene.cloud_cover_pct == 0.0
    assert scene.processing_baseline == "04.00"
    assert scene.mgrs_tile == "10SGF"
    assert scene.epsg == 32610
    assert scene.gsd_m == 10.0
    assert scene.platform == "sentinel-2a"
    assert scene.sun_azimuth_deg == 140.5
    assert scene.sun_elevation_deg == pytest.approx(68.0)
    assert scene.view_off_nadir_deg == 6.25
    assert scene.geometry.equals(shapely.box(*BOX_A))
    red = scene.asset("B04")
    assert split_ee_href(red.href) == (f"{S2}/{scene.item_id}", "B4")
    # HARMONIZED has the baseline 04.00 offset removed already: DN / 10000, no offset.
    assert (red.scale, red.offset) == (0.0001, 0.0)
    scl = scene.asset("SCL")
    assert (scl.scale, scl.offset) == (1.0, 0.0)
    assert split_ee_href(scene.asset(CLOUD_SCORE_ASSET).href) == (f"{CS}/{scene.item_id}", "cs_cdf")
    # the 55 % cloudy scene has no Cloud Score+ image: no score asset, other fields intact
    cloudy = by_id["20210608T184921_20210608T185950_T10SGF"]
    assert CLOUD_SCORE_ASSET not in cloudy.assets
    assert cloudy.cloud_cover_pct == 55.0
    # the bounds of the window are inclusive: the scene of May 31 is not in June
    assert "20210531T184919_20210531T185749_T10SGF" not in by_id
    # records round-trip for the pairs table
    assert type(scene).from_record(scene.to_record()) == scene


def test_naip_and_sentinel1_filters_and_band_checks(server: EEServer) -> None:
    fps = footprints(4)
    req = request(fps, ("naip", "sentinel-1-grd"), cloud=10.0)
    result = make_catalog(server).search(req)
    sent = server.compute_requests()
    assert len(sent) == 2  # one per collection, each with every footprint
    by_collection = {}
    for r in sent:
        invocations = calls(r.body)
        (loaded,) = {a["id"] for n, a in invocations if n == "ImageCollection.load"}
        by_collection[loaded] = invocations
        assert len(region_of(r.body).geoms) == len(fps)
        # no scene cloud property on these collections: no cloud filter
        assert not [a for n, a in invocations if n == "Filter.greaterThan"]
    s1_filters = [(n, a) for n, a in by_collection[S1] if n.startswith("Filter.")]
    assert ("Filter.equals", {"leftField": "instrumentMode", "rightValue": "IW"}) in s1_filters
    assert (
        "Filter.listContains",
        {"leftField": "transmitterReceiverPolarisation", "rightValue": "VV"},
    ) in s1_filters

    naip = result.by_collection("naip")
    assert [s.item_id for s in naip] == ["m_3711901_ne_11_060_20210605"]  # 3-band one dropped
    assert naip[0].gsd_m == 0.6 and naip[0].epsg == 26911
    assert split_ee_href(naip[0].asset("nir").href)[1] == "N"
    assert naip[0].asset("red").scale == pytest.approx(1 / 255)
    s1 = result.by_collection("sentinel-1-grd")
    assert [s.item_id for s in s1] == [
        "S1A_IW_GRDH_1SDV_20210604T015102_20210604T015127_038183_04815C_A1B2"
    ]
    assert s1[0].platform == "sentinel-1a"
    assert set(s1[0].assets) == {"VV", "VH"}


def test_many_footprints_cost_few_requests_and_batching_does_not_change_the_answer(
    server: EEServer,
) -> None:
    fps = footprints(200, seed=3)  # 600 footprints
    req = request(fps, ("sentinel-2-l2a",))
    single = make_catalog(server).search(req)
    assert single.stats.n_requests == 1
    batched = make_catalog(server, max_footprints_per_request=100).search(req, progress=True)
    assert batched.stats.n_groups == 6
    assert batched.stats.n_requests == 6
    assert batched.stats.n_requests * 20 <= len(fps)
    assert batched.scenes == single.scenes
    assert {s.item_id for s in batched.scenes} == truth(server, req, S2, "CLOUDY_PIXEL_PERCENTAGE")
    # batches are spatially compact: no batch mixes the three areas
    for r in server.compute_requests()[1:]:
        xmin, _, xmax, _ = region_of(r.body).bounds
        assert xmax - xmin < 2.0


def test_plan_batches_keeps_neighbours_together() -> None:
    fps = footprints(10, seed=1)
    batches = plan_batches(fps, 10)
    assert sorted(f.key for b in batches for f in b) == sorted(f.key for f in fps)
    assert [len(b) for b in batches] == [10, 10, 10]
    for batch in batches:
        assert len({f.key[0] for f in batch}) == 1  # one area per batch


# --- errors ------------------------------------------------------------------------------------


def test_429_is_retried_by_the_client_then_succeeds(server: EEServer) -> None:
    server.push_fault(429, "Too many concurrent aggregations.", "RESOURCE_EXHAUSTED")
    server.push_fault(503, "The service is currently unavailable.", "UNAVAILABLE")
    req = request(footprints(5), ("sentinel-2-l2a",))
    result = make_catalog(server).search(req)
    sent = server.compute_requests()
    assert len(sent) == 3  # the same request, answered 429, 503, then 200
    assert sent[0].body == sent[1].body == sent[2].body
    assert {s.item_id for s in result.scenes} == truth(server, req, S2, "CLOUDY_PIXEL_PERCENTAGE")
    # the backend made one call; the client's own retries are invisible to it
    assert result.stats.n_requests == 1


def test_429_beyond_the_retry_budget_is_a_clear_error(server: EEServer) -> None:
    for _ in range(3):
        server.push_fault(429, "Too many concurrent aggregations.", "RESOURCE_EXHAUSTED")
    with pytest.raises(CatalogError, match="Too many concurrent aggregations"):
        make_catalog(server, max_retries=2).search(request(footprints(2), ("sentinel-2-l2a",)))
    assert len(server.compute_requests()) == 3  # first try + 2 retries, then it stops


def test_memory_limit_splits_the_batch_and_never_resends_it(server: EEServer) -> None:
    # a request whose collection holds > 3 images fails: area A alone has 3 scenes in June,
    # areas A and B together 4, so the first request fails and its halves pass
    server.memory_limit_images = 3
    fps = footprints(6)
    req = request(fps, ("sentinel-2-l2a",), cloud=None)
    result = make_catalog(server, max_workers=1).search(req)
    assert {s.item_id for s in result.scenes} == truth(server, req, S2, "CLOUDY_PIXEL_PERCENTAGE")
    sent = server.compute_requests()
    bodies = [json.dumps(r.body, sort_keys=True) for r in sent]
    assert len(set(bodies)) == len(bodies)  # no request was ever sent twice
    assert len(sent) > 1  # it did split
    first = region_of(sent[0].body)
    assert len(first.geoms) == len(fps)
    assert all(len(region_of(r.body).geoms) < len(fps) for r in sent[1:])
    assert result.stats.n_requests == len(sent) <= 1 + 2 + 4 + 8
    assert result.stats.n_retries == len(sent) - 1


def test_memory_limit_that_splitting_cannot_fix_is_a_clear_error(server: EEServer) -> None:
    server.memory_limit_images = 0
    with pytest.raises(CatalogError, match="User memory limit exceeded.*shorten the time window"):
        make_catalog(server, max_split_depth=2, max_workers=1).search(
            request(footprints(4), ("sentinel-2-l2a",))
        )
    sent = server.compute_requests()
    bodies = [json.dumps(r.body, sort_keys=True) for r in sent]
    assert len(set(bodies)) == len(bodies)
    assert len(sent) <= 1 + 2 + 4


def test_full_answer_is_taken_as_truncated_and_split(server: EEServer) -> None:
    fps = footprints(3)
    req = request(fps, ("sentinel-2-l2a",), cloud=None)
    result = make_catalog(server, max_images_per_request=2).search(req)
    assert {s.item_id for s in result.scenes} == truth(server, req, S2, "CLOUDY_PIXEL_PERCENTAGE")
    assert result.stats.n_requests > 1
    assert all(
        a["limit"] == 2 for r in server.compute_requests() for n, a in calls(r.body)
        if n == "Collection.limit"
    )  # fmt: skip


def test_bad_request_is_not_retried(server: EEServer) -> None:
    server.push_fault(
        400, "Image.select: Pattern 'B99' did not match any bands.", "INVALID_ARGUMENT"
    )
    with pytest.raises(
        CatalogError, match="refused the search of COPERNICUS/S2_SR_HARMONIZED.*B99"
    ):
        make_catalog(server).search(request(footprints(2), ("sentinel-2-l2a",)))
    assert len(server.compute_requests()) == 1


# --- configuration -----------------------------------------------------------------------------


def test_missing_credentials_are_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    catalog = EarthEngineCatalog(project="p", opt_url="http://127.0.0.1:9")
    with pytest.raises(CatalogError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        catalog.search(request(footprints(1), ("sentinel-2-l2a",)))


def test_unparsable_credentials_are_not_called_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    key = tmp_path / "key.json"
    key.write_text("{ this is not json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    catalog = EarthEngineCatalog(project="p", opt_url="http://127.0.0.1:9")
    with pytest.raises(CatalogError, match="cannot be used") as info:
        catalog.search(request(footprints(1), ("sentinel-2-l2a",)))
    msg = str(info.value)
    assert "no Google credentials" not in msg and str(key) in msg and "\n" not in msg


def test_unreachable_token_endpoint_is_a_network_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import json
    import socket

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    key = tmp_path / "sa.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "harvest@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"http://127.0.0.1:{port}/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    catalog = EarthEngineCatalog(project="p", opt_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(CatalogError, match="check the network and the credentials") as info:
        catalog.search(request(footprints(1), ("sentinel-2-l2a",)))
    assert "\n" not in str(info.value) and "free space" not in str(info.value)


def test_unknown_collection_and_bad_limits() -> None:
    catalog = EarthEngineCatalog(project="p")
    with pytest.raises(CatalogError, match="no collection 'venus-l2a'"):
        catalog.search(request(footprints(1), ("venus-l2a",)))
    with pytest.raises(CatalogError, match="5000"):
        EarthEngineCatalog(project="p", max_images_per_request=6000)
    with pytest.raises(CatalogError, match="1-40"):
        EarthEngineCatalog(project="p", max_workers=100)


def test_default_project_and_hrefs() -> None:
    assert default_ee_project({"EE_PROJECT": "a", "GOOGLE_CLOUD_PROJECT": "b"}) == "a"
    assert default_ee_project({"GOOGLE_CLOUD_PROJECT": "b"}) == "b"
    assert default_ee_project({"EE_PROJECT": " "}) is None
    assert split_ee_href("ee://USDA/NAIP/DOQQ/m_1#N") == ("USDA/NAIP/DOQQ/m_1", "N")
    with pytest.raises(CatalogError, match="not an Earth Engine href"):
        split_ee_href("https://example.com/a.tif")
