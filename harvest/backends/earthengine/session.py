"""The Earth Engine session: the only harvest module that imports ``ee`` (and google.auth).

Credentials come from the standard environment only: a service account key named by
``GOOGLE_APPLICATION_CREDENTIALS`` or application default credentials, both found by
``google.auth.default()``. Nothing here reads the environment for the project: the caller (the
CLI, with :func:`harvest.backends.registry.default_ee_project`) passes it. Initialisation is
lazy: the catalog and the reader initialise the library on their first request, once per
process and settings. Transient errors (429 Too Many Requests, 5xx) are retried by the
earthengine-api client itself with exponential backoff (``ee.data.setMaxRetries``): that is the
one retry policy of this transport. The project-wide request limits are named constants here.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

from harvest.errors import CatalogError

EE_MAX_CONCURRENT_REQUESTS = 40
"""Default per-project quota of concurrent interactive requests (standard and high-volume)."""

EE_DEFAULT_MAX_RETRIES = 5
"""The client's own default number of retries of 429/5xx answers."""

EE_DEFAULT_DEADLINE_S = 20.0
"""Seconds one Earth Engine request may take (``--timeout``); the client's default has none, so
an endpoint that accepts the connection and never answers held the search for ever."""

EE_HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
"""Endpoint meant for many small automated requests (pass as ``opt_url``)."""

EE_SCOPES = (
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
)
"""OAuth scopes asked of application default credentials."""


def import_ee() -> ModuleType:
    """The ``ee`` module (the Earth Engine backend's modules get it here, never by import).

    Raises:
        CatalogError: earthengine-api is not installed.
    """
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
        ee = import_ee()
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
    ee = import_ee()
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
    return bool(import_ee().data.is_initialized())
