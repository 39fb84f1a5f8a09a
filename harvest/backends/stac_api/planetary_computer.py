"""Planetary Computer href signing: SAS tokens fetched with timeouts and a bounded retry.

Hrefs stay unsigned in every table; a signer is applied right before a read (the GDAL
reader's ``sign``) or by a catalog's ``sign_href``. Tokens expire after about 45 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
import requests.adapters
from urllib3.util.retry import Retry

from harvest.backends.base import Signer
from harvest.backends.stac_api.http import DEFAULT_TIMEOUT_S, RETRY_STATUSES, failure_reason
from harvest.errors import ReadError


@dataclass(frozen=True)
class PlanetaryComputerSigner:
    """Signs Azure Blob hrefs with Planetary Computer SAS tokens; picklable, no I/O at creation.

    ``planetary_computer.sign`` fetches a missing token with no timeout (a token endpoint
    that accepted the connection and never answered held a read for ever) and lets the
    network error through as an OSError. This signer fetches the token itself, with the
    package's settings (``PC_SDK_SAS_URL``, ``PC_SDK_SUBSCRIPTION_KEY``), timeouts and a
    bounded retry, puts it in the package's token cache and lets the package sign.

    Attributes:
        timeout_s: Seconds to wait for the token endpoint's answer (connect: at most 10 s).
        retries: Retries of 429/5xx answers, dropped connections and timeouts.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 2

    def __call__(self, href: str) -> str:
        """``href`` signed when it is an Azure Blob URL, else unchanged.

        Raises:
            ReadError: no token could be had (one line naming the token URL).
        """
        import planetary_computer
        from planetary_computer import sas

        parsed = urlparse(href.rstrip("/"))
        if parsed.netloc.endswith(sas.BLOB_STORAGE_DOMAIN):
            account, container = sas.parse_blob_url(parsed)
            self._ensure_token(sas, account, container)
        return str(planetary_computer.sign(href))

    def _ensure_token(self, sas: Any, account: str, container: str) -> None:
        from planetary_computer.settings import Settings

        settings = Settings.get()
        url = f"{settings.sas_url}/{account}/{container}"
        # The package keeps its tokens in this module-level cache and reuses them until a
        # minute before expiry; filling it is how its own get_token works.
        token = sas.TOKEN_CACHE.get(url)
        if token is not None and token.ttl() >= 60:
            return
        headers = {}
        if settings.subscription_key:
            headers["Ocp-Apim-Subscription-Key"] = settings.subscription_key
        session = requests.Session()
        retry = Retry(
            total=self.retries,
            backoff_factor=0.5,
            status_forcelist=RETRY_STATUSES,
            raise_on_status=True,
        )
        adapter = requests.adapters.HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session:
                resp = session.get(
                    url, headers=headers, timeout=(min(10.0, self.timeout_s), self.timeout_s)
                )
                resp.raise_for_status()
                sas.TOKEN_CACHE[url] = sas.SASToken(**resp.json())
        except (requests.exceptions.RequestException, ValueError, TypeError) as exc:
            reason = (
                failure_reason(exc)
                if isinstance(exc, requests.exceptions.RequestException)
                else "the answer is not a SAS token"
            )
            raise ReadError(
                f"cannot get a Planetary Computer SAS token from {url} ({reason}): check the "
                "network, PC_SDK_SAS_URL and PC_SDK_SUBSCRIPTION_KEY, then run the same "
                "command again"
            ) from None


def planetary_computer_signer(timeout_s: float | None = None) -> Signer:
    """A :class:`PlanetaryComputerSigner` (no I/O here; ``timeout_s`` None: the default)."""
    if timeout_s is None:
        return PlanetaryComputerSigner()
    return PlanetaryComputerSigner(timeout_s=timeout_s)
