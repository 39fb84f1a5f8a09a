"""The backend protocols and the values that cross them, in one provider-neutral vocabulary.

Every backend (STAC API, stac-geoparquet snapshot, Earth Engine, the demo world) turns its own
items into :class:`SceneRef` objects in one vocabulary (canonical collection and band names,
reflectance scale/offset already resolved), so that pairing, fetching and writing never need to
know which provider a scene came from. A ``SceneRef`` flattens to a plain row
(:meth:`SceneRef.to_record`) so a list of them is a parquet table, and comes back from one
(:meth:`SceneRef.from_record`).

The :class:`Catalog` protocol is the one interface the search stage calls. A search takes a
frozen :class:`SearchRequest` (many footprints at once: backends batch them into few requests) and
returns a :class:`SearchResult` whose :class:`SearchStats` say how many requests it cost.

The :class:`Reader` protocol is the one interface the fetch stage reads pixels through: bands of
one scene onto one chip grid, as a :class:`ChipRead` of float32 reflectance. Which catalog a
``--catalog`` value names and which reader an href needs is decided by
:mod:`harvest.backends.registry`; stages import only this module and the registry.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from harvest.errors import CatalogError, ReadError

if TYPE_CHECKING:
    from harvest.grid import ChipGrid

Signer = Callable[[str], str]
"""A function from an unsigned href to a signed one (e.g. Planetary Computer's SAS signing),
applied right before a read: tables keep unsigned hrefs."""

ResamplingName = Literal["nearest", "average", "bilinear", "cubic"]
"""How a reader brings a source onto a chip grid (``average``: exact area average)."""

RECORD_COLUMNS: tuple[str, ...] = (
    "item_id",
    "collection",
    "provider",
    "datetime",
    "geometry",
    "bbox_xmin",
    "bbox_ymin",
    "bbox_xmax",
    "bbox_ymax",
    "cloud_cover_pct",
    "platform",
    "epsg",
    "processing_baseline",
    "view_off_nadir_deg",
    "sun_azimuth_deg",
    "sun_elevation_deg",
    "mgrs_tile",
    "gsd_m",
    "assets_json",
)
"""Columns of :meth:`SceneRef.to_record`, in order. ``geometry`` holds WKB (EPSG:4326)."""


@dataclass(frozen=True)
class AssetRef:
    """Where one canonical band lives and how its numbers become reflectance.

    ``physical = DN * scale + offset``; for Sentinel-2 L2A that is surface reflectance in [0, 1].

    Attributes:
        href: Unsigned URL or path of the file (signing happens right before a read).
        band_index: 1-based band inside the file (NAIP keeps red, green, blue, nir in one file).
        scale: Multiplicative factor applied to the stored numbers.
        offset: Additive term applied after ``scale``, in physical units.
        nodata: Stored value that marks missing pixels, None if the provider declares none.
        dtype: Stored data type (``uint16``, ``uint8``, ``float32``) where known.
    """

    href: str
    band_index: int = 1
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if not self.href:
            raise CatalogError("an asset has an empty href: the catalog item is broken")
        if self.band_index < 1:
            raise CatalogError(f"band_index {self.band_index} of {self.href} must be >= 1")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN nodata written as the string "nan")."""
        nodata: float | str | None = self.nodata
        if self.nodata is not None and math.isnan(self.nodata):
            nodata = "nan"
        return {
            "href": self.href,
            "band_index": self.band_index,
            "scale": self.scale,
            "offset": self.offset,
            "nodata": nodata,
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AssetRef:
        """Inverse of :meth:`to_json`."""
        nodata = data.get("nodata")
        return cls(
            href=str(data["href"]),
            band_index=int(data.get("band_index", 1)),
            scale=float(data.get("scale", 1.0)),
            offset=float(data.get("offset", 0.0)),
            nodata=None if nodata is None else float(nodata),
            dtype=data.get("dtype"),
        )


class AssetMap(Mapping[str, AssetRef]):
    """An immutable, hashable mapping of canonical band name to :class:`AssetRef`."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, AssetRef] | Iterable[tuple[str, AssetRef]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, AssetRef] = dict(sorted(pairs))

    def __getitem__(self, band: str) -> AssetRef:
        return self._items[band]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AssetMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"AssetMap({self._items!r})"


def _as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise CatalogError(f"{what} has no time zone: give datetimes in UTC (e.g. ending in Z)")
    return value.astimezone(UTC)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _opt_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


@dataclass(frozen=True)
class SceneRef:
    """One acquisition, described in harvest's provider-neutral vocabulary.

    Attributes:
        item_id: The provider's item id (unique within a collection).
        collection: Canonical collection name (``sentinel-2-l2a``, ``naip``, ...).
        provider: Name of the provider profile the scene came from.
        datetime: Acquisition time, tz-aware UTC.
        geometry: Footprint in EPSG:4326 (lon, lat).
        assets: Canonical band name -> :class:`AssetRef` (stored as an immutable
            :class:`AssetMap`, whatever mapping is given).
        cloud_cover_pct: Scene cloud cover in percent, None if the provider gives none.
        platform: Lower-case platform name (``sentinel-2a``), None if unknown.
        epsg: EPSG code of the native grid (``proj:epsg``), None if unknown.
        processing_baseline: Processing baseline as ``NN.NN`` (Sentinel-2), None if unknown.
        view_off_nadir_deg: Viewing angle in degrees: off nadir, or the viewing zenith angle at
            the ground where the provider publishes only that (``view:incidence_angle``, Earth
            Engine's mean incidence zenith angle).
        sun_azimuth_deg: Sun azimuth in degrees.
        sun_elevation_deg: Sun elevation above the horizon in degrees.
        mgrs_tile: MGRS tile such as ``06VVN`` (two-digit zone), None if not tiled.
        gsd_m: Nominal ground sampling distance in metres.
    """

    item_id: str
    collection: str
    provider: str
    datetime: datetime
    geometry: BaseGeometry
    assets: Mapping[str, AssetRef] = field(default_factory=AssetMap)
    cloud_cover_pct: float | None = None
    platform: str | None = None
    epsg: int | None = None
    processing_baseline: str | None = None
    view_off_nadir_deg: float | None = None
    sun_azimuth_deg: float | None = None
    sun_elevation_deg: float | None = None
    mgrs_tile: str | None = None
    gsd_m: float | None = None

    def __post_init__(self) -> None:
        if not self.item_id:
            raise CatalogError("a scene has an empty item id: the catalog item is broken")
        object.__setattr__(self, "datetime", _as_utc(self.datetime, f"scene {self.item_id}"))
        if not isinstance(self.geometry, BaseGeometry) or self.geometry.is_empty:
            raise CatalogError(f"scene {self.item_id} has no footprint geometry")
        if not isinstance(self.assets, AssetMap):
            object.__setattr__(self, "assets", AssetMap(self.assets))
        cloud = self.cloud_cover_pct
        if cloud is not None and not 0.0 <= cloud <= 100.0:
            raise CatalogError(
                f"scene {self.item_id} has cloud cover {cloud} %: expected 0-100 or unknown"
            )

    @property
    def key(self) -> tuple[str, str]:
        """``(collection, item_id)``: identifies the scene across searches."""
        return (self.collection, self.item_id)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the footprint in degrees."""
        xmin, ymin, xmax, ymax = self.geometry.bounds
        return (xmin, ymin, xmax, ymax)

    def asset(self, band: str) -> AssetRef:
        """The asset of one canonical band.

        Raises:
            CatalogError: the scene has no such band (the message lists those it has).
        """
        try:
            return self.assets[band]
        except KeyError:
            have = ", ".join(self.assets) or "none"
            raise CatalogError(
                f"scene {self.item_id} ({self.collection}) has no band {band}: it has {have}"
            ) from None

    def to_record(self) -> dict[str, Any]:
        """A flat row (columns :data:`RECORD_COLUMNS`) for a parquet table."""
        xmin, ymin, xmax, ymax = self.bbox
        assets = {band: ref.to_json() for band, ref in self.assets.items()}
        return {
            "item_id": self.item_id,
            "collection": self.collection,
            "provider": self.provider,
            "datetime": self.datetime,
            "geometry": shapely.to_wkb(self.geometry),
            "bbox_xmin": xmin,
            "bbox_ymin": ymin,
            "bbox_xmax": xmax,
            "bbox_ymax": ymax,
            "cloud_cover_pct": self.cloud_cover_pct,
            "platform": self.platform,
            "epsg": self.epsg,
            "processing_baseline": self.processing_baseline,
            "view_off_nadir_deg": self.view_off_nadir_deg,
            "sun_azimuth_deg": self.sun_azimuth_deg,
            "sun_elevation_deg": self.sun_elevation_deg,
            "mgrs_tile": self.mgrs_tile,
            "gsd_m": self.gsd_m,
            "assets_json": json.dumps(assets, sort_keys=True, separators=(",", ":")),
        }

    @classmethod
    def from_record(cls, row: Mapping[Any, Any]) -> SceneRef:
        """Rebuild a scene from a row written by :meth:`to_record`.

        Accepts what parquet readers hand back: WKB bytes or a shapely geometry, a datetime, a
        pandas Timestamp or an ISO string, NaN for missing numbers.

        Raises:
            CatalogError: a column is missing or unreadable.
        """
        missing = [
            c for c in ("item_id", "collection", "provider", "datetime", "geometry") if c not in row
        ]
        if missing:
            raise CatalogError(
                f"scene row lacks column(s) {', '.join(missing)}: was it written by to_record?"
            )
        item_id = str(row["item_id"])
        geom_value = row["geometry"]
        geometry = (
            geom_value if isinstance(geom_value, BaseGeometry) else shapely.from_wkb(geom_value)
        )
        when = row["datetime"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        elif hasattr(when, "to_pydatetime"):
            when = when.to_pydatetime()
        if not isinstance(when, datetime):
            raise CatalogError(f"scene row {item_id}: datetime {when!r} is not a timestamp")
        try:
            raw_assets = json.loads(row.get("assets_json") or "{}")
        except json.JSONDecodeError:
            raise CatalogError(f"scene row {item_id}: assets_json is not valid JSON") from None
        return cls(
            item_id=item_id,
            collection=str(row["collection"]),
            provider=str(row["provider"]),
            datetime=when,
            geometry=geometry,
            assets=AssetMap({band: AssetRef.from_json(a) for band, a in raw_assets.items()}),
            cloud_cover_pct=_opt_float(row.get("cloud_cover_pct")),
            platform=_opt_str(row.get("platform")),
            epsg=_opt_int(row.get("epsg")),
            processing_baseline=_opt_str(row.get("processing_baseline")),
            view_off_nadir_deg=_opt_float(row.get("view_off_nadir_deg")),
            sun_azimuth_deg=_opt_float(row.get("sun_azimuth_deg")),
            sun_elevation_deg=_opt_float(row.get("sun_elevation_deg")),
            mgrs_tile=_opt_str(row.get("mgrs_tile")),
            gsd_m=_opt_float(row.get("gsd_m")),
        )


def dedupe_scenes(scenes: Iterable[SceneRef]) -> tuple[SceneRef, ...]:
    """Drop repeated scenes (same collection and item id), keeping the first of each.

    Batched searches over neighbouring footprints return the same item several times.
    """
    seen: set[tuple[str, str]] = set()
    out: list[SceneRef] = []
    for scene in scenes:
        if scene.key not in seen:
            seen.add(scene.key)
            out.append(scene)
    return tuple(out)


@dataclass(frozen=True)
class Footprint:
    """One area to search for: a key (usually the roi_id) and its polygon in EPSG:4326."""

    key: str
    geometry: BaseGeometry

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, BaseGeometry) or self.geometry.is_empty:
            raise CatalogError(f"footprint {self.key!r} has an empty geometry")
        if not self.geometry.is_valid:
            raise CatalogError(
                f"footprint {self.key!r} is not a valid geometry: "
                f"{shapely.is_valid_reason(self.geometry)}"
            )


@dataclass(frozen=True)
class SearchRequest:
    """What to search for: many footprints, some collections, a time window, a cloud limit.

    Attributes:
        footprints: Areas to cover (keys must be unique); backends batch them into few requests.
        collections: Canonical collection names; the provider profile maps them to its ids.
        start: Start of the window (inclusive), tz-aware.
        end: End of the window (inclusive), tz-aware.
        max_cloud_pct: Scene cloud limit sent to the server (None: no limit). Collections without
            cloud cover (SAR, NAIP) are not filtered by it.
    """

    footprints: tuple[Footprint, ...]
    collections: tuple[str, ...]
    start: datetime
    end: datetime
    max_cloud_pct: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "footprints", tuple(self.footprints))
        object.__setattr__(self, "collections", tuple(self.collections))
        if not self.footprints:
            raise CatalogError("a search needs at least one footprint")
        if not self.collections:
            raise CatalogError("a search needs at least one collection")
        keys = [f.key for f in self.footprints]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:3]
            raise CatalogError(f"footprint keys must be unique; repeated: {', '.join(dup)}")
        object.__setattr__(self, "start", _as_utc(self.start, "search start"))
        object.__setattr__(self, "end", _as_utc(self.end, "search end"))
        if self.start > self.end:
            raise CatalogError(f"search start {self.start} is after end {self.end}")
        if self.max_cloud_pct is not None and not 0 <= self.max_cloud_pct <= 100:
            raise CatalogError(f"max_cloud_pct {self.max_cloud_pct} must be within 0-100")

    @classmethod
    def from_geometries(
        cls,
        footprints: Iterable[tuple[str, BaseGeometry]],
        collections: Sequence[str],
        start: datetime,
        end: datetime,
        max_cloud_pct: float | None = None,
    ) -> SearchRequest:
        """Build a request from ``(key, geometry)`` pairs."""
        return cls(
            footprints=tuple(Footprint(k, g) for k, g in footprints),
            collections=tuple(collections),
            start=start,
            end=end,
            max_cloud_pct=max_cloud_pct,
        )


@dataclass(frozen=True)
class SearchStats:
    """What a search cost.

    Attributes:
        n_footprints: Footprints in the request.
        n_groups: Groups the footprints were batched into (MGRS tiles, clusters, ...).
        n_requests: Requests sent to the server, retries included.
        n_retries: Of those, requests that repeated a failed one.
        n_pages: Result pages read.
        n_items: Items received (before removing duplicates).
        n_scenes: Distinct scenes returned.
        seconds: Wall-clock time of the search.
        n_invalid: Items received that could not be parsed (skipped, each logged).
    """

    n_footprints: int
    n_groups: int
    n_requests: int
    n_retries: int = 0
    n_pages: int = 0
    n_items: int = 0
    n_scenes: int = 0
    seconds: float = 0.0
    n_invalid: int = 0


@dataclass(frozen=True)
class SearchResult:
    """Scenes found by a search (distinct, in a deterministic order) and what it cost."""

    scenes: tuple[SceneRef, ...]
    stats: SearchStats

    def by_collection(self, collection: str) -> tuple[SceneRef, ...]:
        """The scenes of one canonical collection."""
        return tuple(s for s in self.scenes if s.collection == collection)


@runtime_checkable
class Catalog(Protocol):
    """A searchable source of scenes (STAC API, stac-geoparquet snapshot, Earth Engine, ...).

    Implementations own their transport (retries, paging, batching) and must return every
    scene whose footprint intersects at least one request footprint, within the time window,
    each scene once. Constructors do no network work; the first request happens in ``search``.
    """

    @property
    def provider(self) -> str:
        """Name of the provider profile whose vocabulary the scenes use."""
        ...

    def search(self, request: SearchRequest, *, progress: bool = False) -> SearchResult:
        """Find the scenes for ``request``.

        Args:
            request: Footprints, canonical collections, time window and cloud limit.
            progress: Show a progress bar over the batched requests.

        Returns:
            The distinct scenes and the search statistics.

        Raises:
            CatalogError: the catalog cannot answer (bad answer, unknown collection, ...).
        """
        ...


# --- pixel reads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipRead:
    """Bands of one scene on one chip grid.

    Attributes:
        data: ``[C, H, W]`` float32 physical values (reflectance), NaN where there is no data.
        invalid: ``[H, W]`` True where any band has no data.
        grid: The chip grid the values lie on.
        bands: Band names, in ``data`` order.
        seconds: Wall time of the read.
    """

    data: npt.NDArray[np.float32]
    invalid: npt.NDArray[np.bool_]
    grid: ChipGrid
    bands: tuple[str, ...]
    seconds: float = 0.0


def band_refs(assets: Mapping[str, AssetRef], bands: Sequence[str]) -> list[AssetRef]:
    """The assets of ``bands``, in order.

    Raises:
        ReadError: a band the scene has no asset for (the message lists those it has).
    """
    refs = []
    for band in bands:
        if band not in assets:
            have = ", ".join(assets) or "none"
            raise ReadError(f"the scene has no asset for band {band} (it has {have})")
        refs.append(assets[band])
    return refs


def physical_chip(
    data: npt.NDArray[np.float32],
    refs: Sequence[AssetRef],
    grid: ChipGrid,
    bands: Sequence[str],
    started: float,
) -> ChipRead:
    """The :class:`ChipRead` of stored values ``data`` [C, H, W].

    Each band's scale and offset is applied in place; ``seconds`` is the time since
    ``started`` (a ``time.perf_counter`` reading).
    """
    for i, ref in enumerate(refs):
        if ref.scale != 1.0 or ref.offset != 0.0:
            data[i] = data[i] * np.float32(ref.scale) + np.float32(ref.offset)
    invalid = np.asarray(~np.isfinite(data).all(axis=0), dtype=bool)
    return ChipRead(
        data=data,
        invalid=invalid,
        grid=grid,
        bands=tuple(bands),
        seconds=time.perf_counter() - started,
    )


class Reader(Protocol):
    """Reads bands of one scene onto a chip grid."""

    def read(
        self,
        assets: Mapping[str, AssetRef],
        bands: Sequence[str],
        grid: ChipGrid,
        resampling: ResamplingName = "nearest",
    ) -> ChipRead:
        """Physical values of ``bands`` (looked up in ``assets``) on ``grid``.

        Raises:
            AssetReadError: a file is missing, corrupt or truncated (the message names it).
            ReadError: a transient error outlived the retries.
        """
        ...

    def read_raw(self, asset: AssetRef, grid: ChipGrid) -> npt.NDArray[np.float32]:
        """Stored values of a category band (e.g. SCL) on ``grid``, nearest neighbour, no scale.

        Nodata comes back as NaN.
        """
        ...

    def close(self) -> None:
        """Release what the reader holds (open files, threads); a later read starts afresh."""
        ...
