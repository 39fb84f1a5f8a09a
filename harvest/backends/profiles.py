"""Provider profiles: one provider's names and rules, mapped onto harvest's vocabulary.

A profile (``harvest/data/providers/NAME.yaml``) says, for each canonical collection
(``sentinel-2-l2a``, ``naip``, ``sentinel-1-grd``, ``venus-l2a``), which collection id the provider
uses, which asset key (or Earth Engine band) holds each canonical band, how stored numbers become
physical values (scale/offset, including the Sentinel-2 processing-baseline 04.00 offset) and
where cloud information lives. :func:`parse_item` uses a profile to turn one STAC item into a
:class:`~harvest.backends.base.SceneRef`.

Scale and offset (``physical = DN * scale + offset``), resolved per asset in this order:

1. ``from_item``: the item's ``raster:bands`` scale/offset when present (Earth Search v1 publishes
   them, already accounting for the baseline offset);
2. otherwise the profile's ``scale``/``offset``, plus ``baseline_offset.offset_dn * scale`` when the
   scene's processing baseline is at least ``baseline_offset.min_baseline`` (Sentinel-2 L2A from
   baseline 04.00 stores reflectance + 1000 DN). A scene whose baseline is unknown gets the offset
   when it was acquired on or after ``baseline_offset.assume_from`` (products generated since then
   all use baseline >= 04.00); earlier scenes of unknown baseline get none.

Nodata and data type, per asset: the band entry's ``nodata``/``dtype`` when the profile sets
them (``nodata: none`` says every stored value is data, as in MAJA's masks where 0 means clear),
else the item's ``raster:bands``, else the collection's ``radiometry``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import shapely
import shapely.geometry
from pydantic import Field, model_validator
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry

from harvest.backends.base import AssetMap, AssetRef, SceneRef
from harvest.config import StrictModel, load_model
from harvest.errors import CatalogError, ConfigError

PROVIDER_DIR = Path(__file__).resolve().parent.parent / "data" / "providers"
"""Folder of the shipped provider profiles (package data: a wheel install has them too)."""

CANONICAL_COLLECTIONS = ("sentinel-2-l2a", "naip", "sentinel-1-grd", "venus-l2a")
"""Collection names recipes may use."""

_BASELINE_RE = re.compile(r"^(\d{1,2})\.(\d{1,2})$")
_PRODUCT_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})_")
_MGRS_RE = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})$")
_MGRS_IN_ID_RE = re.compile(r"(?:^S2[A-D]_|_T)(\d{1,2}[C-HJ-NP-X][A-HJ-NP-Z]{2})_")


class BandMapping(StrictModel):
    """Where a canonical band lives at this provider."""

    asset: str = Field(description="Asset key (STAC) or band name (Earth Engine).")
    band_index: int = Field(default=1, ge=1, description="1-based band inside the asset file.")
    required: bool = Field(default=True, description="An item without it is rejected.")
    raw: bool = Field(
        default=False,
        description="A class or mask band (SCL): values are used as stored (scale 1, offset 0).",
    )
    nodata: float | Literal["none"] | None = Field(
        default=None,
        description=(
            "This band's stored nodata value, overriding the item's raster:bands and the "
            "collection's; 'none': every stored value is data (a MAJA mask, where 0 means "
            "clear). Unset (or null): the item's, else the collection's."
        ),
    )
    dtype: str | None = Field(
        default=None,
        description="This band's stored data type, overriding the item's and the collection's.",
    )


class BaselineOffset(StrictModel):
    """The Sentinel-2 L2A offset introduced with processing baseline 04.00."""

    min_baseline: str = Field(default="04.00", pattern=r"^\d{2}\.\d{2}$")
    offset_dn: float = Field(default=-1000.0, description="Added to DN before scaling.")
    assume_from: date | None = Field(
        default=date(2022, 1, 25),
        description="Scenes of unknown baseline acquired on or after this day get the offset.",
    )


class Radiometry(StrictModel):
    """How stored numbers become physical values: ``DN * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    dtype: str | None = None
    from_item: bool = Field(
        default=False, description="Prefer scale/offset published in the item's raster:bands."
    )
    baseline_offset: BaselineOffset | None = None


