"""The one HTTP transport of the STAC API backend: retries, timeouts, counts, one-line errors.

:class:`HarvestStacIO` (a pystac-client ``StacApiIO``) owns all HTTP of a search: a
``requests`` session with a bounded urllib3 retry (408, 429 and 5xx answers, connection drops
and read timeouts; jittered exponential backoff; ``Retry-After`` honoured up to a cap; POST
searches included, which pystac-client does not retry by default), connect/read timeouts set
by one :class:`HttpRetryPolicy`, request counting, and the translation of every failure into a
one-line :class:`~harvest.errors.CatalogError` that names the URL.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pystac
import requests
from pystac_client.stac_api_io import StacApiIO
from requests import Request
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from harvest.backends.stac_api.http import (
    DEFAULT_TIMEOUT_S,
    RETRY_STATUSES,
    failure_reason,
    one_line,
)
from harvest.errors import CatalogError

logger = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class HttpRetryPolicy:
    """How hard the transport tries before giving up.

    Attributes:
        total: Retries allowed per request (all causes together); the request is sent at most
            ``total + 1`` times.
        backoff_s: Base of the exponential backoff: the k-th retry waits
            ``backoff_s * 2**(k-1)`` plus a uniform jitter of up to ``jitter_s``.
        backoff_max_s: Cap of one backoff wait.
        jitter_s: Upper bound of the random jitter added to every wait, so that many clients
            rejected together do not come back together.
        retry_after_max_s: Cap on a server's ``Retry-After`` (a server asking for an hour
            would otherwise stall the run).
        connect_timeout_s: Timeout to open a connection.
        read_timeout_s: Timeout between bytes of an answer (a slow page is retried after it).
        timeout_retries: Retries of a request after a connect or read timeout. Timeouts have
            their own small budget: with ``total`` alone, a server that accepts connections
            and never answers held a search for 7 x 60 s. The defaults give up on it after
            2 x 20 s (plus a backoff of about a second).
    """

    total: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter_s: float = 0.5
    retry_after_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = DEFAULT_TIMEOUT_S
    timeout_retries: int = 1

    @classmethod
    def with_timeout(cls, timeout_s: float | None) -> HttpRetryPolicy:
        """The default policy, waiting ``timeout_s`` for an answer (None: the defaults).

        The connect timeout is ``timeout_s`` too, at most 10 s.
        """
        if timeout_s is None:
            return cls()
        return cls(connect_timeout_s=min(10.0, timeout_s), read_timeout_s=timeout_s)

    def __post_init__(self) -> None:
        if self.total < 0:
            raise CatalogError(f"retry total {self.total} must be >= 0")
        for name in ("backoff_s", "backoff_max_s", "jitter_s", "retry_after_max_s"):
            if getattr(self, name) < 0:
                raise CatalogError(f"retry {name} must be >= 0")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise CatalogError("timeouts must be > 0 seconds")
        if self.timeout_retries < 0:
            raise CatalogError(f"timeout_retries {self.timeout_retries} must be >= 0")


class _Counter:
    """Mutable tallies shared by the transport and every copy of its Retry object."""

    __slots__ = ("pages", "requests", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.pages = 0


class _CountingRetry(Retry):
    """urllib3 Retry that counts retries and adds jitter from the very first one."""

    def __init__(
        self,
        *args: Any,
        counter: _Counter | None = None,
        timeout_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.counter = counter if counter is not None else _Counter()
        self.timeout_retries = timeout_retries

    def new(self, **kw: Any) -> _CountingRetry:
        fresh = super().new(**kw)
        fresh.counter = self.counter
        fresh.timeout_retries = self.timeout_retries
        return fresh

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _CountingRetry:
        if self.timeout_retries is not None and isinstance(error, Urllib3Timeout):
            # A connect or read timeout: a server that does not answer is not worth
            # ``total`` more full-length waits.
            timeouts = sum(1 for h in self.history if isinstance(h.error, Urllib3Timeout))
            if timeouts >= self.timeout_retries:
                raise MaxRetryError(_pool, url or "", error)
        args = (method, url, response, error, _pool, _stacktrace)
        fresh = super().increment(*args)  # raises MaxRetryError when exhausted
        self.counter.retries += 1
        logger.info("retrying a STAC API request (%d so far)", self.counter.retries)
        return fresh

    def get_backoff_time(self) -> float:
        # urllib3 waits 0 s before the first retry; a rate-limited server deserves a pause.
        n = len(self.history)
        if n == 0:
            return 0.0
        wait = self.backoff_factor * (2 ** (n - 1)) + random.random() * self.backoff_jitter
        return float(min(self.backoff_max, wait))


class HarvestStacIO(StacApiIO):
    """pystac-client transport: retries, timeouts, request counting and one-line errors.

    Args:
        policy: Retry and timeout settings.
        headers: Extra HTTP headers sent with every request (e.g. a subscription key).
    """

    def __init__(
        self, policy: HttpRetryPolicy | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.policy = policy or HttpRetryPolicy()
        self.counter = _Counter()
        p = self.policy
        retry = _CountingRetry(
            total=p.total,
            connect=None,
            read=None,
            status=None,
            other=None,
            redirect=5,
            allowed_methods=None,  # POST /search is idempotent: retry it too
            status_forcelist=RETRY_STATUSES,
            backoff_factor=p.backoff_s,
            backoff_max=p.backoff_max_s,
            backoff_jitter=p.jitter_s,
            retry_after_max=p.retry_after_max_s,
            respect_retry_after_header=True,
            raise_on_status=True,
            counter=self.counter,
            timeout_retries=p.timeout_retries,
        )
        super().__init__(
            headers=dict(headers or {}),
            timeout=(p.connect_timeout_s, p.read_timeout_s),
            max_retries=retry,
        )

    def update(
        self,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
        request_modifier: Callable[[Request], Request | None] | None = None,
        timeout: Any = None,
    ) -> None:
        """pystac-client's hook; keeps the policy's timeouts when it passes none.

        ``Client.open`` calls this with ``timeout=None``, which would otherwise switch the
        timeouts off and let a stalled server hang the search forever.
        """
        p = self.policy
        super().update(
            headers=headers,
            parameters=parameters,
            request_modifier=request_modifier,
            timeout=timeout if timeout is not None else (p.connect_timeout_s, p.read_timeout_s),
        )

    def reset_counts(self) -> None:
        """Zero the request, retry and page tallies."""
        self.counter.requests = 0
        self.counter.retries = 0
        self.counter.pages = 0

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        """Send one request (retried per the policy) and return the body as text.

        Raises:
            CatalogError: retries exhausted, connection impossible, or a final HTTP error.
        """
        method = (method or "GET").upper()
        if method in _BODY_METHODS:
            req = Request(method=method, url=href, headers=headers, json=parameters)
        else:
            req = Request(method=method, url=href, headers=headers, params=dict(parameters or {}))
        prepped = self.session.prepare_request(req)
        settings = self.session.merge_environment_settings(
            prepped.url or href, proxies={}, stream=None, verify=True, cert=None
        )
        self.counter.requests += 1
        tries = self.policy.total
        try:
            resp = self.session.send(prepped, timeout=self.timeout, **settings)
        except requests.exceptions.RequestException as exc:
            reason = failure_reason(exc)
            if reason == "timed out":
                p = self.policy
                raise CatalogError(
                    f"STAC API {href} did not answer within {p.read_timeout_s:g} s "
                    f"({p.timeout_retries + 1} tries): check the URL and the network, try "
                    "again later, or give it more time with --timeout SECONDS"
                ) from None
            raise CatalogError(
                f"STAC API {href} gave no usable answer after {tries} retries "
                f"({reason}): check the URL and the network, or try again later"
            ) from None
        if not 200 <= resp.status_code < 300:
            detail = one_line(resp.text or resp.reason or "", 200)
            raise CatalogError(
                f"STAC API {href} answered HTTP {resp.status_code} to {method}: {detail}; "
                "check the catalog URL, the collection ids of the provider profile and the search"
            )
        try:
            return resp.content.decode("utf-8")
        except UnicodeDecodeError:
            raise CatalogError(
                f"STAC API {href} answered bytes that are not UTF-8 text: is it a STAC API URL?"
            ) from None

    def read_json(self, source: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Read and decode a JSON object; anything else is a CatalogError naming the URL."""
        text = self.read_text(source, *args, **kwargs)
        href = source.href if isinstance(source, pystac.Link) else str(source)
        try:
            data = json.loads(text)
        except ValueError:
            raise CatalogError(
                f"STAC API {href} answered something that is not JSON "
                f"({one_line(text, 60)!r}): check that the catalog URL is a STAC API"
            ) from None
        if not isinstance(data, dict):
            raise CatalogError(
                f"STAC API {href} answered a JSON {type(data).__name__}, not an object: "
                "check that the catalog URL is a STAC API"
            )
        return data

    def get_pages(
        self,
        url: str,
        method: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield every page of a search, following ``next`` links to the end.

        Raises:
            CatalogError: a page is not an ItemCollection, or the server loops on one page.
        """
        source: Any = url
        seen_links: set[str] = set()
        page_kwargs: dict[str, Any] = {"method": method, "parameters": parameters}
        while True:
            page = self.read_json(source, **page_kwargs)
            features = page.get("features")
            if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
                raise CatalogError(
                    f"STAC API {url} answered a search page without a 'features' list of items: "
                    "check that the catalog URL is a STAC API"
                )
            self.counter.pages += 1
            if not features:
                return
            yield page
            links = page.get("links") or []
            nxt = next(
                (ln for ln in links if isinstance(ln, dict) and ln.get("rel") == "next"), None
            )
            if nxt is None:
                return
            signature = json.dumps(nxt, sort_keys=True, default=str)
            if signature in seen_links:
                raise CatalogError(
                    f"STAC API {url} sent the same 'next' page link twice: its paging is "
                    "broken; report it to the catalog's operator"
                )
            seen_links.add(signature)
            source = pystac.Link.from_dict(nxt)
            page_kwargs = {"parameters": parameters}
