"""Earth Engine catalog backend (earthengine-api): the only harvest module that imports ``ee``.

A search sends few requests for many footprints. Footprints are sorted along a Morton (Z-order)
curve of their centroids and cut into spatially compact batches; for each batch and collection
one expression is evaluated server side with one ``value:compute`` call (``getInfo``):

    ImageCollection(id).filterDate(start, end).filterBounds(union of the batch's footprints)
        [.filter(cloud property <= limit)] [.filter(instrument mode, polarisation)]
        [join Cloud Score+ images on system:index]
        .limit(max_images_per_request)
        .map(image -> Feature(footprint, {index, time, scene properties, bands, crs, scale}))

The answer (a FeatureCollection) is parsed into :class:`~harvest.catalog.base.SceneRef`; the
exact request (footprint intersection, inclusive window, cloud limit) is then applied locally
with :func:`~harvest.catalog.memory.filter_scenes`.

Request limits (documented by Earth Engine; see the "Earth Engine quotas" guide) are named
constants below. A batch that is too large for the server (the request payload, the 5000-element
getInfo limit, "User memory limit exceeded.", "Computation timed out.") is never sent again as
is: it is split in two (footprints by position, or a single footprint's time window in halves)
and the halves are sent, at most ``max_split_depth`` times in a row before a
:class:`~harvest.errors.CatalogError`. Transient errors (429 Too Many Requests, 5xx) are retried
by the earthengine-api client itself with exponential backoff (``ee.data.setMaxRetries``).

Credentials come from the standard environment only: a service account key named by
``GOOGLE_APPLICATION_CREDENTIALS`` or application default credentials, both found by
``google.auth.default()``. Nothing here reads the environment for the project: the caller (the
CLI, with :func:`default_project`) passes it. Initialisation is lazy: the constructor does no
network work; the first search initialises the library.

Asset hrefs are ``ee://COLLECTION/SYSTEM_INDEX#BAND`` (see :func:`split_ee_href`): the Earth
Engine image id and the Earth Engine band name, read later with ``computePixels``.

Pixels: :class:`EarthEngineReader` is the :class:`~harvest.read.Reader` of such assets (the
fetch stage picks it for ``ee://`` hrefs). One ``ee.data.computePixels`` call per image and tile,
on the chip grid given explicitly (CRS code, affine transform, size), answered as a NumPy
structured array; requests are cut to the documented limits before sending, halved on "User
memory limit exceeded.", and bounded in number in flight (see the class docstring).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.geometry
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from harvest.catalog.base import (
    AssetMap,
    AssetRef,
    Footprint,
    SceneRef,
    SearchRequest,
    SearchResult,
    SearchStats,
)
from harvest.catalog.memory import filter_scenes
from harvest.catalog.profiles import (
    CollectionProfile,
    ProviderProfile,
    load_profile,
    normalize_baseline,
    scale_offset,
)
from harvest.errors import AssetReadError, CatalogError, ReadError
from harvest.grid import ChipGrid
from harvest.progress import ProgressBar
from harvest.read import ChipRead, LazyThreadPool, band_refs, physical_chip

logger = logging.getLogger(__name__)

# --- documented Earth Engine limits -------------------------------------------------------------

EE_MAX_GETINFO_ELEMENTS = 5000
"""getInfo of a collection aborts past this many elements ("Collection query aborted after
accumulating over 5000 elements")."""

EE_MAX_REQUEST_PAYLOAD_BYTES = 10 * 1024 * 1024
"""Largest request body Earth Engine accepts (10 MB)."""

EE_MAX_CONCURRENT_REQUESTS = 40
"""Default per-project quota of concurrent interactive requests (standard and high-volume)."""

EE_DEFAULT_MAX_RETRIES = 5
EE_DEFAULT_DEADLINE_S = 20.0
"""Seconds one Earth Engine request may take (``--timeout``); the client's default has none, so
an endpoint that accepts the connection and never answers held the search for ever."""
"""The client's own default number of retries of 429/5xx answers."""

EE_HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
"""Endpoint meant for many small automated requests (pass as ``opt_url``)."""

EE_SCOPES = (
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
)
"""OAuth scopes asked of application default credentials."""

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

EE_HREF_SCHEME = "ee://"
CLOUD_SCORE_ASSET = "cloud_score"
"""Asset key of the linked Cloud Score+ image (per-pixel clear-sky score) where it exists."""

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


def default_project(environ: Mapping[str, str]) -> str | None:
    """The Earth Engine project named by ``EE_PROJECT`` or else ``GOOGLE_CLOUD_PROJECT``.

    Takes the environment as an argument so that only the CLI reads ``os.environ``.
    """
    for key in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return None


def ee_href(collection_id: str, image_index: str, band: str) -> str:
    """``ee://COLLECTION/INDEX#BAND`` for one band of one image."""
    return f"{EE_HREF_SCHEME}{collection_id}/{image_index}#{band}"


def split_ee_href(href: str) -> tuple[str, str]:
    """``ee://COLLECTION/INDEX#BAND`` -> (Earth Engine image id, band name).

    Raises:
        CatalogError: the href is not an Earth Engine href.
    """
    if not href.startswith(EE_HREF_SCHEME) or "#" not in href:
        raise CatalogError(f"{href!r} is not an Earth Engine href (ee://COLLECTION/INDEX#BAND)")
    image_id, band = href[len(EE_HREF_SCHEME) :].rsplit("#", 1)
    if not image_id or not band:
        raise CatalogError(f"{href!r} lacks the image id or the band name")
    return image_id, band


def _import_ee() -> ModuleType:
    try:
        import ee
    except ImportError:
        raise CatalogError(
            "the Earth Engine backend needs earthengine-api: pip install earthengine-api"
        ) from None
    return ee


# One process holds one Earth Engine client state; remember what it was initialised with.
_INIT_LOCK = threading.Lock()
_initialised_with: tuple[str, str | None, int] | None = None


def reset_earth_engine() -> None:
    """Forget the library's initialisation (the next search initialises it again)."""
    global _initialised_with
    with _INIT_LOCK:
        ee = _import_ee()
        ee.Reset()
        _initialised_with = None


def _resolve_credentials(credentials: Any, project: str | None) -> tuple[Any, str | None]:
    if credentials is not None:
        return credentials, project
    import google.auth
    import google.auth.exceptions

    try:
        found, adc_project = google.auth.default(scopes=list(EE_SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as exc:
        detail = " ".join(str(exc).split())
        if "could not automatically determine credentials" in detail.lower():
            raise CatalogError(
                "no Google credentials for Earth Engine: set GOOGLE_APPLICATION_CREDENTIALS to "
                "a service account key file or run 'gcloud auth application-default login'"
            ) from None
        # Credentials were found but cannot be used (a missing, unparsable or wrong-type key
        # file): saying "no credentials" sent users looking for the wrong problem.
        raise CatalogError(
            f"the Google credentials for Earth Engine cannot be used ({detail[:200]}): fix "
            "or replace the key file GOOGLE_APPLICATION_CREDENTIALS names, or run 'gcloud "
            "auth application-default login'"
        ) from None
    return found, project or adc_project


def _google_auth_errors() -> type[Exception]:
    import google.auth.exceptions

    return google.auth.exceptions.GoogleAuthError


def initialise_earth_engine(
    *,
    project: str | None,
    opt_url: str | None = None,
    credentials: Any = None,
    max_retries: int = EE_DEFAULT_MAX_RETRIES,
    deadline_s: float | None = None,
) -> ModuleType:
    """Initialise the ``ee`` library once per process and settings; return the module.

    Raises:
        CatalogError: no credentials or project, or the endpoint refused the initialisation.
    """
    global _initialised_with
    ee = _import_ee()
    opt_url = opt_url.rstrip("/") if opt_url else None
    with _INIT_LOCK:
        key = (project or "", opt_url, id(credentials))
        if _initialised_with == key and ee.data.is_initialized():
            return ee
        credentials, project = _resolve_credentials(credentials, project)
        if not project:
            raise CatalogError(
                "no Earth Engine project: pass one (harvest reads EE_PROJECT or "
                "GOOGLE_CLOUD_PROJECT) or use credentials that carry a quota project"
            )
        if _initialised_with is not None:
            ee.Reset()
        try:
            ee.Initialize(credentials=credentials, project=project, url=opt_url)
        except (OSError, _google_auth_errors()) as exc:
            # The token endpoint or the API could not be reached (or refused the key).
            where = opt_url or "the default endpoint"
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise CatalogError(
                f"cannot start an Earth Engine session at {where} for project {project} "
                f"({type(exc).__name__}: {detail}): check the network and the credentials, "
                "then run the same command again"
            ) from None
        except ee.EEException as exc:
            where = opt_url or "the default endpoint"
            raise CatalogError(
                f"Earth Engine initialisation at {where} failed for project {project}: "
                f"{exc}; check the credentials and that the project is registered for "
                "Earth Engine"
            ) from None
        ee.data.setMaxRetries(max_retries)
        if deadline_s is not None:
            ee.data.setDeadline(deadline_s * 1000.0)
        _initialised_with = key
        return ee


def earth_engine_initialised() -> bool:
    """Whether this process has initialised Earth Engine (through harvest) already."""
    if _initialised_with is None:
        return False
    return bool(_import_ee().data.is_initialized())


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
    """A :class:`~harvest.catalog.base.Catalog` over the Earth Engine public catalog.

    Args:
        profile: The provider profile (default: the shipped ``earth-engine`` profile).
        project: Google Cloud project billed for the requests; None takes the project of the
            application default credentials (the CLI passes :func:`default_project`).
        opt_url: Earth Engine endpoint, e.g. :data:`EE_HIGH_VOLUME_URL`; None: the default one.
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
        ee = _import_ee()
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
        ee = _import_ee()
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


# ================================================================================================
# Pixel reads: ee.data.computePixels on an explicit chip grid
# ================================================================================================

EE_MAX_PIXELS_REQUEST_BYTES = 48_000_000
"""computePixels/getPixels answer at most 48 MB of uncompressed pixels per request (taken as
10^6-byte megabytes, the stricter reading)."""

EE_MAX_PIXELS_SIDE = 32768
"""Largest width or height of one computePixels grid."""

EE_MAX_PIXELS_BANDS = 1024
"""Most bands one computePixels request may return."""

EE_MAX_REQUESTS_PER_S = 100
"""Default per-project request rate quota (the client's own 429 retries absorb short bursts)."""

DEFAULT_PIXEL_CONCURRENCY = 8
"""computePixels requests in flight at once per process. Keep ``processes x this`` under
:data:`EE_MAX_CONCURRENT_REQUESTS` (e.g. 4 Dask workers x 8 = 32 <= 40)."""

DEFAULT_PIXEL_SPLIT_DEPTH = 6
"""Halvings in a row of a request the server finds too large ("User memory limit exceeded.")
before the read fails (6 halvings: 1/64 of the area)."""

REDUCE_RESOLUTION_MAX_PIXELS = 1024
"""``maxPixels`` of the area-average ``reduceResolution``: input pixels per output pixel (0.6 m
NAIP to 2.5 m needs about 25, to 10 m about 300; the server default of 64 is too small)."""

MASKED_VALUE = -3.0e38
"""What masked pixels are filled with before sending (``unmask``), so they cannot be confused
with data; comes back as NaN. Far below any stored value of the supported collections."""

_MASKED_BELOW = -1.0e38
_FLOAT32_BYTES = 4  # every band is sent as float32 (toFloat), whatever its stored type

# Server answers that mean "ask for less at once" (never resent as they are).
_PIXELS_TOO_LARGE_MARKERS = (
    "user memory limit exceeded",
    "computation timed out",
    "total request size",
    "request payload size exceeds",
)
_TRANSIENT_EE_MARKERS = (
    "too many requests",
    "quota exceeded",
    "rate limit",
    "resource_exhausted",
    "service unavailable",
    "backend error",
    "internal error",
    "deadline exceeded",
    "timed out",
)
_EE_RESAMPLE_MODE = {"bilinear": "bilinear", "cubic": "bicubic"}

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _request_semaphore(project: str | None, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per project and bound, shared by every reader of this process."""
    with _SEMAPHORES_LOCK:
        key = (project or "", limit)
        sem = _SEMAPHORES.get(key)
        if sem is None:
            sem = threading.BoundedSemaphore(limit)
            _SEMAPHORES[key] = sem
        return sem


@dataclass(frozen=True)
class PixelTile:
    """A window of a chip grid, over some bands of one image: one computePixels request.

    Attributes:
        image_id: Earth Engine image id (``COLLECTION/INDEX``).
        bands: Earth Engine band names, in request order.
        row_off: First row of the window in the chip grid.
        col_off: First column of the window in the chip grid.
        height: Rows of the window.
        width: Columns of the window.
        depth: Halvings after a "User memory limit exceeded." answer that led here.
    """

    image_id: str
    bands: tuple[str, ...]
    row_off: int
    col_off: int
    height: int
    width: int
    depth: int = 0

    @property
    def n_bytes(self) -> int:
        """Uncompressed size of the answer (float32 per band and pixel)."""
        return self.height * self.width * len(self.bands) * _FLOAT32_BYTES

    def halves(self) -> tuple[PixelTile, PixelTile] | None:
        """Two halves along the longer side (then the band list); None for one pixel, one band."""
        d = self.depth + 1
        if self.height >= self.width and self.height > 1:
            h = self.height // 2
            return (
                replace(self, height=h, depth=d),
                replace(self, row_off=self.row_off + h, height=self.height - h, depth=d),
            )
        if self.width > 1:
            w = self.width // 2
            return (
                replace(self, width=w, depth=d),
                replace(self, col_off=self.col_off + w, width=self.width - w, depth=d),
            )
        if len(self.bands) > 1:
            k = len(self.bands) // 2
            return (
                replace(self, bands=self.bands[:k], depth=d),
                replace(self, bands=self.bands[k:], depth=d),
            )
        return None


def plan_pixel_tiles(
    image_id: str,
    bands: Sequence[str],
    height: int,
    width: int,
    *,
    max_bytes: int = EE_MAX_PIXELS_REQUEST_BYTES,
    max_side: int = EE_MAX_PIXELS_SIDE,
    max_bands: int = EE_MAX_PIXELS_BANDS,
) -> list[PixelTile]:
    """Cut a read into requests within the documented limits (before anything is sent).

    Bands are cut into groups of at most ``max_bands``; then the window is cut into a regular
    grid of nearly equal tiles, each at most ``max_side`` pixels a side and ``max_bytes`` big.

    Raises:
        ReadError: a limit so small that not even one pixel of one band fits.
    """
    if max_bytes < _FLOAT32_BYTES or max_side < 1 or max_bands < 1:
        raise ReadError(
            f"computePixels limits too small (max_bytes={max_bytes}, max_side={max_side}, "
            f"max_bands={max_bands}): at least one float32 pixel must fit"
        )
    groups = [tuple(bands[i : i + max_bands]) for i in range(0, len(bands), max_bands)]
    tiles: list[PixelTile] = []
    for group in groups:
        n_rows = max(1, math.ceil(height / max_side))
        n_cols = max(1, math.ceil(width / max_side))
        band_bytes = len(group) * _FLOAT32_BYTES
        # Add cuts along the longer tile side until one tile fits the byte budget.
        while math.ceil(height / n_rows) * math.ceil(width / n_cols) * band_bytes > max_bytes:
            if math.ceil(height / n_rows) >= math.ceil(width / n_cols) and n_rows < height:
                n_rows += 1
            elif n_cols < width:
                n_cols += 1
            else:  # one pixel per tile and still too big: too many bands per group
                raise ReadError(
                    f"one pixel of {len(group)} bands is over the {max_bytes}-byte request limit"
                )
        row_edges = [round(i * height / n_rows) for i in range(n_rows + 1)]
        col_edges = [round(j * width / n_cols) for j in range(n_cols + 1)]
        for r0, r1 in itertools.pairwise(row_edges):
            for c0, c1 in itertools.pairwise(col_edges):
                tiles.append(PixelTile(image_id, group, r0, c0, r1 - r0, c1 - c0))
    return tiles


def pixel_grid(grid: ChipGrid, tile: PixelTile | None = None) -> dict[str, Any]:
    """The computePixels ``grid`` (PixelGrid) of a chip grid, or of a window of it."""
    t = grid.transform
    row, col = (tile.row_off, tile.col_off) if tile is not None else (0, 0)
    width, height = (tile.width, tile.height) if tile is not None else (grid.width, grid.height)
    # The window's upper-left corner on the same lattice: exact for whole pixel offsets.
    return {
        "dimensions": {"width": width, "height": height},
        "affineTransform": {
            "scaleX": t.a,
            "shearX": t.b,
            "translateX": t.c + t.a * col + t.b * row,
            "shearY": t.d,
            "scaleY": t.e,
            "translateY": t.f + t.d * col + t.e * row,
        },
        "crsCode": f"EPSG:{grid.epsg}",
    }


class _PixelsTooLargeError(Exception):
    """The server asks for a smaller request."""


@dataclass
class EarthEngineReader:
    """A :class:`~harvest.read.Reader` of ``ee://COLLECTION/INDEX#BAND`` assets.

    Each image of a read becomes one expression,
    ``ee.Image(id).select(bands)[resampling].toFloat().unmask(MASKED_VALUE, False)``, asked for
    with ``ee.data.computePixels`` on the chip grid given explicitly (CRS code, affine transform,
    width and height), answered as a ``NUMPY_NDARRAY`` (a structured array, one field per band).
    Resampling: ``nearest`` sends none (Earth Engine's default is nearest neighbour: an identity
    read for Sentinel-2 10 m bands on a chip grid snapped to them); ``average`` is an area
    average, ``reduceResolution(Reducer.mean(), maxPixels=REDUCE_RESOLUTION_MAX_PIXELS)`` then
    ``reproject`` onto the chip grid (NAIP 0.6 m / 1 m to 2.5 m); ``bilinear``/``cubic`` use
    ``resample``. Numbers become float32 ``DN * scale + offset``; masked pixels (and the
    asset's declared nodata) become NaN.

    Requests stay within the documented limits (:data:`EE_MAX_PIXELS_REQUEST_BYTES`,
    :data:`EE_MAX_PIXELS_SIDE`, :data:`EE_MAX_PIXELS_BANDS`): a larger read is cut into tiles
    before sending and stitched. "User memory limit exceeded." is answered by asking for the two
    halves of that request (never the same request again), at most ``max_split_depth`` times in
    a row. 429 and 5xx answers are retried by the client itself (``ee.data.setMaxRetries``).
    At most ``max_concurrent`` requests are in flight per process and project.

    Args:
        project: Google Cloud project billed; None: the project this process already
            initialised Earth Engine with, else the application default credentials' project.
        opt_url: Earth Engine endpoint (e.g. :data:`EE_HIGH_VOLUME_URL`, meant for many small
            automated requests); None: the default.
        credentials: google-auth credentials; None: ``google.auth.default()``.
        max_retries: Retries of 429/5xx answers the client makes itself.
        max_concurrent: Requests in flight at once (1 to :data:`EE_MAX_CONCURRENT_REQUESTS`).
        max_split_depth: Halvings in a row after "User memory limit exceeded.".
        max_request_bytes: Uncompressed bytes per request (at most the documented limit).
        max_side_px: Pixels a side per request (at most the documented limit).
        max_bands: Bands per request (at most the documented limit).
        deadline_s: Time limit of one request in seconds (``--timeout``; None: none).
    """

    project: str | None = None
    opt_url: str | None = None
    credentials: Any = None
    max_retries: int = EE_DEFAULT_MAX_RETRIES
    max_concurrent: int = DEFAULT_PIXEL_CONCURRENCY
    max_split_depth: int = DEFAULT_PIXEL_SPLIT_DEPTH
    max_request_bytes: int = EE_MAX_PIXELS_REQUEST_BYTES
    max_side_px: int = EE_MAX_PIXELS_SIDE
    max_bands: int = EE_MAX_PIXELS_BANDS
    deadline_s: float | None = EE_DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent <= EE_MAX_CONCURRENT_REQUESTS:
            raise CatalogError(
                f"max_concurrent {self.max_concurrent} must be within "
                f"1-{EE_MAX_CONCURRENT_REQUESTS} (Earth Engine's concurrent request quota)"
            )
        if not 0 < self.max_request_bytes <= EE_MAX_PIXELS_REQUEST_BYTES:
            raise CatalogError(
                f"max_request_bytes must be within 1-{EE_MAX_PIXELS_REQUEST_BYTES} "
                "(Earth Engine's computePixels limit)"
            )
        if not 0 < self.max_side_px <= EE_MAX_PIXELS_SIDE:
            raise CatalogError(f"max_side_px must be within 1-{EE_MAX_PIXELS_SIDE}")
        if not 0 < self.max_bands <= EE_MAX_PIXELS_BANDS:
            raise CatalogError(f"max_bands must be within 1-{EE_MAX_PIXELS_BANDS}")
        if self.max_split_depth < 0:
            raise CatalogError("max_split_depth must be >= 0")
        self._pool = LazyThreadPool(self.max_concurrent, "harvest-ee-read")
        self._stats_lock = threading.Lock()
        self.n_requests = 0
        self.n_splits = 0

    def __getstate__(self) -> dict[str, Any]:
        # The pool and locks stay in the process that made them.
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def close(self) -> None:
        """Stop the request pool."""
        self._pool.close()

    # --- initialisation and the request ----------------------------------------------------------

    def _ee(self) -> ModuleType:
        if self.project is None and self.credentials is None and earth_engine_initialised():
            return _import_ee()
        return initialise_earth_engine(
            project=self.project,
            opt_url=self.opt_url,
            credentials=self.credentials,
            max_retries=self.max_retries,
            deadline_s=self.deadline_s,
        )

    def build_expression(
        self, image_id: str, bands: Sequence[str], grid: ChipGrid, resampling: str
    ) -> Any:
        """The ``ee.Image`` asked for (see the class docstring)."""
        ee = _import_ee()
        image = ee.Image(image_id).select(list(bands))
        if resampling == "average":
            t = grid.transform
            image = image.reduceResolution(
                reducer=ee.Reducer.mean(), maxPixels=REDUCE_RESOLUTION_MAX_PIXELS
            ).reproject(crs=f"EPSG:{grid.epsg}", crsTransform=[t.a, t.b, t.c, t.d, t.e, t.f])
        elif resampling in _EE_RESAMPLE_MODE:
            image = image.resample(_EE_RESAMPLE_MODE[resampling])
        elif resampling != "nearest":
            raise ReadError(
                f"unknown resampling {resampling!r}: use nearest, average, bilinear or cubic"
            )
        return image.toFloat().unmask(MASKED_VALUE, False)

    def _request(
        self, ee: ModuleType, tile: PixelTile, grid: ChipGrid, resampling: str, href: str
    ) -> npt.NDArray[np.float32]:
        """One computePixels call: ``[bands, height, width]`` float32 (masked: NaN)."""
        params = {
            "expression": self.build_expression(tile.image_id, tile.bands, grid, resampling),
            "fileFormat": "NUMPY_NDARRAY",
            "grid": pixel_grid(grid, tile),
        }
        with self._stats_lock:
            self.n_requests += 1
        with _request_semaphore(self.project, self.max_concurrent):
            try:
                answer = ee.data.computePixels(params)
            except ee.EEException as exc:
                message = " ".join(str(exc).split())
                lowered = message.lower()
                if any(m in lowered for m in _PIXELS_TOO_LARGE_MARKERS):
                    raise _PixelsTooLargeError(message) from None
                if any(m in lowered for m in _TRANSIENT_EE_MARKERS):
                    raise ReadError(
                        f"cannot read {href}: {message} (still failing after the client's "
                        f"{self.max_retries} retries; run again later to retry)"
                    ) from None
                raise AssetReadError(href, message) from None
        names = getattr(getattr(answer, "dtype", None), "names", None) or ()
        missing = [b for b in tile.bands if b not in names]
        if missing or answer.shape != (tile.height, tile.width):
            raise AssetReadError(
                href,
                f"computePixels answered bands {list(names)} of shape "
                f"{getattr(answer, 'shape', None)}, expected {list(tile.bands)} of shape "
                f"{(tile.height, tile.width)}",
            )
        out = np.empty((len(tile.bands), tile.height, tile.width), dtype=np.float32)
        for i, band in enumerate(tile.bands):
            out[i] = answer[band]
        out[out <= _MASKED_BELOW] = np.nan
        return out

    def _read_tile(
        self, ee: ModuleType, tile: PixelTile, grid: ChipGrid, resampling: str, href: str
    ) -> list[tuple[PixelTile, npt.NDArray[np.float32]]]:
        """A tile, or its halves (recursively) when the server finds it too large."""
        try:
            return [(tile, self._request(ee, tile, grid, resampling, href))]
        except _PixelsTooLargeError as exc:
            halves = tile.halves() if tile.depth < self.max_split_depth else None
            if halves is None:
                raise ReadError(
                    f"cannot read {href}: Earth Engine cannot compute even a "
                    f"{tile.height} x {tile.width} px request of {len(tile.bands)} band(s) "
                    f"after {tile.depth} halvings ({exc}); try a smaller chip or a simpler "
                    "resampling"
                ) from None
            logger.info("splitting a computePixels request of %s: %s", tile.image_id, exc)
            with self._stats_lock:
                self.n_splits += 1
            return [part for half in halves for part in self._read_tile(
                ee, half, grid, resampling, href)]  # fmt: skip

    def _read_bands(
        self, refs: Sequence[AssetRef], grid: ChipGrid, resampling: str
    ) -> npt.NDArray[np.float32]:
        """Stored values of ``refs`` on ``grid`` (one request per image and tile), NaN masked."""
        ee = self._ee()
        parsed = [split_ee_href(ref.href) for ref in refs]
        by_image: dict[str, list[str]] = {}
        for image_id, band in parsed:
            names = by_image.setdefault(image_id, [])
            if band not in names:
                names.append(band)
        tiles: list[tuple[PixelTile, str]] = []
        for image_id, names in by_image.items():
            href = next(r.href for r, p in zip(refs, parsed, strict=True) if p[0] == image_id)
            tiles.extend(
                (tile, href)
                for tile in plan_pixel_tiles(
                    image_id,
                    names,
                    grid.height,
                    grid.width,
                    max_bytes=self.max_request_bytes,
                    max_side=self.max_side_px,
                    max_bands=self.max_bands,
                )
            )
        parts = self._pool.map(
            lambda th: self._read_tile(ee, th[0], grid, resampling, th[1]), tiles
        )
        # Stitch: every piece lands on its window of its image's bands.
        planes = {
            (image_id, band): np.full(grid.shape, np.nan, dtype=np.float32)
            for image_id, names in by_image.items()
            for band in names
        }
        for pieces in parts:
            for tile, arr in pieces:
                rows = slice(tile.row_off, tile.row_off + tile.height)
                cols = slice(tile.col_off, tile.col_off + tile.width)
                for i, band in enumerate(tile.bands):
                    planes[(tile.image_id, band)][rows, cols] = arr[i]
        out = np.empty((len(refs), grid.height, grid.width), dtype=np.float32)
        for i, (key, ref) in enumerate(zip(parsed, refs, strict=True)):
            band_data = planes[key]
            if ref.nodata is not None and not math.isnan(ref.nodata):
                band_data = np.where(band_data == np.float32(ref.nodata), np.nan, band_data)
            out[i] = band_data
        return out

    # --- the Reader protocol ---------------------------------------------------------------------

    def read(
        self,
        assets: Mapping[str, AssetRef],
        bands: Sequence[str],
        grid: ChipGrid,
        resampling: str = "nearest",
    ) -> ChipRead:
        """See :meth:`harvest.read.Reader.read`.

        Raises:
            ReadError: a band the scene lacks, a request still too large after the halvings,
                or a transient error that outlived the client's retries.
            AssetReadError: Earth Engine refused the image (missing image or band, ...).
        """
        started = time.perf_counter()
        refs = band_refs(assets, bands)
        return physical_chip(self._read_bands(refs, grid, resampling), refs, grid, bands, started)

    def read_raw(self, asset: AssetRef, grid: ChipGrid) -> npt.NDArray[np.float32]:
        """See :meth:`harvest.read.Reader.read_raw` (nearest neighbour, no scale/offset)."""
        return self._read_bands([asset], grid, "nearest")[0]


def is_earth_engine_asset(ref: AssetRef) -> bool:
    """Whether an asset is read through Earth Engine (an ``ee://`` href)."""
    return ref.href.startswith(EE_HREF_SCHEME)


_SHARED_READERS: dict[tuple[str | None, str | None, float | None], EarthEngineReader] = {}
_SHARED_READERS_LOCK = threading.Lock()


def shared_reader(
    project: str | None = None,
    opt_url: str | None = None,
    deadline_s: float | None = EE_DEFAULT_DEADLINE_S,
) -> EarthEngineReader:
    """This process's :class:`EarthEngineReader` for a project and endpoint (fetch workers).

    One per (project, endpoint) and process, so the chips of a worker share its request pool
    and concurrency bound. ``None``: the project this process initialised Earth Engine with,
    else that of the application default credentials; the default endpoint.
    """
    key = (project, opt_url, deadline_s)
    with _SHARED_READERS_LOCK:
        reader = _SHARED_READERS.get(key)
        if reader is None:
            reader = _SHARED_READERS[key] = EarthEngineReader(
                project=project, opt_url=opt_url, deadline_s=deadline_s
            )
        return reader