class CloudInfo(StrictModel):
    """Where cloud information lives for a collection."""

    cover_property: str | None = Field(
        default=None, description="Item property with the scene cloud cover in percent."
    )
    mask_band: str | None = Field(
        default=None, description="Canonical band holding a classification mask (SCL)."
    )
    score_collection: str | None = Field(
        default=None, description="Collection with a per-pixel cloud score (Cloud Score+)."
    )
    score_band: str | None = Field(default=None, description="Band of score_collection.")

    @model_validator(mode="after")
    def _score_pairs(self) -> CloudInfo:
        if (self.score_collection is None) != (self.score_band is None):
            raise ValueError("give score_collection and score_band together")
        return self


class CollectionProfile(StrictModel):
    """One provider collection mapped onto a canonical collection."""

    canonical: str
    id: str = Field(description="The provider's collection id.")
    legacy: bool = Field(
        default=False,
        description="Parsed when met, but not searched unless asked (an older collection).",
    )
    bands: dict[str, BandMapping] = Field(min_length=1)
    radiometry: Radiometry = Radiometry()
    cloud: CloudInfo = CloudInfo()

    @model_validator(mode="after")
    def _check(self) -> CollectionProfile:
        if self.canonical not in CANONICAL_COLLECTIONS:
            known = ", ".join(CANONICAL_COLLECTIONS)
            raise ValueError(f"canonical collection '{self.canonical}' is not one of {known}")
        mask = self.cloud.mask_band
        if mask is not None and mask not in self.bands:
            raise ValueError(f"cloud.mask_band {mask} of {self.id} is not in its bands")
        return self


class PropertyKeys(StrictModel):
    """Item property names to read each field from, first present wins."""

    cloud_cover: tuple[str, ...] = ("eo:cloud_cover",)
    platform: tuple[str, ...] = ("platform",)
    epsg: tuple[str, ...] = ("proj:epsg", "proj:code")
    processing_baseline: tuple[str, ...] = ("s2:processing_baseline",)
    product_id: tuple[str, ...] = ("s2:product_uri", "sentinel:product_id")
    # The viewing angle: off-nadir, else the zenith angle at the ground (VENuS items publish
    # view:incidence_angle, the SEN2VENuS index's venus_zenith_angle).
    off_nadir: tuple[str, ...] = ("view:off_nadir", "view:incidence_angle")
    sun_azimuth: tuple[str, ...] = ("view:sun_azimuth", "s2:mean_solar_azimuth")
    sun_elevation: tuple[str, ...] = ("view:sun_elevation",)
    sun_zenith: tuple[str, ...] = ("s2:mean_solar_zenith",)
    mgrs_tile: tuple[str, ...] = ("s2:mgrs_tile",)
    mgrs_prefixes: tuple[str, ...] = Field(
        default=("mgrs:", "sentinel:"),
        description="Prefixes of utm_zone / latitude_band / grid_square property triples.",
    )
    gsd: tuple[str, ...] = ("gsd",)


