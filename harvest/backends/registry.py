"""Which backend serves a ``--catalog`` value, and which reader an href needs (no I/O here).

Catalogs are chosen by spec (:func:`open_catalog`): a provider name (a shipped provider profile),
an http(s) STAC API URL, a stac-geoparquet file or folder, or a demo world folder. Readers are
chosen by href scheme (:func:`reader_for`): ``ee://`` hrefs go to the Earth Engine reader, every
other href (local paths, http(s), ``/vsi*``) to the GDAL reader, both built from one frozen
:class:`ReaderSettings`. Stages ask here and never name a backend themselves; backend modules
are imported only when a backend is built, so importing this module stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.backends.base import AssetRef, Catalog, Reader, Signer
from harvest.backends.earthengine.assets import EE_HREF_SCHEME
from harvest.backends.gdal.options import gdal_env_options, gdal_timeout_options
from harvest.errors import ConfigError

if TYPE_CHECKING:
    from harvest.backends.profiles import ProviderProfile

DEMO_WORLD_ENV = "HARVEST_DEMO_WORLD"
"""Environment variable naming the demo world folder ``--catalog demo`` searches (read by the
CLI only)."""


def is_demo_world(path: Path) -> bool:
    """Whether a folder holds a demo world (``truth.json`` and ``stac-geoparquet/``)."""
    return (path / "truth.json").is_file() and (path / "stac-geoparquet").is_dir()


@dataclass(frozen=True)
class OpenedCatalog:
    """A catalog chosen from a ``--catalog`` value.

    Attributes:
        catalog: The backend.
        name: The ``--catalog`` value as given.
        kind: ``stac-api``, ``stac-geoparquet`` or ``earth-engine``.
        location: URL, folder or file searched (or the Earth Engine project).
    """

    catalog: Catalog
    name: str
    kind: str
    location: str


def open_catalog(
    spec: str,
    *,
    profile: str | None = None,
    ee_project: str | None = None,
    demo_world: str | Path | None = None,
    timeout_s: float | None = None,
) -> OpenedCatalog:
    """Build the backend a ``--catalog`` value names. No network I/O happens here.

    Args:
        spec: A provider profile name (``planetary-computer``,
            ``earth-search``, ``earth-engine``, ``demo``), an http(s) STAC API URL, a
            stac-geoparquet file or folder, or a demo world folder.
        profile: Provider profile (vocabulary) of a URL or a local snapshot; default: the
            provider whose URL it is, else ``planetary-computer`` (``demo`` for a demo world).
        ee_project: Google Cloud project for Earth Engine (None: that of the credentials).
        demo_world: Demo world folder searched by ``demo`` (the CLI passes
            ``$HARVEST_DEMO_WORLD``).
        timeout_s: Seconds to wait for one answer of a STAC API or Earth Engine (None: the
            backends' defaults: a STAC API that does not answer fails after 2 x 20 s).

    Raises:
        ConfigError: unknown provider name, or ``demo`` without a world folder.
        CatalogError: the local source is not stac-geoparquet.
    """
    # Each backend's client library is imported only when that backend is built.
    from harvest.backends.profiles import known_profiles, load_profile
    from harvest.backends.stac_api.planetary_computer import planetary_computer_signer

    _check_timeout(timeout_s)

    def stac_api(url: str, prof: ProviderProfile) -> OpenedCatalog:
        from harvest.backends.stac_api.catalog import StacApiCatalog
        from harvest.backends.stac_api.transport import HttpRetryPolicy

        sign = planetary_computer_signer() if prof.sign_hrefs else None
        policy = HttpRetryPolicy.with_timeout(timeout_s)
        return OpenedCatalog(
            StacApiCatalog(url, prof, sign=sign, policy=policy), spec, "stac-api", url
        )

    def parquet(source: Path, prof_name: str) -> OpenedCatalog:
        from harvest.backends.stac_parquet.catalog import StacParquetCatalog

        prof = load_profile(prof_name)
        sign = planetary_computer_signer() if prof.sign_hrefs else None
        folder = source / "stac-geoparquet" if is_demo_world(source) else source
        cat = StacParquetCatalog(folder, prof, sign=sign)
        return OpenedCatalog(cat, spec, "stac-geoparquet", str(folder))

    if spec in known_profiles():
        prof = load_profile(profile or spec)
        if prof.kind == "earth-engine":
            from harvest.backends.earthengine.search import EarthEngineCatalog

            if timeout_s is None:
                ee = EarthEngineCatalog(prof, project=ee_project)
            else:
                ee = EarthEngineCatalog(prof, project=ee_project, deadline_s=timeout_s)
            return OpenedCatalog(ee, spec, "earth-engine", ee_project or "(default project)")
        if prof.kind == "stac-api":
            assert prof.stac_api_url is not None  # the profile model guarantees it
            return stac_api(prof.stac_api_url, prof)
        if demo_world is None or not str(demo_world).strip():
            raise ConfigError(
                f"--catalog {spec} needs a demo world: set {DEMO_WORLD_ENV} to its folder or "
                "pass the folder as --catalog (build one with 'harvest demo world DIR')"
            )
        world = Path(demo_world)
        if not is_demo_world(world):
            raise ConfigError(
                f"{DEMO_WORLD_ENV}={world} is not a demo world folder (no truth.json and "
                "stac-geoparquet/): build one with 'harvest demo world DIR'"
            )
        return parquet(world, prof.name)
    if spec.startswith(("http://", "https://")):
        if profile is None:
            url = spec.rstrip("/")
            matches = [
                name
                for name in known_profiles()
                if (load_profile(name).stac_api_url or "").rstrip("/") == url
            ]
            profile = matches[0] if matches else "planetary-computer"
        return stac_api(spec, load_profile(profile))
    path = Path(spec)
    if path.exists():
        default = "demo" if path.is_dir() and is_demo_world(path) else "planetary-computer"
        return parquet(path, profile or default)
    known = ", ".join(known_profiles())
    raise ConfigError(
        f"--catalog {spec!r} is neither a provider ({known}), an http(s) STAC API URL, nor an "
        "existing stac-geoparquet file or folder"
    )


def signer_for(provider: str, timeout_s: float | None = None) -> Signer | None:
    """The href signer a provider's assets need right before each read (None: none).

    Planetary Computer's blob hrefs need a SAS token; every other provider's are read as
    they are. ``timeout_s``: how long the token endpoint may take to answer.
    """
    from harvest.backends.profiles import known_profiles, load_profile

    if provider not in known_profiles() or not load_profile(provider).sign_hrefs:
        return None
    from harvest.backends.stac_api.planetary_computer import planetary_computer_signer

    return planetary_computer_signer(timeout_s)


def default_ee_project(environ: Mapping[str, str]) -> str | None:
    """The Earth Engine project named by ``EE_PROJECT`` or else ``GOOGLE_CLOUD_PROJECT``.

    Takes the environment as an argument so that only the CLI reads ``os.environ``.
    """
    for key in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return None


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"--timeout {timeout_s} must be > 0 seconds")


# --- readers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderSettings:
    """How this process's readers are built; picklable (the fetch stage sends it to workers).

    Attributes:
        gdal_options: GDAL configuration of the GDAL reader (default:
            :func:`~harvest.backends.gdal.options.gdal_env_options`); copied, never shared.
        sign: Href signer the GDAL reader applies right before each open (None: hrefs are read
            as they are).
        drivers: The only GDAL drivers files may be opened with (None: any). The fetch stage
            sets :data:`harvest.hrefs.REMOTE_RASTER_DRIVERS` for a remote catalog.
        gdal_threads: Files of one scene the GDAL reader reads at once when they are remote.
        ee_project: Google Cloud project billed for Earth Engine reads; None: the project this
            process initialised Earth Engine with, else that of the credentials.
        ee_url: Earth Engine endpoint (e.g. the high-volume one); None: the default.
        ee_deadline_s: Seconds one Earth Engine request may take; None: the reader's default
            (:data:`~harvest.backends.earthengine.session.EE_DEFAULT_DEADLINE_S`).
        ee_concurrency: computePixels requests in flight per process; None: the reader's
            default (:data:`~harvest.backends.earthengine.reader.DEFAULT_PIXEL_CONCURRENCY`).
    """

    gdal_options: Mapping[str, Any] = field(default_factory=gdal_env_options)
    sign: Signer | None = None
    drivers: tuple[str, ...] | None = None
    gdal_threads: int = 4
    ee_project: str | None = None
    ee_url: str | None = None
    ee_deadline_s: float | None = None
    ee_concurrency: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gdal_options", dict(self.gdal_options))
        if self.drivers is not None:
            object.__setattr__(self, "drivers", tuple(self.drivers))
        if self.gdal_threads < 1:
            raise ConfigError(f"gdal_threads {self.gdal_threads} must be >= 1")
        if self.ee_deadline_s is not None and not self.ee_deadline_s > 0:
            raise ConfigError(f"ee_deadline_s {self.ee_deadline_s} must be > 0 seconds")

    @classmethod
    def with_timeout(
        cls,
        timeout_s: float | None,
        *,
        gdal_options: Mapping[str, Any] | None = None,
        sign: Signer | None = None,
        drivers: tuple[str, ...] | None = None,
        ee_project: str | None = None,
        ee_url: str | None = None,
    ) -> ReaderSettings:
        """Settings whose reads wait ``timeout_s`` seconds for an answer (``--timeout``).

        GDAL's HTTP read timeout (its connect timeout at most 10 s) and the Earth Engine
        deadline; None keeps :data:`~harvest.backends.gdal.options.GDAL_REMOTE_OPTIONS`' and the
        Earth Engine reader's defaults. ``gdal_options`` (None: the defaults) is the base the
        timeouts are applied over.

        Raises:
            ConfigError: ``timeout_s`` is not > 0.
        """
        _check_timeout(timeout_s)
        base = dict(gdal_options) if gdal_options is not None else gdal_env_options()
        return cls(
            gdal_options={**base, **gdal_timeout_options(timeout_s)},
            sign=sign,
            drivers=drivers,
            ee_project=ee_project,
            ee_url=ee_url,
            ee_deadline_s=timeout_s,
        )


def is_earth_engine_href(href: str) -> bool:
    """Whether an href is read through Earth Engine (``ee://COLLECTION/INDEX#BAND``)."""
    return href.startswith(EE_HREF_SCHEME)


# One reader per process and settings: open datasets (GDAL) and the request pool (Earth Engine)
# survive from one chip to the next of a worker.
_READERS: dict[tuple[Any, ...], Reader] = {}
_READERS_LOCK = threading.Lock()


def _signer_key(sign: Signer | None) -> Any:
    # Planetary Computer's signer is a frozen dataclass: equal after a trip to a worker. Other
    # callables (functions, bound methods) count by identity.
    try:
        hash(sign)
    except TypeError:
        return ("id", id(sign))
    return sign


def reader_for(
    assets: Mapping[str, AssetRef] | str, settings: ReaderSettings | None = None
) -> Reader:
    """This process's reader for a scene's assets, or for one href.

    Earth Engine's for ``ee://`` hrefs (when any asset has one), the GDAL reader for every other.
    One reader per process and settings (the Earth Engine reader: per project, endpoint,
    deadline and concurrency), so open datasets and request pools survive from one chip to the
    next. No network I/O happens here.

    Args:
        assets: Canonical band name -> asset (a scene's), or one href.
        settings: How the readers are built (None: :class:`ReaderSettings` defaults).
    """
    s = settings if settings is not None else ReaderSettings()
    hrefs = [assets] if isinstance(assets, str) else [ref.href for ref in assets.values()]
    if any(is_earth_engine_href(h) for h in hrefs):
        key: tuple[Any, ...] = ("ee", s.ee_project, s.ee_url, s.ee_deadline_s, s.ee_concurrency)
    else:
        options = tuple(sorted((str(k), str(v)) for k, v in s.gdal_options.items()))
        key = ("gdal", options, _signer_key(s.sign), s.drivers, s.gdal_threads)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = _READERS[key] = _build_reader(key[0], s)
        return reader


def close_readers() -> None:
    """Close and forget this process's readers (the next :func:`reader_for` builds new ones)."""
    with _READERS_LOCK:
        readers = list(_READERS.values())
        _READERS.clear()
    for reader in readers:
        reader.close()


def warm_readers() -> None:
    """Import the GDAL reader (rasterio, GDAL) now: a worker's first chip is then not slowed."""
    import harvest.backends.gdal.reader  # noqa: F401


def _build_reader(kind: str, s: ReaderSettings) -> Reader:
    if kind == "ee":
        from harvest.backends.earthengine.reader import EarthEngineReader

        ee_kw: dict[str, Any] = {}
        if s.ee_deadline_s is not None:
            ee_kw["deadline_s"] = s.ee_deadline_s
        if s.ee_concurrency is not None:
            ee_kw["max_concurrent"] = s.ee_concurrency
        return EarthEngineReader(project=s.ee_project, opt_url=s.ee_url, **ee_kw)
    from harvest.backends.gdal.reader import RasterioReader

    return RasterioReader(
        sign=s.sign,
        env_options=dict(s.gdal_options),
        drivers=s.drivers,
        threads=s.gdal_threads,
    )
