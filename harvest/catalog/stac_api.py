"""Search any STAC API (Planetary Computer, Earth Search, a local pgstac) with pystac-client.

One transport, :class:`HarvestStacIO`, owns all HTTP: a ``requests`` session with a bounded
urllib3 retry (408, 429 and 5xx answers, connection drops and read timeouts; jittered exponential
backoff; ``Retry-After`` honoured up to a cap; POST searches included, which pystac-client does
not retry by default), connect/read timeouts, request counting, and the translation of every
failure into a one-line :class:`~harvest.errors.CatalogError` that names the URL.

:class:`StacApiCatalog` batches a request's footprints into few searches:
:func:`group_footprints` splits them into compact groups (a k-d split until every group spans at
most ``max_group_extent_deg`` and holds at most ``max_group_footprints`` footprints), and each
group becomes one POST ``/search`` whose ``intersects`` is the union of its footprints' envelopes.
The scene cloud limit goes to the server as a CQL2-JSON ``filter`` (never ``query``, which
several servers ignore silently). Every page is followed, items are parsed with the provider
profile, and :func:`~harvest.catalog.memory.filter_scenes` applies the exact request locally
(footprint intersection, inclusive window), each scene once.

Hrefs are stored unsigned. Planetary Computer's tokens expire after about 45 minutes, so the
signing callable given at construction is applied only by :meth:`StacApiCatalog.sign_href` /
:func:`signed_assets`, right before pixels are read.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pystac
import requests
import requests.adapters
import shapely
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import PystacClientWarning
from requests import Request
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from harvest.catalog.base import (
    AssetRef,
    Footprint,
    SceneRef,
    SearchRequest,
    SearchResult,
    SearchStats,
)
from harvest.catalog.memory import filter_scenes
from harvest.catalog.profiles import CollectionProfile, ProviderProfile, parse_item
from harvest.errors import CatalogError, ReadError
from harvest.progress import ProgressBar

logger = logging.getLogger(__name__)

Signer = Callable[[str], str]
"""A function from an unsigned href to a signed one (e.g. ``planetary_computer.sign``)."""

DEFAULT_TIMEOUT_S = 20.0
"""Seconds to wait for a STAC API's answer (``--timeout``); an unanswering server fails after
two such waits."""

RETRY_STATUSES: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
"""HTTP answers that may change on a later try; every other 4xx is final."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the transport tries before giving up.

    Attributes:
        total: Retries allowed per request (all causes together); the request is sent at most
            ``total + 1`` times.
        backoff_s: Base of the exponential backoff: the k-th retry waits
            ``backoff_s * 2**(k-1)`` plus a uniform jitter of up to ``jitter_s``.
        backoff_max_s: Cap of one backoff wait.
        jitter_s: Upper bound of the random jitter added to every wait, so that many clients
            rejected together do not come back together.
        retry_after_max_s: Cap on a server's ``Retry-After`` (a server asking for an hour
            would otherwise stall the run).
        connect_timeout_s: Timeout to open a connection.
        read_timeout_s: Timeout between bytes of an answer (a slow page is retried after it).
        timeout_retries: Retries of a request after a connect or read timeout. Timeouts have
            their own small budget: with ``total`` alone, a server that accepts connections
            and never answers held a search for 7 x 60 s. The defaults give up on it after
            2 x 20 s (plus a backoff of about a second).
    """

    total: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter_s: float = 0.5
    retry_after_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = DEFAULT_TIMEOUT_S
    timeout_retries: int = 1

    @classmethod
    def with_timeout(cls, timeout_s: float | None) -> RetryPolicy:
        """The default policy, waiting ``timeout_s`` for an answer (None: the defaults).

        The connect timeout is ``timeout_s`` too, at most 10 s.
        """
        if timeout_s is None:
            return cls()
        return cls(connect_timeout_s=min(10.0, timeout_s), read_timeout_s=timeout_s)

    def __post_init__(self) -> None:
        if self.total < 0:
            raise CatalogError(f"retry total {self.total} must be >= 0")
        for name in ("backoff_s", "backoff_max_s", "jitter_s", "retry_after_max_s"):
            if getattr(self, name) < 0:
                raise CatalogError(f"retry {name} must be >= 0")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise CatalogError("timeouts must be > 0 seconds")
        if self.timeout_retries < 0:
            raise CatalogError(f"timeout_retries {self.timeout_retries} must be >= 0")


class _Counter:
    """Mutable tallies shared by the transport and every copy of its Retry object."""

    __slots__ = ("pages", "requests", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.pages = 0


class _CountingRetry(Retry):
    """urllib3 Retry that counts retries and adds jitter from the very first one."""

    def __init__(
        self,
        *args: Any,
        counter: _Counter | None = None,
        timeout_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.counter = counter if counter is not None else _Counter()
        self.timeout_retries = timeout_retries

    def new(self, **kw: Any) -> _CountingRetry:
        fresh = super().new(**kw)
        fresh.counter = self.counter
        fresh.timeout_retries = self.timeout_retries
        return fresh

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _CountingRetry:
        if self.timeout_retries is not None and isinstance(error, Urllib3Timeout):
            # A connect or read timeout: a server that does not answer is not worth
            # ``total`` more full-length waits.
            timeouts = sum(1 for h in self.history if isinstance(h.error, Urllib3Timeout))
            if timeouts >= self.timeout_retries:
                raise MaxRetryError(_pool, url or "", error)
        args = (method, url, response, error, _pool, _stacktrace)
        fresh = super().increment(*args)  # raises MaxRetryError when exhausted
        self.counter.retries += 1
        logger.info("retrying a STAC API request (%d so far)", self.counter.retries)
        return fresh

    def get_backoff_time(self) -> float:
        # urllib3 waits 0 s before the first retry; a rate-limited server deserves a pause.
        n = len(self.history)
        if n == 0:
            return 0.0
        wait = self.backoff_factor * (2 ** (n - 1)) + random.random() * self.backoff_jitter
        return float(min(self.backoff_max, wait))


def _one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _failure_reason(exc: requests.exceptions.RequestException) -> str:
    """A few words on why a request failed for good (the last cause urllib3 saw)."""
    cause: Any = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)  # urllib3 MaxRetryError
    if isinstance(exc, requests.exceptions.RetryError) or "too many" in str(reason):
        return f"{reason}".strip() or "too many error responses"
    text = f"{reason or cause or exc}"
    if "timed out" in text.lower():
        return "timed out"
    if "refused" in text.lower():
        return "connection refused"
    if "aborted" in text.lower() or "disconnected" in text.lower() or "reset" in text.lower():
        return "connection dropped"
    return type(exc).__name__


class HarvestStacIO(StacApiIO):
    """pystac-client transport: retries, timeouts, request counting and one-line errors.

    Args:
        policy: Retry and timeout settings.
        headers: Extra HTTP headers sent with every request (e.g. a subscription key).
    """

    def __init__(
        self, policy: RetryPolicy | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.counter = _Counter()
        p = self.policy
        retry = _CountingRetry(
            total=p.total,
            connect=None,
            read=None,
            status=None,
            other=None,
            redirect=5,
            allowed_methods=None,  # POST /search is idempotent: retry it too
            status_forcelist=RETRY_STATUSES,
            backoff_factor=p.backoff_s,
            backoff_max=p.backoff_max_s,
            backoff_jitter=p.jitter_s,
            retry_after_max=p.retry_after_max_s,
            respect_retry_after_header=True,
            raise_on_status=True,
            counter=self.counter,
            timeout_retries=p.timeout_retries,
        )
        super().__init__(
            headers=dict(headers or {}),
            timeout=(p.connect_timeout_s, p.read_timeout_s),
            max_retries=retry,
        )

    def update(
        self,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
        request_modifier: Callable[[Request], Request | None] | None = None,
        timeout: Any = None,
    ) -> None:
        """pystac-client's hook; keeps the policy's timeouts when it passes none.

        ``Client.open`` calls this with ``timeout=None``, which would otherwise switch the
        timeouts off and let a stalled server hang the search forever.
        """
        p = self.policy
        super().update(
            headers=headers,
            parameters=parameters,
            request_modifier=request_modifier,
            timeout=timeout if timeout is not None else (p.connect_timeout_s, p.read_timeout_s),
        )

    def reset_counts(self) -> None:
        """Zero the request, retry and page tallies."""
        self.counter.requests = 0
        self.counter.retries = 0
        self.counter.pages = 0

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        """Send one request (retried per the policy) and return the body as text.

        Raises:
            CatalogError: retries exhausted, connection impossible, or a final HTTP error.
        """
        method = (method or "GET").upper()
        if method in _BODY_METHODS:
            req = Request(method=method, url=href, headers=headers, json=parameters)
        else:
            req = Request(method=method, url=href, headers=headers, params=dict(parameters or {}))
        prepped = self.session.prepare_request(req)
        settings = self.session.merge_environment_settings(
            prepped.url or href, proxies={}, stream=None, verify=True, cert=None
        )
        self.counter.requests += 1
        tries = self.policy.total
        try:
            resp = self.session.send(prepped, timeout=self.timeout, **settings)
        except requests.exceptions.RequestException as exc:
            reason = _failure_reason(exc)
            if reason == "timed out":
                p = self.policy
                raise CatalogError(
                    f"STAC API {href} did not answer within {p.read_timeout_s:g} s "
                    f"({p.timeout_retries + 1} tries): check the URL and the network, try "
                    "again later, or give it more time with --timeout SECONDS"
                ) from None
            raise CatalogError(
                f"STAC API {href} gave no usable answer after {tries} retries "
                f"({reason}): check the URL and the network, or try again later"
            ) from None
        if not 200 <= resp.status_code < 300:
            detail = _one_line(resp.text or resp.reason or "", 200)
            raise CatalogError(
                f"STAC API {href} answered HTTP {resp.status_code} to {method}: {detail}; "
                "check the catalog URL, the collection ids of the provider profile and the search"
            )
        try:
            return resp.content.decode("utf-8")
        except UnicodeDecodeError:
            raise CatalogError(
                f"STAC API {href} answered bytes that are not UTF-8 text: is it a STAC API URL?"
            ) from None

    def read_json(self, source: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Read and decode a JSON object; anything else is a CatalogError naming the URL."""
        text = self.read_text(source, *args, **kwargs)
        href = source.href if isinstance(source, pystac.Link) else str(source)
        try:
            data = json.loads(text)
        except ValueError:
            raise CatalogError(
                f"STAC API {href} answered something that is not JSON "
                f"({_one_line(text, 60)!r}): check that the catalog URL is a STAC API"
            ) from None
        if not isinstance(data, dict):
            raise CatalogError(
                f"STAC API {href} answered a JSON {type(data).__name__}, not an object: "
                "check that the catalog URL is a STAC API"
            )
        return data

    def get_pages(
        self,
        url: str,
        method: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield every page of a search, following ``next`` links to the end.

        Raises:
            CatalogError: a page is not an ItemCollection, or the server loops on one page.
        """
        source: Any = url
        seen_links: set[str] = set()
        page_kwargs: dict[str, Any] = {"method": method, "parameters": parameters}
        while True:
            page = self.read_json(source, **page_kwargs)
            features = page.get("features")
            if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
                raise CatalogError(
                    f"STAC API {url} answered a search page without a 'features' list of items: "
                    "check that the catalog URL is a STAC API"
                )
            self.counter.pages += 1
            if not features:
                return
            yield page
            links = page.get("links") or []
            nxt = next(
                (ln for ln in links if isinstance(ln, dict) and ln.get("rel") == "next"), None
            )
            if nxt is None:
                return
            signature = json.dumps(nxt, sort_keys=True, default=str)
            if signature in seen_links:
                raise CatalogError(
                    f"STAC API {url} sent the same 'next' page link twice: its paging is "
                    "broken; report it to the catalog's operator"
                )
            seen_links.add(signature)
            source = pystac.Link.from_dict(nxt)
            page_kwargs = {"parameters": parameters}


# --- batching footprints ------------------------------------------------------------------------


def group_footprints(
    footprints: Sequence[Footprint],
    *,
    max_extent_deg: float = 10.0,
    max_per_group: int = 200,
) -> tuple[tuple[int, ...], ...]:
    """Split footprints into compact groups, each searched with one request.

    A k-d split: a group whose bounding box spans more than ``max_extent_deg`` in longitude or
    latitude, or that holds more than ``max_per_group`` footprints, is cut in two along its
    longer side, until every group fits. The cut goes through an empty gap between footprint
    centres: a gap wider than the limit if there is one (nearest the middle), else the widest
    gap among the central half of the centres, so clusters stay whole and both halves keep at
    least a quarter of the footprints. Dense areas get many small groups, sparse areas few
    large ones, and no group is wider than the limit.

    Args:
        footprints: The request's footprints.
        max_extent_deg: Largest width and height of a group's bounding box in degrees.
        max_per_group: Most footprints in one group (bounds the request body).

    Returns:
        Groups of footprint indices, each sorted, ordered by their first index.
    """
    if max_extent_deg <= 0 or max_per_group < 1:
        raise CatalogError("max_extent_deg must be > 0 and max_per_group >= 1")
    if not footprints:
        return ()
    bounds = shapely.bounds(np.array([f.geometry for f in footprints], dtype=object))
    stack = [np.arange(len(footprints))]
    groups: list[tuple[int, ...]] = []
    while stack:
        idx = stack.pop()
        b = bounds[idx]
        width = float(b[:, 2].max() - b[:, 0].min())
        height = float(b[:, 3].max() - b[:, 1].min())
        fits = width <= max_extent_deg and height <= max_extent_deg and len(idx) <= max_per_group
        if fits or len(idx) == 1:
            groups.append(tuple(int(i) for i in np.sort(idx)))
            continue
        axis = 0 if width >= height else 1
        centres = (b[:, axis] + b[:, axis + 2]) / 2.0
        order = np.argsort(centres, kind="stable")
        gaps = np.diff(centres[order])
        m = len(idx)
        wide = np.flatnonzero(gaps >= max_extent_deg)
        if wide.size:
            # Gaps no group may span anyway: cut at the one nearest the middle (balanced).
            cut = int(wide[np.argmin(np.abs(wide + 1 - m / 2))])
        else:
            # The widest gap within the central half: clusters stay whole, depth stays log n.
            lo, hi = m // 4, max(m // 4 + 1, (3 * m) // 4)
            cut = lo + int(np.argmax(gaps[lo:hi]))
        stack.append(idx[order[cut + 1 :]])
        stack.append(idx[order[: cut + 1]])
    return tuple(sorted(groups))


def group_query_geometry(footprints: Sequence[Footprint]) -> dict[str, Any]:
    """GeoJSON ``intersects`` for one group: the union of its footprints' envelopes.

    Envelopes keep the request body small (5 corners per part) and can only find more
    scenes than the footprints themselves; the exact test happens after.
    """
    boxes = shapely.envelope(np.array([f.geometry for f in footprints], dtype=object))
    union = shapely.union_all(boxes)
    return dict(shapely.geometry.mapping(union))


def cover_property(profile: ProviderProfile, entry: CollectionProfile) -> str | None:
    """The item property holding a collection's scene cloud cover, as :func:`parse_item` reads it.

    The collection's own ``cloud.cover_property`` first, else the profile's first cloud key;
    None when neither is set.
    """
    if entry.cloud.cover_property:
        return entry.cloud.cover_property
    keys = profile.properties.cloud_cover
    return keys[0] if keys else None


def cloud_filter(cover_property: str, max_cloud_pct: float) -> dict[str, Any]:
    """CQL2-JSON: cloud cover at most the limit, or not given at all.

    Items without the property (NAIP, SAR) pass, as they do in
    :func:`~harvest.catalog.memory.filter_scenes`, so one search can cover optical and
    cloud-free collections alike.
    """
    prop = {"property": cover_property}
    return {
        "op": "or",
        "args": [
            {"op": "<=", "args": [prop, max_cloud_pct]},
            {"op": "isNull", "args": [prop]},
        ],
    }


# --- signing ------------------------------------------------------------------------------------


def sign_asset(asset: AssetRef, sign: Signer | None) -> AssetRef:
    """A copy of ``asset`` whose href is signed (unchanged when ``sign`` is None)."""
    if sign is None:
        return asset
    return replace(asset, href=sign(asset.href))


def signed_assets(scene: SceneRef, sign: Signer | None) -> dict[str, AssetRef]:
    """The scene's assets with signed hrefs, for the read stage; the scene is not modified."""
    return {band: sign_asset(ref, sign) for band, ref in scene.assets.items()}


@dataclass(frozen=True)
class PlanetaryComputerSigner:
    """Signs Azure Blob hrefs with Planetary Computer SAS tokens; picklable, no I/O at creation.

    ``planetary_computer.sign`` fetches a missing token with no timeout (a token endpoint
    that accepted the connection and never answered held a read for ever) and lets the
    network error through as an OSError. This signer fetches the token itself, with the
    package's settings (``PC_SDK_SAS_URL``, ``PC_SDK_SUBSCRIPTION_KEY``), timeouts and a
    bounded retry, puts it in the package's token cache and lets the package sign.

    Attributes:
        timeout_s: Seconds to wait for the token endpoint's answer (connect: at most 10 s).
        retries: Retries of 429/5xx answers, dropped connections and timeouts.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 2

    def __call__(self, href: str) -> str:
        """``href`` signed when it is an Azure Blob URL, else unchanged.

        Raises:
            ReadError: no token could be had (one line naming the token URL).
        """
        import planetary_computer
        from planetary_computer import sas

        parsed = urlparse(href.rstrip("/"))
        if parsed.netloc.endswith(sas.BLOB_STORAGE_DOMAIN):
            account, container = sas.parse_blob_url(parsed)
            self._ensure_token(sas, account, container)
        return str(planetary_computer.sign(href))

    def _ensure_token(self, sas: Any, account: str, container: str) -> None:
        from planetary_computer.settings import Settings

        settings = Settings.get()
        url = f"{settings.sas_url}/{account}/{container}"
        # The package keeps its tokens in this module-level cache and reuses them until a
        # minute before expiry; filling it is how its own get_token works.
        token = sas.TOKEN_CACHE.get(url)
        if token is not None and token.ttl() >= 60:
            return
        headers = {}
        if settings.subscription_key:
            headers["Ocp-Apim-Subscription-Key"] = settings.subscription_key
        session = requests.Session()
        retry = Retry(
            total=self.retries,
            backoff_factor=0.5,
            status_forcelist=RETRY_STATUSES,
            raise_on_status=True,
        )
        adapter = requests.adapters.HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session:
                resp = session.get(
                    url, headers=headers, timeout=(min(10.0, self.timeout_s), self.timeout_s)
                )
                resp.raise_for_status()
                sas.TOKEN_CACHE[url] = sas.SASToken(**resp.json())
        except (requests.exceptions.RequestException, ValueError, TypeError) as exc:
            reason = (
                _failure_reason(exc)
                if isinstance(exc, requests.exceptions.RequestException)
                else "the answer is not a SAS token"
            )
            raise ReadError(
                f"cannot get a Planetary Computer SAS token from {url} ({reason}): check the "
                "network, PC_SDK_SAS_URL and PC_SDK_SUBSCRIPTION_KEY, then run the same "
                "command again"
            ) from None


def planetary_computer_signer(timeout_s: float | None = None) -> Signer:
    """A :class:`PlanetaryComputerSigner` (no I/O here; ``timeout_s`` None: the default)."""
    if timeout_s is None:
        return PlanetaryComputerSigner()
    return PlanetaryComputerSigner(timeout_s=timeout_s)


# --- the catalog --------------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class HrefSigning:
    """Signing for catalogs whose scenes keep unsigned hrefs (mixed into the STAC backends).

    Subclasses set ``profile`` (a :class:`ProviderProfile`) and ``_sign`` (a signer or None).
    """

    profile: ProviderProfile
    _sign: Signer | None

    @property
    def provider(self) -> str:
        """Name of the provider profile whose vocabulary the scenes use."""
        return self.profile.name

    def sign_href(self, href: str) -> str:
        """Sign one href right before reading it (identity without a signer)."""
        return href if self._sign is None else self._sign(href)

    def signed_assets(self, scene: SceneRef) -> dict[str, AssetRef]:
        """The scene's assets with signed hrefs (the scene keeps its unsigned ones)."""
        return signed_assets(scene, self._sign)


class StacApiCatalog(HrefSigning):
    """A :class:`~harvest.catalog.base.Catalog` over a STAC API.

    Construction does no network I/O; the landing page is read on the first search.

    Args:
        url: Root URL of the STAC API.
        profile: Provider profile mapping its collections and assets onto harvest's vocabulary.
        sign: Href signer applied only by :meth:`sign_href` / :meth:`signed_assets` (never to
            the hrefs stored in scenes).
        policy: Retries and timeouts.
        page_size: Items per page (``limit``).
        max_group_extent_deg: Largest span of one batched request's area, in degrees.
        max_group_footprints: Most footprints in one batched request.
        headers: Extra HTTP headers for every request.
    """

    def __init__(
        self,
        url: str,
        profile: ProviderProfile,
        *,
        sign: Signer | None = None,
        policy: RetryPolicy | None = None,
        page_size: int = 1000,
        max_group_extent_deg: float = 10.0,
        max_group_footprints: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise CatalogError(f"STAC API URL {url!r} must start with http:// or https://")
        if page_size < 1:
            raise CatalogError(f"page_size {page_size} must be >= 1")
        if max_group_extent_deg <= 0 or max_group_footprints < 1:
            raise CatalogError("max_group_extent_deg must be > 0 and max_group_footprints >= 1")
        self.url = url.rstrip("/")
        self.profile = profile
        self.page_size = page_size
        self.max_group_extent_deg = max_group_extent_deg
        self.max_group_footprints = max_group_footprints
        self._sign = sign
        self._io = HarvestStacIO(policy, headers)
        self._client: Client | None = None

    def _open(self) -> Client:
        if self._client is None:
            try:
                self._client = Client.open(self.url, stac_io=self._io)
            except CatalogError:
                raise
            except (APIError, pystac.STACError, KeyError, TypeError, ValueError) as exc:
                raise CatalogError(
                    f"{self.url} is not a STAC API landing page ({type(exc).__name__}: "
                    f"{_one_line(str(exc), 80)}): check the catalog URL"
                ) from None
        return self._client

    def _search_pages(
        self,
        collection_ids: Sequence[str],
        geometry: Mapping[str, Any],
        request: SearchRequest,
        filter_: dict[str, Any] | None,
    ) -> Iterator[dict[str, Any]]:
        client = self._open()
        try:
            search = client.search(
                method="POST",
                collections=list(collection_ids),
                intersects=dict(geometry),
                datetime=f"{_iso(request.start)}/{_iso(request.end)}",
                filter=filter_,
                filter_lang="cql2-json" if filter_ is not None else None,
                limit=self.page_size,
            )
            yield from search.pages_as_dicts()
        except CatalogError:
            raise
        except (APIError, NotImplementedError, PystacClientWarning, pystac.STACError) as exc:
            raise CatalogError(
                f"STAC API {self.url} cannot run this search ({type(exc).__name__}: "
                f"{_one_line(str(exc), 100)}): it must support item search and CQL2 filters"
            ) from None

    def search(self, request: SearchRequest, *, progress: bool = False) -> SearchResult:
        """Find the scenes for ``request`` with few batched searches.

        Raises:
            CatalogError: the server fails or answers something that is not STAC (one line,
                naming the URL), or a collection is not in the provider profile.
        """
        started = time.perf_counter()
        self._io.reset_counts()
        entries = [self.profile.collection(c) for c in request.collections]
        # One search per cloud-cover property (normally one for all collections: items
        # without the property pass the filter).
        by_property: dict[str | None, list[str]] = {}
        for entry in entries:
            prop = (
                cover_property(self.profile, entry) if request.max_cloud_pct is not None else None
            )
            by_property.setdefault(prop, []).append(entry.id)
        groups = group_footprints(
            request.footprints,
            max_extent_deg=self.max_group_extent_deg,
            max_per_group=self.max_group_footprints,
        )
        jobs = [(ids, prop, group) for prop, ids in by_property.items() for group in groups]
        found: dict[tuple[str, str], SceneRef] = {}
        n_items = 0
        n_invalid = 0

        def run_job(ids: Sequence[str], prop: str | None, group: tuple[int, ...]) -> None:
            nonlocal n_items, n_invalid
            fps = [request.footprints[i] for i in group]
            limit = request.max_cloud_pct
            flt = cloud_filter(prop, limit) if prop is not None and limit is not None else None
            for page in self._search_pages(ids, group_query_geometry(fps), request, flt):
                for item in page["features"]:
                    n_items += 1
                    if not isinstance(item.get("id"), str) or not item.get("collection"):
                        raise CatalogError(
                            f"STAC API {self.url} returned a search result without id or "
                            "collection: check that the catalog URL is a STAC API"
                        )
                    try:
                        scene = parse_item(item, self.profile)
                    except CatalogError as exc:
                        n_invalid += 1
                        logger.warning("skipping item: %s", exc)
                        continue
                    found.setdefault(scene.key, scene)

        with ProgressBar("searching STAC API", len(jobs), enabled=progress and bool(jobs)) as bar:
            for job in jobs:
                run_job(*job)
                bar.advance()

        scenes = filter_scenes(found.values(), request)
        counter = self._io.counter
        stats = SearchStats(
            n_footprints=len(request.footprints),
            n_groups=len(groups),
            n_requests=counter.requests + counter.retries,
            n_retries=counter.retries,
            n_pages=counter.pages,
            n_items=n_items,
            n_scenes=len(scenes),
            seconds=time.perf_counter() - started,
            n_invalid=n_invalid,
        )
        if n_invalid:
            logger.warning(
                "%d of %d items from %s could not be parsed with profile %s and were skipped",
                n_invalid,
                n_items,
                self.url,
                self.profile.name,
            )
        return SearchResult(scenes=scenes, stats=stats)