class ProviderProfile(StrictModel):
    """A provider: its endpoint and how its collections map onto harvest's vocabulary."""

    name: str
    description: str = ""
    kind: Literal["stac-api", "earth-engine", "local"]
    stac_api_url: str | None = Field(default=None, pattern=r"^https?://")
    local_catalog: str | None = Field(
        default=None, description="Local catalog ('demo' is the demo world's own catalog)."
    )
    sign_hrefs: bool = Field(
        default=False, description="Hrefs need a signed token right before each read."
    )
    collections: tuple[CollectionProfile, ...] = Field(min_length=1)
    properties: PropertyKeys = PropertyKeys()

    @model_validator(mode="after")
    def _check(self) -> ProviderProfile:
        if self.kind == "stac-api" and not self.stac_api_url:
            raise ValueError("a stac-api provider needs stac_api_url")
        if self.kind != "stac-api" and self.stac_api_url:
            raise ValueError(f"a {self.kind} provider takes no stac_api_url")
        if self.kind == "local" and not self.local_catalog:
            raise ValueError("a local provider needs local_catalog")
        ids = [c.id for c in self.collections]
        if len(set(ids)) != len(ids):
            raise ValueError("collection ids must be unique")
        primary = [c.canonical for c in self.collections if not c.legacy]
        if len(set(primary)) != len(primary):
            raise ValueError("each canonical collection may have one non-legacy entry")
        return self

    def collection(self, canonical: str) -> CollectionProfile:
        """The entry searched for a canonical collection.

        Raises:
            CatalogError: the provider does not publish it (the message lists what it has).
        """
        for entry in self.collections:
            if entry.canonical == canonical and not entry.legacy:
                return entry
        have = ", ".join(sorted({c.canonical for c in self.collections if not c.legacy}))
        raise CatalogError(
            f"provider {self.name} has no collection '{canonical}': it has {have}; "
            "pick another --catalog for this recipe"
        )

    def collection_for_id(self, provider_id: str) -> CollectionProfile:
        """The entry of a provider collection id (legacy ones included).

        Raises:
            CatalogError: the id is not in the profile.
        """
        for entry in self.collections:
            if entry.id == provider_id:
                return entry
        have = ", ".join(c.id for c in self.collections)
        raise CatalogError(
            f"collection id '{provider_id}' is not in provider profile {self.name} ({have}): "
            "add it to the profile or search another catalog"
        )


def known_profiles() -> tuple[str, ...]:
    """Names of the shipped provider profiles."""
    return tuple(sorted(p.stem for p in PROVIDER_DIR.glob("*.yaml")))


def load_profile(name_or_path: str | Path) -> ProviderProfile:
    """Load a provider profile by name (``harvest/data/providers/NAME.yaml``) or YAML path.

    Raises:
        ConfigError: unknown name (the message lists the known ones) or invalid file.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return load_model(ProviderProfile, candidate)
    path = PROVIDER_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(known_profiles())
        raise ConfigError(f"unknown provider '{name_or_path}': use one of {known} or a YAML path")
    return load_model(ProviderProfile, path)


# --- parsing STAC items -------------------------------------------------------------------------


def normalize_baseline(value: Any) -> str | None:
    """``'4.0'``, ``'04.00'``, ``'N0400'`` or ``4.0`` -> ``'04.00'``; None if unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"N?\d{4}", text):
        digits = text.lstrip("N")
        return f"{digits[:2]}.{digits[2:]}"
    if isinstance(value, float):
        text = f"{value:.2f}"
    m = _BASELINE_RE.match(text)
    if not m:
        return None
    return f"{int(m.group(1)):02d}.{int(m.group(2)):02d}"


def baseline_at_least(baseline: str, minimum: str) -> bool:
    """Compare two ``NN.NN`` baselines numerically."""

    def as_tuple(b: str) -> tuple[int, int]:
        major, minor = b.split(".")
        return int(major), int(minor)

    return as_tuple(baseline) >= as_tuple(minimum)


