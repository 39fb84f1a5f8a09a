"""Earth Engine catalog: few batched requests for many footprints.

Footprints are sorted along a Morton (Z-order) curve of their centroids and cut into spatially
compact batches; for each batch and collection one expression is evaluated server side with one
``value:compute`` call (``getInfo``):

    ImageCollection(id).filterDate(start, end).filterBounds(union of the batch's footprints)
        [.filter(cloud property <= limit)] [.filter(instrument mode, polarisation)]
        [join Cloud Score+ images on system:index]
        .limit(max_images_per_request)
        .map(image -> Feature(footprint, {index, time, scene properties, bands, crs, scale}))

The answer (a FeatureCollection) is parsed into :class:`~harvest.backends.base.SceneRef`; the
exact request (footprint intersection, inclusive window, cloud limit) is then applied locally
with :func:`~harvest.backends.memory.filter_scenes`.

Request limits (documented by Earth Engine; see the "Earth Engine quotas" guide) are named
constants below and in :mod:`~harvest.backends.earthengine.session`. A batch that is too large
for the server (the request payload, the 5000-element getInfo limit, "User memory limit
exceeded.", "Computation timed out.") is never sent again as is: it is split in two (footprints
by position, or a single footprint's time window in halves) and the halves are sent, at most
``max_split_depth`` times in a row before a :class:`~harvest.errors.CatalogError`.

Asset hrefs are ``ee://COLLECTION/SYSTEM_INDEX#BAND``
(:mod:`~harvest.backends.earthengine.assets`): the Earth Engine image id and band name, read
later by :class:`~harvest.backends.earthengine.reader.EarthEngineReader`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import shapely
import shapely.geometry
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from harvest.backends.base import (
    AssetMap,
    AssetRef,
    Footprint,
    SceneRef,
    SearchRequest,
    SearchResult,
    SearchStats,
)
from harvest.backends.earthengine.assets import CLOUD_SCORE_ASSET, ee_href
from harvest.backends.earthengine.session import (
    EE_DEFAULT_DEADLINE_S,
    EE_DEFAULT_MAX_RETRIES,
    EE_MAX_CONCURRENT_REQUESTS,
    import_ee,
    initialise_earth_engine,
)
from harvest.backends.memory import filter_scenes
from harvest.backends.profiles import (
    CollectionProfile,
    ProviderProfile,
    load_profile,
    normalize_baseline,
    scale_offset,
)
from harvest.errors import CatalogError
from harvest.progress import ProgressBar

logger = logging.getLogger(__name__)

# --- documented Earth Engine limits -------------------------------------------------------------

EE_MAX_GETINFO_ELEMENTS = 5000
"""getInfo of a collection aborts past this many elements ("Collection query aborted after
accumulating over 5000 elements")."""

EE_MAX_REQUEST_PAYLOAD_BYTES = 10 * 1024 * 1024
"""Largest request body Earth Engine accepts (10 MB)."""

# --- harvest's own budgets ------------------------------------------------------------------------

PAYLOAD_BUDGET_BYTES = int(EE_MAX_REQUEST_PAYLOAD_BYTES * 0.8)
"""Batches whose serialized request exceeds this are split before sending (headroom for the
envelope the client adds)."""

DEFAULT_MAX_FOOTPRINTS_PER_REQUEST = 2000
"""Footprints per batch: keeps the union's bounds compact so answers stay well below the
element limit."""

DEFAULT_MAX_WORKERS = 4
"""Requests in flight at once (at most :data:`EE_MAX_CONCURRENT_REQUESTS`)."""

DEFAULT_MAX_SPLIT_DEPTH = 8
"""How many times in a row a too-large batch may be halved before the search fails."""

_COORD_DECIMALS = 7  # ~1 cm: shorter requests, no visible change of the footprints

_SCORE_KEY = "harvest_cloud_score"
_TOO_LARGE_MARKERS = (
    "user memory limit exceeded",
    "collection query aborted after accumulating over",
    "computation timed out",
    "request payload size exceeds",
)

# Scene properties read per collection (absent ones are simply missing in the answer).
_SCENE_PROPERTIES: dict[str, tuple[str, ...]] = {
    "sentinel-2-l2a": (
        "CLOUDY_PIXEL_PERCENTAGE",
        "MGRS_TILE",
        "PROCESSING_BASELINE",
        "PRODUCT_ID",
        "SPACECRAFT_NAME",
        "MEAN_SOLAR_AZIMUTH_ANGLE",
        "MEAN_SOLAR_ZENITH_ANGLE",
        "MEAN_INCIDENCE_ZENITH_ANGLE_B8",
    ),
    "naip": (),
    "sentinel-1-grd": (
        "platform_number",
        "instrumentMode",
        "orbitProperties_pass",
        "transmitterReceiverPolarisation",
    ),
    "venus-l2a": (),
}

# Band whose projection gives the scene's CRS and nominal scale (canonical names).
_GRID_BAND = {"sentinel-2-l2a": "B02", "naip": "red", "sentinel-1-grd": "VV"}


@dataclass(frozen=True)
class PropertyFilter:
    """A server-side filter on an image property.

    Attributes:
        property: Image property name.
        op: ``eq`` (equal) or ``list_contains`` (the list property holds ``value``).
        value: The value compared with.
    """

    property: str
    op: str
    value: str


SERVER_FILTERS: dict[str, tuple[PropertyFilter, ...]] = {
    # Interferometric Wide swath with a VV channel: the mode and polarisation sen12 pairs use.
    "COPERNICUS/S1_GRD": (
        PropertyFilter("instrumentMode", "eq", "IW"),
        PropertyFilter("transmitterReceiverPolarisation", "list_contains", "VV"),
    ),
}
"""Extra filters per Earth Engine collection id, sent with every search of it."""


@dataclass(frozen=True)
class _Batch:
    """One request's worth of work: footprints of one collection in a time window."""

    entry: CollectionProfile
    footprints: tuple[Footprint, ...]
    start_ms: int
    end_ms: int  # exclusive
    depth: int = 0
    is_split: bool = False


class _Counter:
    """Requests sent by one search (batches run on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.resent = 0

    def sent(self, batch: _Batch) -> None:
        with self._lock:
            self.requests += 1
            self.resent += int(batch.is_split)


class _TooLargeError(Exception):
    """The server (or the payload budget) says this batch is too large to answer at once."""


def _morton_key(lon: float, lat: float) -> int:
    x = int((lon + 180.0) / 360.0 * 0xFFFF) & 0xFFFF
    y = int((lat + 90.0) / 180.0 * 0xFFFF) & 0xFFFF
    key = 0
    for bit in range(16):
        key |= ((x >> bit) & 1) << (2 * bit) | ((y >> bit) & 1) << (2 * bit + 1)
    return key


def plan_batches(
    footprints: Sequence[Footprint], max_per_batch: int
) -> tuple[tuple[Footprint, ...], ...]:
    """Cut footprints into spatially compact batches of at most ``max_per_batch``.

    Footprints are ordered along a Z-order curve of their centroids, so neighbours share a batch
    and each batch's union has small bounds (few scenes per answer).
    """
    if max_per_batch < 1:
        raise CatalogError(f"max_footprints_per_request must be >= 1, got {max_per_batch}")
    ordered = sorted(
        footprints,
        key=lambda f: (_morton_key(f.geometry.centroid.x, f.geometry.centroid.y), f.key),
    )
    return tuple(
        tuple(ordered[i : i + max_per_batch]) for i in range(0, len(ordered), max_per_batch)
    )


def _polygons(footprints: Sequence[Footprint]) -> list[list[list[list[float]]]]:
    """The union of the footprints as MultiPolygon coordinates (CCW shells, rounded)."""
    union = shapely.unary_union([f.geometry for f in footprints])
    parts: list[BaseGeometry]
    if isinstance(union, shapely.geometry.Polygon):
        parts = [union]
    elif isinstance(union, shapely.geometry.MultiPolygon):
        parts = list(union.geoms)
    else:  # points, lines or mixed: search their bounding boxes
        parts = [shapely.box(*f.geometry.bounds) for f in footprints]
        merged = shapely.unary_union(parts)
        parts = list(getattr(merged, "geoms", [merged]))
    out = []
    for part in parts:
        poly = orient(part, sign=1.0)
        rings = [poly.exterior, *poly.interiors]
        out.append(
            [
                [[round(x, _COORD_DECIMALS), round(y, _COORD_DECIMALS)] for x, y in ring.coords]
                for ring in rings
            ]
        )
    return out


def _split(batch: _Batch) -> tuple[_Batch, _Batch] | None:
    """Two halves of a batch: by position of the footprints, or a lone footprint's window."""
    depth = batch.depth + 1
    if len(batch.footprints) > 1:
        xmin, ymin, xmax, ymax = shapely.unary_union(
            [shapely.box(*f.geometry.bounds) for f in batch.footprints]
        ).bounds
        axis = 0 if (xmax - xmin) >= (ymax - ymin) else 1
        ordered = sorted(
            batch.footprints,
            key=lambda f: (f.geometry.centroid.coords[0][axis], f.key),
        )
        half = len(ordered) // 2
        return (
            _Batch(batch.entry, tuple(ordered[:half]), batch.start_ms, batch.end_ms, depth, True),
            _Batch(batch.entry, tuple(ordered[half:]), batch.start_ms, batch.end_ms, depth, True),
        )
    if batch.end_ms - batch.start_ms > 1000:
        mid = (batch.start_ms + batch.end_ms) // 2
        return (
            _Batch(batch.entry, batch.footprints, batch.start_ms, mid, depth, True),
            _Batch(batch.entry, batch.footprints, mid, batch.end_ms, depth, True),
        )
    return None


def _to_ms(value: datetime) -> int:
    return int(math.floor(value.timestamp() * 1000))


_MGRS_RE = re.compile(r"^T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})$")
_EPSG_RE = re.compile(r"^EPSG:(\d+)$", re.IGNORECASE)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _mgrs(value: Any) -> str | None:
    if value is None:
        return None
    m = _MGRS_RE.match(str(value).strip().upper())
    return f"{int(m.group(1)):02d}{m.group(2)}{m.group(3)}" if m else None


def _platform(canonical: str, props: Mapping[str, Any]) -> str | None:
    if props.get("SPACECRAFT_NAME"):
        return str(props["SPACECRAFT_NAME"]).lower()
    if canonical == "sentinel-1-grd" and props.get("platform_number"):
        return f"sentinel-1{str(props['platform_number']).lower()}"
    return None


def parse_feature(
    feature: Mapping[str, Any], entry: CollectionProfile, provider: str
) -> SceneRef | None:
    """Turn one answered feature into a :class:`SceneRef` (None: it lacks a required band).

    Raises:
        CatalogError: the feature lacks an index, time or footprint (the answer is broken).
    """
    props: Mapping[str, Any] = feature.get("properties") or {}
    index = props.get("image_index") or feature.get("id")
    if not index:
        raise CatalogError(f"an Earth Engine answer for {entry.id} has a feature without index")
    index = str(index)
    time_ms = props.get("time_start")
    if time_ms is None:
        raise CatalogError(f"Earth Engine image {entry.id}/{index} has no system:time_start")
    when = datetime.fromtimestamp(float(time_ms) / 1000.0, tz=UTC)
    try:
        geometry = shapely.geometry.shape(feature["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError, GEOSException):
        raise CatalogError(
            f"Earth Engine image {entry.id}/{index} has no readable footprint"
        ) from None
    if geometry.is_empty:
        raise CatalogError(f"Earth Engine image {entry.id}/{index} has an empty footprint")
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)

    baseline = normalize_baseline(props.get("PROCESSING_BASELINE"))
    band_names = [str(b) for b in props.get("band_names") or []]
    assets: dict[str, AssetRef] = {}
    for band, mapping in entry.bands.items():
        if mapping.asset not in band_names:
            if mapping.required:
                logger.info(
                    "dropping %s/%s: it has no band %s (%s)", entry.id, index, mapping.asset, band
                )
                return None
            continue
        scale, offset = (
            (1.0, 0.0) if mapping.raw else scale_offset(entry.radiometry, None, baseline, when)
        )
        assets[band] = AssetRef(
            href=ee_href(entry.id, index, mapping.asset),
            scale=scale,
            offset=offset,
            nodata=entry.radiometry.nodata,
            dtype=entry.radiometry.dtype,
        )
    score_index = props.get("cloud_score_index")
    cloud = entry.cloud
    if score_index and cloud.score_collection and cloud.score_band:
        assets[CLOUD_SCORE_ASSET] = AssetRef(
            href=ee_href(cloud.score_collection, str(score_index), cloud.score_band)
        )

    cover = props.get(cloud.cover_property) if cloud.cover_property else None
    zenith = _opt_float(props.get("MEAN_SOLAR_ZENITH_ANGLE"))
    crs = props.get("crs")
    m = _EPSG_RE.match(str(crs)) if crs else None
    try:
        return SceneRef(
            item_id=index,
            collection=entry.canonical,
            provider=provider,
            datetime=when,
            geometry=geometry,
            assets=AssetMap(assets),
            cloud_cover_pct=None if cover is None else min(100.0, max(0.0, float(cover))),
            platform=_platform(entry.canonical, props),
            epsg=int(m.group(1)) if m else None,
            processing_baseline=baseline,
            # The mean viewing zenith angle of the NIR band stands for the off-nadir angle.
            view_off_nadir_deg=_opt_float(props.get("MEAN_INCIDENCE_ZENITH_ANGLE_B8")),
            sun_azimuth_deg=_opt_float(props.get("MEAN_SOLAR_AZIMUTH_ANGLE")),
            sun_elevation_deg=None if zenith is None else 90.0 - zenith,
            mgrs_tile=_mgrs(props.get("MGRS_TILE")),
            gsd_m=_opt_float(props.get("scale_m")),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogError(
            f"Earth Engine image {entry.id}/{index}: unreadable property: {exc}"
        ) from None


class EarthEngineCatalog:
    """A :class:`~harvest.backends.base.Catalog` over the Earth Engine public catalog.

    Args:
        profile: The provider profile (default: the shipped ``earth-engine`` profile).
        project: Google Cloud project billed for the requests; None takes the project of the
            application default credentials (the CLI passes
            :func:`~harvest.backends.registry.default_ee_project`).
        opt_url: Earth Engine endpoint, e.g.
            :data:`~harvest.backends.earthengine.session.EE_HIGH_VOLUME_URL`; None: the default.
        credentials: google-auth credentials; None: ``google.auth.default()`` (service account
            from ``GOOGLE_APPLICATION_CREDENTIALS`` or application default credentials).
        max_retries: Retries the client makes itself on 429 and 5xx answers.
        max_workers: Requests in flight at once (1 to :data:`EE_MAX_CONCURRENT_REQUESTS`).
        max_footprints_per_request: Footprints per batch before any split.
        max_images_per_request: Images one answer may hold (at most
            :data:`EE_MAX_GETINFO_ELEMENTS`); a full answer is taken as truncated and split.
        max_split_depth: Halvings in a row allowed for a batch the server finds too large.
        deadline_s: Time limit of one request in seconds (None: the client's default, which
            waits for ever). The client retries a timed-out request ``max_retries`` times.
    """

    def __init__(
        self,
        profile: ProviderProfile | None = None,
        *,
        project: str | None = None,
        opt_url: str | None = None,
        credentials: Any = None,
        max_retries: int = EE_DEFAULT_MAX_RETRIES,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_footprints_per_request: int = DEFAULT_MAX_FOOTPRINTS_PER_REQUEST,
        max_images_per_request: int = EE_MAX_GETINFO_ELEMENTS,
        max_split_depth: int = DEFAULT_MAX_SPLIT_DEPTH,
        deadline_s: float | None = EE_DEFAULT_DEADLINE_S,
    ) -> None:
        self._profile = profile if profile is not None else load_profile("earth-engine")
        if self._profile.kind != "earth-engine":
            raise CatalogError(
                f"provider profile {self._profile.name} is a {self._profile.kind} profile, "
                "not earth-engine: use the matching backend"
            )
        if not 1 <= max_workers <= EE_MAX_CONCURRENT_REQUESTS:
            raise CatalogError(
                f"max_workers {max_workers} must be within 1-{EE_MAX_CONCURRENT_REQUESTS} "
                "(Earth Engine's default concurrent request quota)"
            )
        if not 1 <= max_images_per_request <= EE_MAX_GETINFO_ELEMENTS:
            raise CatalogError(
                f"max_images_per_request {max_images_per_request} must be within "
                f"1-{EE_MAX_GETINFO_ELEMENTS} (Earth Engine's getInfo element limit)"
            )
        if not 0 <= max_retries < 100:
            raise CatalogError(f"max_retries {max_retries} must be within 0-99")
        if max_footprints_per_request < 1 or max_split_depth < 0:
            raise CatalogError("max_footprints_per_request must be >= 1 and max_split_depth >= 0")
        self._project = project
        self._opt_url = opt_url.rstrip("/") if opt_url else None
        self._credentials = credentials
        self._max_retries = max_retries
        self._max_workers = max_workers
        self._max_footprints = max_footprints_per_request
        self._max_images = max_images_per_request
        self._max_split_depth = max_split_depth
        self._deadline_s = deadline_s

    @property
    def provider(self) -> str:
        """Name of the provider profile (``earth-engine``)."""
        return self._profile.name

    # --- initialisation --------------------------------------------------------------------------

    def _ensure_initialised(self) -> ModuleType:
        return initialise_earth_engine(
            project=self._project,
            opt_url=self._opt_url,
            credentials=self._credentials,
            max_retries=self._max_retries,
            deadline_s=self._deadline_s,
        )

    # --- the request -----------------------------------------------------------------------------

    def build_expression(self, batch: _Batch, max_cloud_pct: float | None) -> Any:
        """The ``ee`` expression that lists the scenes of one batch (one getInfo)."""
        ee = import_ee()
        entry = batch.entry
        region = ee.Geometry.MultiPolygon(_polygons(batch.footprints), None, False)
        images = (
            ee.ImageCollection(entry.id)
            .filterDate(batch.start_ms, batch.end_ms)
            .filterBounds(region)
        )
        if max_cloud_pct is not None and entry.cloud.cover_property:
            images = images.filter(ee.Filter.lte(entry.cloud.cover_property, max_cloud_pct))
        for rule in SERVER_FILTERS.get(entry.id, ()):
            if rule.op == "eq":
                images = images.filter(ee.Filter.eq(rule.property, rule.value))
            elif rule.op == "list_contains":
                images = images.filter(ee.Filter.listContains(rule.property, rule.value))
            else:
                raise CatalogError(f"unknown server filter operator {rule.op!r}")
        score = entry.cloud
        if score.score_collection:
            scores = (
                ee.ImageCollection(score.score_collection)
                .filterDate(batch.start_ms, batch.end_ms)
                .filterBounds(region)
            )
            joined = ee.Join.saveFirst(_SCORE_KEY, outer=True).apply(
                images,
                scores,
                ee.Filter.equals(leftField="system:index", rightField="system:index"),
            )
            images = ee.ImageCollection(joined)
        images = images.limit(self._max_images)

        properties = list(_SCENE_PROPERTIES.get(entry.canonical, ()))
        grid_canonical = _GRID_BAND.get(entry.canonical)
        grid_band = (
            entry.bands[grid_canonical].asset
            if grid_canonical in entry.bands
            else next(iter(entry.bands.values())).asset
        )
        with_score = bool(score.score_collection)

        def describe(element: Any) -> Any:
            image = ee.Image(element)
            grid = image.select([grid_band]).projection()
            feature = ee.Feature(image.geometry(), image.toDictionary(properties)).set(
                {
                    "image_index": image.get("system:index"),
                    "time_start": image.get("system:time_start"),
                    "band_names": image.bandNames(),
                    "crs": grid.crs(),
                    "scale_m": grid.nominalScale(),
                }
            )
            if with_score:
                linked = image.get(_SCORE_KEY)
                feature = feature.set(
                    "cloud_score_index",
                    ee.Algorithms.If(linked, ee.Image(linked).get("system:index"), None),
                )
            return feature

        return images.map(describe)

    def _run_batch(
        self, batch: _Batch, max_cloud_pct: float | None, counter: _Counter
    ) -> list[dict[str, Any]]:
        ee = import_ee()
        expression = self.build_expression(batch, max_cloud_pct)
        size = len(
            json.dumps(ee.serializer.encode(expression, for_cloud_api=True), separators=(",", ":"))
        )
        if size > PAYLOAD_BUDGET_BYTES:
            raise _TooLargeError(f"request of {size} bytes over the {PAYLOAD_BUDGET_BYTES} budget")
        counter.sent(batch)
        try:
            answer = ee.data.computeValue(expression)
        except ee.EEException as exc:
            message = str(exc)
            if any(marker in message.lower() for marker in _TOO_LARGE_MARKERS):
                raise _TooLargeError(message) from None
            raise CatalogError(
                f"Earth Engine refused the search of {batch.entry.id} "
                f"({len(batch.footprints)} footprints): {message}"
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("features"), list):
            raise CatalogError(
                f"Earth Engine answered the search of {batch.entry.id} with something that is "
                "not a FeatureCollection: is opt_url an Earth Engine endpoint?"
            )
        features: list[dict[str, Any]] = answer["features"]
        if len(features) >= self._max_images:
            raise _TooLargeError(f"answer reached the {self._max_images}-image limit")
        return features

    def search(self, request: SearchRequest, *, progress: bool = False) -> SearchResult:
        """Find the scenes of ``request`` with few batched requests (see the module docstring).

        The stats count the ``value:compute`` calls this backend made (``n_requests``; the
        client's own 429/5xx retries are invisible to it), of which ``n_retries`` were halves of
        a batch the server found too large; ``n_groups`` is the number of batches planned before
        any split and ``n_pages`` the number of answers received.

        Raises:
            CatalogError: no credentials or project, a collection the profile lacks, an error
                the server will not get over (the message names it), or a batch still too large
                after ``max_split_depth`` halvings.
        """
        started = time.perf_counter()
        entries = [self._profile.collection(c) for c in request.collections]
        self._ensure_initialised()
        counter = _Counter()
        groups = plan_batches(request.footprints, self._max_footprints)
        start_ms, end_ms = _to_ms(request.start), _to_ms(request.end) + 1
        todo = [_Batch(entry, group, start_ms, end_ms) for entry in entries for group in groups]
        features: list[tuple[CollectionProfile, dict[str, Any]]] = []
        n_pages = 0

        bar = ProgressBar("Earth Engine search", len(todo), enabled=progress)
        try:
            with ThreadPoolExecutor(max_workers=self._max_workers) as pool:
                running: dict[Future[list[dict[str, Any]]], _Batch] = {
                    pool.submit(self._run_batch, b, request.max_cloud_pct, counter): b for b in todo
                }
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        batch = running.pop(future)
                        try:
                            answer = future.result()
                        except _TooLargeError as exc:
                            halves = _split(batch) if batch.depth < self._max_split_depth else None
                            if halves is None:
                                for other in running:
                                    other.cancel()
                                raise CatalogError(
                                    f"Earth Engine cannot answer the search of {batch.entry.id} "
                                    f"even for {len(batch.footprints)} footprint(s) after "
                                    f"{batch.depth} halvings ({exc}): shorten the time window"
                                ) from None
                            logger.info("splitting a batch of %s: %s", batch.entry.id, exc)
                            for half in halves:
                                future = pool.submit(
                                    self._run_batch, half, request.max_cloud_pct, counter
                                )
                                running[future] = half
                            bar.update(total=bar.total + 1)
                            continue
                        except BaseException:
                            for other in running:
                                other.cancel()
                            raise
                        n_pages += 1
                        features.extend((batch.entry, f) for f in answer)
                        bar.advance()
        finally:
            bar.close()

        scenes = [
            scene
            for entry, feature in features
            if (scene := parse_feature(feature, entry, self.provider)) is not None
        ]
        found = filter_scenes(scenes, request)
        stats = SearchStats(
            n_footprints=len(request.footprints),
            n_groups=len(groups),
            n_requests=counter.requests,
            n_retries=counter.resent,
            n_pages=n_pages,
            n_items=len(features),
            n_scenes=len(found),
            seconds=time.perf_counter() - started,
        )
        return SearchResult(scenes=found, stats=stats)
