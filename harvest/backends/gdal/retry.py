"""The GDAL reader's one retry policy: bounded backoff of transient read errors.

GDAL retries 429/5xx answers itself first (``GDAL_HTTP_MAX_RETRY`` in
:mod:`harvest.backends.gdal.options`); what still fails comes here. Transient errors
(timeouts, 5xx, resets) are retried with bounded exponential backoff and a deterministic jitter
by :func:`with_retries`; anything else (a missing, corrupt or truncated file) raises
:class:`~harvest.errors.AssetReadError` naming the file.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from harvest.errors import AssetReadError, ReadError

T = TypeVar("T")

_TRANSIENT_MARKERS = (
    "timed out",
    "timeout was reached",
    "connection reset",
    "connection refused",
    "connection was reset",
    "temporarily unavailable",
    "couldn't connect",
    "could not connect",
    "too many requests",
)
# GDAL's curl layer reports e.g. "HTTP response code: 503".
_TRANSIENT_HTTP = re.compile(r"http (?:response )?(?:code|status|error)[: ]*(?:5\d\d|429|408)")


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away on retry (timeouts, 5xx, 429, connection resets).

    GDAL reports network failures as text inside ``RasterioIOError`` / ``CPLE_*`` errors, so
    the decision reads the message; Python's own timeouts and connection errors count too. A
    corrupt, truncated or missing file is never transient.
    """
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    return any(m in text for m in _TRANSIENT_MARKERS) or bool(_TRANSIENT_HTTP.search(text))


@dataclass(frozen=True)
class ReadRetryPolicy:
    """Bounded exponential backoff with deterministic jitter.

    Attributes:
        attempts: Total tries (1: no retry).
        base_s: Wait before the first retry.
        max_s: Longest single wait.
        jitter: Fraction of each wait that is jitter (spread derived from the href and try, so
            runs are reproducible yet workers do not retry in lockstep).
    """

    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.5

    def wait_s(self, attempt: int, key: str = "") -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        wait = min(self.base_s * 2.0**attempt, self.max_s)
        digest = hashlib.sha256(f"{key}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        return wait * (1.0 - self.jitter + self.jitter * u)


def with_retries(
    fn: Callable[[], T],
    href: str,
    policy: ReadRetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; retry transient errors per ``policy``; turn the rest into AssetReadError.

    Raises:
        AssetReadError: a non-transient error (missing, corrupt, truncated file), naming ``href``.
        ReadError: a transient error that outlived every retry.
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except (AssetReadError, ReadError):
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise AssetReadError(href, _one_line(exc)) from exc
            if attempt + 1 >= policy.attempts:
                raise ReadError(
                    f"cannot read {href}: {_one_line(exc)} (still failing after "
                    f"{policy.attempts} tries; run again later to retry)"
                ) from exc
            sleep(policy.wait_s(attempt, href))
    raise AssertionError("unreachable")  # pragma: no cover


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]