def _first(props: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = props.get(key)
        if value is not None:
            return value
    return None


def _parse_datetime(item_id: str, props: Mapping[str, Any]) -> datetime:
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise CatalogError(f"item {item_id} has no datetime (nor start_datetime) property")
    text = str(raw).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python's parser takes at most 6 fractional digits; some servers write 9.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CatalogError(f"item {item_id} has an unreadable datetime {raw!r}") from None
    if when.tzinfo is None:
        raise CatalogError(f"item {item_id} has a datetime without time zone: {raw!r}")
    return when


def _parse_epsg(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(?:EPSG:)?(\d+)", str(value).strip(), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def _utm_zone_of_epsg(epsg: int | None) -> int | None:
    if epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        return epsg % 100
    return None


def _parse_mgrs(
    item_id: str, props: Mapping[str, Any], keys: PropertyKeys, epsg: int | None, product: str
) -> str | None:
    tile = _first(props, keys.mgrs_tile)
    if tile is None:
        for prefix in keys.mgrs_prefixes:
            band = props.get(f"{prefix}latitude_band")
            square = props.get(f"{prefix}grid_square")
            zone = props.get(f"{prefix}utm_zone") or _utm_zone_of_epsg(epsg)
            if band and square and zone:
                tile = f"{int(zone)}{band}{square}"
                break
    if tile is None:
        for text in (product, item_id):
            m = _MGRS_IN_ID_RE.search(text)
            if m:
                tile = m.group(1)
                break
    if tile is None:
        return None
    m = _MGRS_RE.match(str(tile).upper().removeprefix("T"))
    if not m:
        return None
    return f"{int(m.group(1)):02d}{m.group(2)}{m.group(3)}"


def _unsigned(href: str) -> str:
    """Drop a SAS token so tables keep the stable href (tokens expire in about 45 min)."""
    if "?" not in href:  # fast path: bulk parsing meets hundreds of thousands of hrefs
        return href
    parts = urlsplit(href)
    if parts.hostname and parts.hostname.endswith(".blob.core.windows.net") and parts.query:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return href


def scale_offset(
    rad: Radiometry,
    raster_band: Mapping[str, Any] | None,
    baseline: str | None,
    acquired: datetime,
) -> tuple[float, float]:
    """Scale and offset turning a band's DN into reflectance (or its physical unit).

    Values the item publishes (``raster:bands``) win when the profile trusts them; otherwise the
    profile's constants apply, plus the L2A baseline offset where the processing baseline (or,
    when unknown, the acquisition date) says the provider left it in the DN.
    """
    if rad.from_item and raster_band and ("scale" in raster_band or "offset" in raster_band):
        return float(raster_band.get("scale", 1.0)), float(raster_band.get("offset", 0.0))
    scale, offset = rad.scale, rad.offset
    rule = rad.baseline_offset
    if rule is not None:
        if baseline is not None:
            shifted = baseline_at_least(baseline, rule.min_baseline)
        else:
            shifted = rule.assume_from is not None and acquired.date() >= rule.assume_from
        if shifted:
            offset += rule.offset_dn * scale
    return scale, offset


def _band_nodata(
    mapping: BandMapping, raster_band: Mapping[str, Any] | None, rad: Radiometry
) -> float | None:
    """A band's nodata: the profile's band entry, else the item's, else the collection's."""
    if mapping.nodata == "none":
        return None
    if mapping.nodata is not None:
        return float(mapping.nodata)
    nodata = raster_band.get("nodata") if raster_band else None
    return float(nodata) if nodata is not None else rad.nodata


def _band_dtype(
    mapping: BandMapping, raster_band: Mapping[str, Any] | None, rad: Radiometry
) -> str | None:
    """A band's stored data type, in the order of :func:`_band_nodata`."""
    if mapping.dtype is not None:
        return mapping.dtype
    dtype = raster_band.get("data_type") if raster_band else None
    return str(dtype) if dtype is not None else rad.dtype


def parse_item(
    item: Mapping[str, Any],
    profile: ProviderProfile,
    *,
    bands: Sequence[str] | None = None,
) -> SceneRef:
    """Turn one STAC item (a dict, as the API returns it) into a :class:`SceneRef`.

    Args:
        item: The item as a JSON dict (``geometry`` may also be a shapely geometry).
        profile: The provider profile whose vocabulary the item uses.
        bands: Canonical bands that must be present; default: the profile's required bands.
            Other mapped bands are included when the item has them.

    Raises:
        CatalogError: the item lacks an id, datetime, geometry or a required asset, or belongs
            to a collection the profile does not know; the message names the item.
    """
    item_id = item.get("id")
    if not item_id or not isinstance(item_id, str):
        raise CatalogError("a catalog item has no id: the catalog answered something not STAC")
    collection_id = item.get("collection")
    if not collection_id:
        raise CatalogError(f"item {item_id} has no collection field")
    entry = profile.collection_for_id(str(collection_id))
    props: Mapping[str, Any] = item.get("properties") or {}
    keys = profile.properties

    when = _parse_datetime(item_id, props)
    geojson = item.get("geometry")
    if not geojson:
        raise CatalogError(f"item {item_id} has no geometry: it cannot be paired")
    try:
        # Columnar readers (stac-geoparquet) hand over shapely geometries already decoded.
        geometry = geojson if isinstance(geojson, BaseGeometry) else shapely.geometry.shape(geojson)
    except (AttributeError, KeyError, TypeError, ValueError, GEOSException):
        raise CatalogError(f"item {item_id} has an unreadable geometry") from None
    if geometry.is_empty:
        raise CatalogError(f"item {item_id} has an empty geometry: it cannot be paired")
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)

    epsg = _parse_epsg(_first(props, keys.epsg))
    product = str(_first(props, keys.product_id) or "")
    baseline = normalize_baseline(_first(props, keys.processing_baseline))
    if baseline is None:
        m = _PRODUCT_BASELINE_RE.search(product)
        baseline = f"{m.group(1)}.{m.group(2)}" if m else None

    required = (
        set(bands)
        if bands is not None
        else {name for name, mapping in entry.bands.items() if mapping.required}
    )
    unknown = required - set(entry.bands)
    if unknown:
        raise CatalogError(
            f"bands {', '.join(sorted(unknown))} are not mapped for {entry.id} in provider "
            f"profile {profile.name}: add them to its bands"
        )
    raw_assets: Mapping[str, Any] = item.get("assets") or {}
    assets: dict[str, AssetRef] = {}
    asset_gsds: list[float] = []
    rad = entry.radiometry
    for band, mapping in entry.bands.items():
        asset = raw_assets.get(mapping.asset)
        if not asset or not asset.get("href"):
            if band in required:
                raise CatalogError(
                    f"item {item_id} lacks asset '{mapping.asset}' (band {band}) "
                    f"required by profile {profile.name}"
                )
            continue
        raster_bands = asset.get("raster:bands") or []
        raster_band = (
            raster_bands[mapping.band_index - 1]
            if len(raster_bands) >= mapping.band_index
            else None
        )
        if mapping.raw:
            scale, offset = 1.0, 0.0
        else:
            scale, offset = scale_offset(rad, raster_band, baseline, when)
        assets[band] = AssetRef(
            href=_unsigned(str(asset["href"])),
            band_index=mapping.band_index,
            scale=scale,
            offset=offset,
            nodata=_band_nodata(mapping, raster_band, rad),
            dtype=_band_dtype(mapping, raster_band, rad),
        )
        if asset.get("gsd") is not None:
            asset_gsds.append(float(asset["gsd"]))
        if epsg is None:
            epsg = _parse_epsg(asset.get("proj:epsg") or asset.get("proj:code"))

    cloud_keys = (entry.cloud.cover_property,) if entry.cloud.cover_property else ()
    cloud = _first(props, cloud_keys + keys.cloud_cover)
    elevation = _first(props, keys.sun_elevation)
    if elevation is None:
        zenith = _first(props, keys.sun_zenith)
        elevation = None if zenith is None else 90.0 - float(zenith)
    gsd = _first(props, keys.gsd)
    if gsd is None and asset_gsds:
        gsd = min(asset_gsds)
    platform = _first(props, keys.platform)
    off_nadir = _first(props, keys.off_nadir)
    azimuth = _first(props, keys.sun_azimuth)
    try:
        return SceneRef(
            item_id=item_id,
            collection=entry.canonical,
            provider=profile.name,
            datetime=when,
            geometry=geometry,
            assets=AssetMap(assets),
            cloud_cover_pct=None if cloud is None else float(cloud),
            platform=None if platform is None else str(platform).lower(),
            epsg=epsg,
            processing_baseline=baseline,
            view_off_nadir_deg=None if off_nadir is None else float(off_nadir),
            sun_azimuth_deg=None if azimuth is None else float(azimuth),
            sun_elevation_deg=None if elevation is None else float(elevation),
            mgrs_tile=_parse_mgrs(item_id, props, keys, epsg, product),
            gsd_m=None if gsd is None else float(gsd),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"item {item_id} has an unreadable property: {exc}") from None


def cover_property(profile: ProviderProfile, entry: CollectionProfile) -> str | None:
    """The item property holding a collection's scene cloud cover, as :func:`parse_item` reads it.

    The collection's own ``cloud.cover_property`` first, else the profile's first cloud key;
    None when neither is set.
    """
    if entry.cloud.cover_property:
        return entry.cloud.cover_property
    keys = profile.properties.cloud_cover
    return keys[0] if keys else None
