"""HTTP pieces of the STAC API backend that need no pystac-client (requests and urllib3 only).

Shared by the search transport (:mod:`harvest.backends.stac_api.transport`) and the Planetary
Computer token fetch (:mod:`harvest.backends.stac_api.planetary_computer`), so that signing an
href in a fetch worker does not load pystac-client.
"""

from __future__ import annotations

from typing import Any

import requests

DEFAULT_TIMEOUT_S = 20.0
"""Seconds to wait for a STAC API's answer (``--timeout``); an unanswering server fails after
two such waits."""

RETRY_STATUSES: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
"""HTTP answers that may change on a later try; every other 4xx is final."""


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters (server answers go into messages)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def failure_reason(exc: requests.exceptions.RequestException) -> str:
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
