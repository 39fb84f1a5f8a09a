"""Which catalog backend a ``--catalog`` value names (no network I/O happens here).

A provider name from ``configs/providers``, an http(s) STAC API URL, a stac-geoparquet file or
folder, or a demo world folder; stages ask here and never name a backend themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harvest.catalog.base import Catalog
from harvest.errors import ConfigError

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
        spec: A provider name from ``configs/providers`` (``planetary-computer``,
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
    from harvest.catalog.profiles import known_profiles, load_profile
    from harvest.catalog.stac_api import RetryPolicy, StacApiCatalog, planetary_computer_signer
    from harvest.catalog.stac_parquet import StacParquetCatalog

    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"--timeout {timeout_s} must be > 0 seconds")
    policy = RetryPolicy.with_timeout(timeout_s)

    def parquet(source: Path, prof_name: str) -> OpenedCatalog:
        prof = load_profile(prof_name)
        sign = planetary_computer_signer() if prof.sign_hrefs else None
        folder = source / "stac-geoparquet" if is_demo_world(source) else source
        cat = StacParquetCatalog(folder, prof, sign=sign)
        return OpenedCatalog(cat, spec, "stac-geoparquet", str(folder))

    if spec in known_profiles():
        prof = load_profile(profile or spec)
        if prof.kind == "earth-engine":
            from harvest.catalog.earthengine import EarthEngineCatalog

            if timeout_s is None:
                ee = EarthEngineCatalog(prof, project=ee_project)
            else:
                ee = EarthEngineCatalog(prof, project=ee_project, deadline_s=timeout_s)
            return OpenedCatalog(ee, spec, "earth-engine", ee_project or "(default project)")
        if prof.kind == "stac-api":
            assert prof.stac_api_url is not None  # the profile model guarantees it
            sign = planetary_computer_signer() if prof.sign_hrefs else None
            api = StacApiCatalog(prof.stac_api_url, prof, sign=sign, policy=policy)
            return OpenedCatalog(api, spec, "stac-api", prof.stac_api_url)
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
        prof = load_profile(profile)
        sign = planetary_computer_signer() if prof.sign_hrefs else None
        api = StacApiCatalog(spec, prof, sign=sign, policy=policy)
        return OpenedCatalog(api, spec, "stac-api", spec)
    path = Path(spec)
    if path.exists():
        default = "demo" if path.is_dir() and is_demo_world(path) else "planetary-computer"
        return parquet(path, profile or default)
    known = ", ".join(known_profiles())
    raise ConfigError(
        f"--catalog {spec!r} is neither a provider ({known}), an http(s) STAC API URL, nor an "
        "existing stac-geoparquet file or folder"
    )


def signer_for(provider: str, timeout_s: float | None = None) -> Callable[[str], str] | None:
    """The href signer a provider's assets need right before each read (None: none).

    Planetary Computer's blob hrefs need a SAS token; every other provider's are read as
    they are. ``timeout_s``: how long the token endpoint may take to answer.
    """
    from harvest.catalog.profiles import known_profiles, load_profile

    if provider not in known_profiles() or not load_profile(provider).sign_hrefs:
        return None
    from harvest.catalog.stac_api import planetary_computer_signer

    return planetary_computer_signer(timeout_s)
