"""StacApiCatalog against a live stac-fastapi-pgstac server on 127.0.0.1, with and without faults.

Expected scenes come from brute force over the loaded item dicts (conftest.StacTestData), not
from the code under test. The fault tests put a loopback proxy (stac_server.FaultProxy) in front
of the real server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import shapely
from stac_server import FaultProxy, StacServer

from harvest.backends.base import Catalog, SearchRequest
from harvest.backends.profiles import ProviderProfile, load_profile
from harvest.backends.signing import signed_assets
from harvest.backends.stac_api.catalog import StacApiCatalog, group_footprints
from harvest.backends.stac_api.transport import HttpRetryPolicy
from harvest.errors import CatalogError

# Read timeout well above a loaded server's answer time, well below the proxy's slow answer.
FAST = HttpRetryPolicy(total=6, backoff_s=0.02, jitter_s=0.02, read_timeout_s=1.5)


@pytest.fixture(scope="session")
def pc() -> ProviderProfile:
    return load_profile("planetary-computer")


@pytest.fixture()
def proxy(stac_server: StacServer) -> Iterator[FaultProxy]:
    p = FaultProxy(stac_server.url, slow_s=2.5)
    try:
        yield p
    finally:
        p.close()


def keys(result: Any) -> set[tuple[str, str]]:
    return {s.key for s in result.scenes}


def expected(stac_data: Any, case: Any) -> set[tuple[str, str]]:
    return stac_data.expected_ids(
        [g for _, g in case.footprints],
        case.collections,
        case.start,
        case.end,
        case.max_cloud_pct,
    )


@pytest.mark.parametrize(
    "name",
    [
        "naip-and-s2-cloud40",
        "edges-no-cloud-limit",
        "exact-window-ends",
        "many-footprints",
        "real-pc-item-alaska",
        "ocean-nothing",
    ],
)
def test_search_returns_exactly_the_expected_scenes(
    stac_server: StacServer, stac_data: Any, cases: Any, pc: ProviderProfile, name: str
) -> None:
    case = cases[name]
    catalog = StacApiCatalog(stac_server.url, pc, page_size=50)
    assert isinstance(catalog, Catalog)
    result = catalog.search(case.request())
    want = expected(stac_data, case)
    assert keys(result) == want
    assert len(result.scenes) == len(want)  # each scene once
    assert result.stats.n_scenes == len(want)
    if name != "ocean-nothing":
        assert want, "a case with no expected scene tests nothing"
    else:
        assert result.scenes == ()
    # Deterministic order: collection, time, id.
    order = [(s.collection, s.datetime, s.item_id) for s in result.scenes]
    assert order == sorted(order)


def test_cases_exercise_cloud_limit_collections_and_window_ends(
    stac_server: StacServer, stac_data: Any, cases: Any, pc: ProviderProfile
) -> None:
    case = cases["naip-and-s2-cloud40"]
    result = StacApiCatalog(stac_server.url, pc).search(case.request())
    colls = {s.collection for s in result.scenes}
    assert colls == {"sentinel-2-l2a", "naip"}  # NAIP has no cloud cover and still passes
    assert all(s.cloud_cover_pct <= 40 for s in result.by_collection("sentinel-2-l2a"))
    unlimited = stac_data.expected_ids(
        [g for _, g in case.footprints], case.collections, case.start, case.end, None
    )
    assert len(unlimited) > len(keys(result))  # the limit removed cloudy scenes

    exact = cases["exact-window-ends"]
    got = StacApiCatalog(stac_server.url, pc).search(exact.request())
    times = {s.datetime for s in got.scenes}
    assert exact.start in times and exact.end in times  # both ends inclusive
    assert min(times) == exact.start and max(times) == exact.end


def test_cloud_filter_is_cql2_json_and_applied_by_the_server(
    proxy: FaultProxy, stac_server: StacServer, stac_data: Any, cases: Any, pc: ProviderProfile
) -> None:
    case = cases["naip-and-s2-cloud40"]
    limited = StacApiCatalog(proxy.url, pc, page_size=500).search(case.request())
    bodies = [r.body for r in proxy.searches() if r.method == "POST"]
    assert bodies
    for body in bodies:
        assert body["filter-lang"] == "cql2-json"
        assert "query" not in body
        flt = body["filter"]
        props = {
            a.get("property") for arg in flt["args"] for a in arg["args"] if isinstance(a, dict)
        }
        assert props == {"eo:cloud_cover"}
        assert body["intersects"]["type"] in ("Polygon", "MultiPolygon")
    # Server side: fewer items came over the wire than without the limit.
    req = case.request()
    no_limit = SearchRequest(req.footprints, req.collections, req.start, req.end, None)
    unlimited = StacApiCatalog(stac_server.url, pc, page_size=500).search(no_limit)
    cloudy = sum(
        1 for s in unlimited.scenes if s.cloud_cover_pct is not None and s.cloud_cover_pct > 40
    )
    assert cloudy > 0
    assert limited.stats.n_items <= unlimited.stats.n_items - cloudy


def test_pagination_is_followed_to_the_end(
    proxy: FaultProxy, stac_data: Any, cases: Any, pc: ProviderProfile
) -> None:
    case = cases["many-footprints"]
    result = StacApiCatalog(proxy.url, pc, page_size=2).search(case.request())
    assert keys(result) == expected(stac_data, case)
    stats = result.stats
    assert stats.n_pages >= 10 and stats.n_pages >= stats.n_items // 2
    posts = [r for r in proxy.searches() if r.method == "POST"]
    followed = [r for r in posts if "token" in (r.body or {})]
    assert len(followed) >= stats.n_pages - stats.n_groups
    # Every request the proxy saw was counted (landing page included).
    assert stats.n_requests == len(proxy.log)


def test_many_footprints_cost_few_requests(
    proxy: FaultProxy, stac_data: Any, cases: Any, pc: ProviderProfile
) -> None:
    case = cases["many-footprints"]
    result = StacApiCatalog(proxy.url, pc).search(case.request())
    assert keys(result) == expected(stac_data, case)
    n_fp = len(case.footprints)
    assert result.stats.n_footprints == n_fp == 300
    assert result.stats.n_requests == len(proxy.log)
    assert result.stats.n_requests * 20 <= n_fp


def test_group_footprints_makes_compact_groups_covering_all() -> None:
    fps = SearchRequest.from_geometries(
        [(f"a{i}", shapely.box(-100 + 0.5 * i, 40, -99.99 + 0.5 * i, 40.01)) for i in range(40)]
        + [(f"b{i}", shapely.box(10 + 0.01 * i, -5, 10.005 + 0.01 * i, -4.995)) for i in range(7)],
        ["sentinel-2-l2a"],
        datetime(2021, 1, 1, tzinfo=UTC),
        datetime(2021, 2, 1, tzinfo=UTC),
    ).footprints
    groups = group_footprints(fps, max_extent_deg=5.0, max_per_group=8)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(fps)))  # each footprint in exactly one group
    for g in groups:
        assert len(g) <= 8
        b = shapely.total_bounds([fps[i].geometry for i in g])
        assert b[2] - b[0] <= 5.0 and b[3] - b[1] <= 5.0
    # The 7 clustered footprints far away fit in one group.
    assert (40, 41, 42, 43, 44, 45, 46) in groups


@pytest.mark.parametrize(
    "faults",
    [
        ["429", "503"],
        ["drop", "drop"],
        ["slow"],
        ["pass", "pass", "503", "pass", "drop", "pass", "429", "504", "pass", "500", "408", "502"],
    ],
    ids=["rate-limit", "dropped", "slow", "mid-pagination-mix"],
)
def test_faults_are_retried_without_losing_or_duplicating(
    proxy: FaultProxy, stac_data: Any, cases: Any, pc: ProviderProfile, faults: list[str]
) -> None:
    case = cases["naip-and-s2-cloud40"]
    clean = StacApiCatalog(proxy.url, pc, page_size=3, policy=FAST).search(case.request())
    proxy.plan(faults)
    result = StacApiCatalog(proxy.url, pc, page_size=3, policy=FAST).search(case.request())
    assert keys(result) == keys(clean) == expected(stac_data, case)
    assert result.scenes == clean.scenes
    n_faults = sum(f != "pass" for f in faults)
    assert result.stats.n_retries == n_faults
    assert result.stats.n_pages == clean.stats.n_pages  # no page lost or read twice
    assert result.stats.n_items == clean.stats.n_items
    assert result.stats.n_requests == clean.stats.n_requests + n_faults == len(proxy.log)


def test_retry_after_is_honoured(proxy: FaultProxy, cases: Any, pc: ProviderProfile) -> None:
    proxy.retry_after = "1"
    proxy.plan(["429"])
    started = time.perf_counter()
    result = StacApiCatalog(proxy.url, pc, policy=FAST).search(
        cases["edges-no-cloud-limit"].request()
    )
    assert time.perf_counter() - started >= 1.0
    assert result.stats.n_retries == 1 and result.scenes


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("503", "too many 503 error responses"),
        ("drop", "connection dropped"),
        ("slow", "timed out"),
    ],
)
def test_exhausted_retries_raise_one_line_catalog_error(
    proxy: FaultProxy, cases: Any, pc: ProviderProfile, fault: str, reason: str
) -> None:
    proxy.plan([], persistent=fault)
    policy = HttpRetryPolicy(
        total=2, backoff_s=0.01, jitter_s=0.01, read_timeout_s=0.3, timeout_retries=2
    )
    with pytest.raises(CatalogError) as info:
        StacApiCatalog(proxy.url, pc, policy=policy).search(cases["edges-no-cloud-limit"].request())
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{proxy.url}/search" in msg and "try again" in msg
    if fault == "slow":  # timeouts say how long was waited and how to wait longer
        assert "did not answer within 0.3 s (3 tries)" in msg and "--timeout" in msg
    else:
        assert "after 2 retries" in msg and f"({reason})" in msg
    assert len(proxy.searches()) == 3  # the first try and two retries, no more


def test_timeouts_have_their_own_small_retry_budget(
    proxy: FaultProxy, cases: Any, pc: ProviderProfile
) -> None:
    proxy.plan([], persistent="slow")
    policy = HttpRetryPolicy(total=6, backoff_s=0.01, jitter_s=0.01, read_timeout_s=0.3)
    with pytest.raises(CatalogError, match=r"did not answer within 0\.3 s \(2 tries\)"):
        StacApiCatalog(proxy.url, pc, policy=policy).search(cases["edges-no-cloud-limit"].request())
    assert len(proxy.searches()) == 2  # one retry after a timeout, not six
    # The defaults give up on a silent server within a minute, backoff included.
    d = HttpRetryPolicy()
    worst = (d.timeout_retries + 1) * d.read_timeout_s + d.timeout_retries * (
        d.backoff_s + d.jitter_s
    )
    assert worst < 60.0


def test_a_stalled_answer_is_abandoned_after_the_read_timeout(
    stac_server: StacServer, cases: Any, pc: ProviderProfile
) -> None:
    slow = FaultProxy(stac_server.url, slow_s=6.0)
    try:
        slow.plan(["slow"])
        started = time.perf_counter()
        result = StacApiCatalog(slow.url, pc, policy=FAST).search(
            cases["edges-no-cloud-limit"].request()
        )
        elapsed = time.perf_counter() - started
    finally:
        slow.close()
    assert result.stats.n_retries == 1 and result.scenes
    # Gave up on the stalled answer at the 1.5 s read timeout, not when it ended (6 s).
    assert FAST.read_timeout_s <= elapsed < 5.0


def test_client_errors_are_not_retried(proxy: FaultProxy, cases: Any, pc: ProviderProfile) -> None:
    proxy.plan(["400"])
    with pytest.raises(CatalogError, match=r"HTTP 400") as info:
        StacApiCatalog(proxy.url, pc, policy=FAST).search(cases["edges-no-cloud-limit"].request())
    assert "\n" not in str(info.value) and proxy.url in str(info.value)
    assert len(proxy.searches()) == 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [("garbage", "not JSON"), ("shape", "'features' list")],
)
def test_garbage_search_answer_is_a_clear_error(
    proxy: FaultProxy, cases: Any, pc: ProviderProfile, fault: str, words: str
) -> None:
    proxy.plan([], persistent=fault)
    with pytest.raises(CatalogError, match=words) as info:
        StacApiCatalog(proxy.url, pc, policy=FAST).search(cases["edges-no-cloud-limit"].request())
    msg = str(info.value)
    assert "\n" not in msg and proxy.url in msg and "STAC API" in msg


def test_garbage_landing_page_is_a_clear_error(
    stac_server: StacServer, cases: Any, pc: ProviderProfile
) -> None:
    bad = FaultProxy(stac_server.url, match_path="/")
    try:
        bad.plan([], persistent="garbage")
        with pytest.raises(CatalogError, match="not JSON") as info:
            StacApiCatalog(bad.url, pc, policy=FAST).search(cases["ocean-nothing"].request())
        assert bad.url in str(info.value) and "\n" not in str(info.value)
    finally:
        bad.close()


def test_construction_does_no_network_io_and_dead_server_fails_clearly(
    cases: Any, pc: ProviderProfile
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    catalog = StacApiCatalog(url, pc, policy=HttpRetryPolicy(total=1, backoff_s=0.01, jitter_s=0))
    assert catalog.provider == "planetary-computer"
    with pytest.raises(CatalogError, match="no usable answer.*connection refused") as info:
        catalog.search(cases["ocean-nothing"].request())
    assert url in str(info.value)


def test_signing_happens_only_when_asked(
    stac_server: StacServer, cases: Any, pc: ProviderProfile
) -> None:
    calls: list[str] = []

    def sign(href: str) -> str:
        calls.append(href)
        return href + "?se=2030-01-01&sig=TOKEN"

    catalog = StacApiCatalog(stac_server.url, pc, sign=sign)
    result = catalog.search(cases["naip-and-s2-cloud40"].request())
    assert result.scenes and calls == []  # search never signs
    for scene in result.scenes:
        for ref in scene.assets.values():
            assert "sig=" not in ref.href and ref.href.startswith("https://")
            assert "?" not in ref.href
    scene = result.scenes[0]
    signed = catalog.signed_assets(scene)
    assert set(signed) == set(scene.assets)
    for band, ref in signed.items():
        assert ref.href == scene.assets[band].href + "?se=2030-01-01&sig=TOKEN"
        assert ref.scale == scene.assets[band].scale and ref.offset == scene.assets[band].offset
    assert all("sig=" not in r.href for r in scene.assets.values())  # scene unchanged
    assert catalog.sign_href("https://x.blob.core.windows.net/a.tif").endswith("sig=TOKEN")
    assert signed_assets(scene, None) == dict(scene.assets)


def test_real_earth_search_v0_item_through_its_own_profile(
    stac_server: StacServer, stac_data: Any
) -> None:
    base = load_profile("earth-search").model_dump()
    base["collections"] = [
        {**c, "legacy": False} for c in base["collections"] if c["id"] == "sentinel-s2-l2a-cogs"
    ]
    profile = ProviderProfile.model_validate(base)
    when = datetime(2020, 7, 14, 11, 55, 52, tzinfo=UTC)
    req = SearchRequest.from_geometries(
        [("senegal", shapely.box(-16.85, 20.3, -16.84, 20.31))],
        ["sentinel-2-l2a"],
        when - timedelta(days=1),
        when + timedelta(days=1),
        10.0,
    )
    result = StacApiCatalog(stac_server.url, profile).search(req)
    assert [s.item_id for s in result.scenes] == ["S2A_28QCH_20200714_0_L2A"]
    scene = result.scenes[0]
    assert scene.mgrs_tile == "28QCH" and scene.cloud_cover_pct == pytest.approx(2.36)
    assert scene.asset("B04").href.endswith("B04.tif")


def test_items_the_profile_cannot_parse_are_skipped_and_counted(
    stac_server: StacServer, cases: Any
) -> None:
    # Earth Search v1 vocabulary (asset 'blue', ...) does not fit PC-style items.
    profile = load_profile("earth-search")
    result = StacApiCatalog(stac_server.url, profile).search(
        cases["edges-no-cloud-limit"].request()
    )
    assert result.scenes == ()
    assert result.stats.n_invalid == result.stats.n_items > 0


def test_a_catalog_without_item_search_is_a_clear_error(cases: Any, pc: ProviderProfile) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    landing = {
        "type": "Catalog",
        "id": "static",
        "description": "a static catalog: no /search",
        "stac_version": "1.0.0",
        "links": [],
        "conformsTo": ["https://api.stacspec.org/v1.0.0/core"],
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_GET(self) -> None:  # noqa: N802
            data = json.dumps(landing).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(CatalogError, match="cannot run this search") as info:
            StacApiCatalog(url, pc, policy=FAST).search(cases["ocean-nothing"].request())
        assert url in str(info.value) and "\n" not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_planetary_computer_signer_against_a_loopback_token_endpoint(
    stac_server: StacServer, cases: Any, pc: ProviderProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import planetary_computer
    from planetary_computer.settings import Settings

    from harvest.backends.stac_api.planetary_computer import planetary_computer_signer

    asked: list[str] = []

    class Tokens(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            data = json.dumps(
                {"msft:expiry": "2099-01-01T00:00:00Z", "token": "st=2099&sig=LOOPBACK"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer(("127.0.0.1", 0), Tokens)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sas_url = f"http://127.0.0.1:{server.server_address[1]}/api/sas/v1/token"
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_url)
    Settings.get.cache_clear()
    try:
        catalog = StacApiCatalog(stac_server.url, pc, sign=planetary_computer_signer())
        result = catalog.search(cases["naip-and-s2-cloud40"].request())
        assert asked == []  # searching never asks for a token
        scene = result.by_collection("naip")[0]
        signed = catalog.signed_assets(scene)
        assert all(a.href.endswith("?st=2099&sig=LOOPBACK") for a in signed.values())
        assert asked == ["/api/sas/v1/token/naipeuwest/naip"]
        assert all("sig=" not in a.href for a in scene.assets.values())
        assert catalog.sign_href("/local/file.tif") == "/local/file.tif"  # not a blob: untouched
    finally:
        server.shutdown()
        server.server_close()
        for key in [k for k in planetary_computer.sas.TOKEN_CACHE if k.startswith(sas_url)]:
            del planetary_computer.sas.TOKEN_CACHE[key]
        monkeypatch.undo()
        Settings.get.cache_clear()
