"""Search any STAC API (Planetary Computer, Earth Search, a local pgstac) with pystac-client.

:class:`StacApiCatalog` batches a request's footprints into few searches:
:func:`group_footprints` splits them into compact groups (a k-d split until every group spans at
most ``max_group_extent_deg`` and holds at most ``max_group_footprints`` footprints), and each
group becomes one POST ``/search`` whose ``intersects`` is the union of its footprints' envelopes.
The scene cloud limit goes to the server as a CQL2-JSON ``filter`` (never ``query``, which
several servers ignore silently). Every page is followed, items are parsed with the provider
profile, and :func:`~harvest.backends.memory.filter_scenes` applies the exact request locally
(footprint intersection, inclusive window), each scene once. All HTTP goes through the one
transport of :mod:`harvest.backends.stac_api.transport`.

Hrefs are stored unsigned. Planetary Computer's tokens expire after about 45 minutes, so the
signing callable given at construction is applied only by :meth:`StacApiCatalog.sign_href` /
:meth:`StacApiCatalog.signed_assets`, right before pixels are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pystac
import shapely
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.warnings import PystacClientWarning

from harvest.backends.base import (
    Footprint,
    SceneRef,
    SearchRequest,
    SearchResult,
    SearchStats,
    Signer,
)
from harvest.backends.memory import filter_scenes
from harvest.backends.profiles import ProviderProfile, cover_property, parse_item
from harvest.backends.signing import HrefSigning
from harvest.backends.stac_api.http import one_line
from harvest.backends.stac_api.transport import HarvestStacIO, HttpRetryPolicy
from harvest.errors import CatalogError
from harvest.progress import ProgressBar

logger = logging.getLogger(__name__)


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


def cloud_filter(cover_property: str, max_cloud_pct: float) -> dict[str, Any]:
    """CQL2-JSON: cloud cover at most the limit, or not given at all.

    Items without the property (NAIP, SAR) pass, as they do in
    :func:`~harvest.backends.memory.filter_scenes`, so one search can cover optical and
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


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StacApiCatalog(HrefSigning):
    """A :class:`~harvest.backends.base.Catalog` over a STAC API.

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
        policy: HttpRetryPolicy | None = None,
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
                    f"{one_line(str(exc), 80)}): check the catalog URL"
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
                f"{one_line(str(exc), 100)}): it must support item search and CQL2 filters"
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
