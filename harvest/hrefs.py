"""Which asset hrefs the fetch stage may open: the href policy.

The catalog decides what harvest reads: every asset href of a scene is opened by GDAL (or by the
Earth Engine reader). A catalog the user keeps on their own disk (a stac-geoparquet file or
folder, a demo world) is theirs: its hrefs are read as they are, local paths included. A remote
catalog (a STAC API, Earth Engine) is not: an item it serves could name ``/home/me/.ssh/x``, a
``file://`` URL or ``http://127.0.0.1:8080/admin.tif`` of a service on the user's machine or
network (a local-file read or a server-side request forgery). So for a remote catalog an href is
read only when it is one of:

* an ``http://`` or ``https://`` URL whose host is public: not loopback, link-local, private,
  unspecified, multicast or reserved (IPv4, IPv6, and IPv4 inside IPv6). A literal IP is checked
  as it is; a name is resolved and refused if any of its addresses is not public. A name that
  does not resolve is let through (the read fails anyway; offline test machines resolve no real
  host), except ``localhost`` and its variants (``*.localhost``, ``ip6-localhost``, ...), which
  are refused without asking DNS. Userinfo (``user@host``), odd host characters and whitespace
  are refused, so harvest and curl cannot disagree about which host a URL names;
* an ``s3://``, ``gs://`` or ``az://`` URL (bucket and key; the endpoint and the credentials are
  the user's GDAL settings, not the catalog's);
* one of GDAL's network file systems with such a target: ``/vsicurl/`` and
  ``/vsicurl_streaming/`` followed by an http(s) URL (checked as above), ``/vsis3/`` and
  ``/vsis3_streaming/`` (as ``s3://``), ``/vsigs/`` and ``/vsigs_streaming/`` (as ``gs://``),
  ``/vsiaz/`` and ``/vsiaz_streaming/`` (as ``az://``). Every other ``/vsi`` prefix reads a
  local file or wraps another file (``/vsimem/``, ``/vsizip/``, ``/vsigzip/``, ``/vsitar/``,
  ``/vsisubfile/``, ``/vsicrypt/``, ``/vsistdin/``, ``/vsicurl?`` with options, ...) and is
  refused;
* a host on the user's allow-list (``--allow-host HOST`` or ``HOST:PORT``, also
  ``$HARVEST_ALLOW_HOSTS``): the host is compared as written (case-insensitive; IP literals by
  value), without a port any port matches;
* an ``ee://`` asset, from the Earth Engine provider only (Earth Engine's own images).

Local paths, ``file://`` and other schemes (``ftp://``, ``zip+https://``, GDAL connection strings
such as ``WMS:`` or ``vrt://``) are refused from a remote catalog. VRTs are not followed: an
href ending in ``.vrt`` is refused, and :data:`REMOTE_RASTER_DRIVERS` is the only set of GDAL
drivers the reader may open a remote catalog's file with (a VRT in disguise does not open), with
:data:`REMOTE_GDAL_OPTIONS` set as well.

What is not covered: an allowed public host that redirects to a private one (GDAL follows
redirects), and a name that resolves to a public address here and a private one when GDAL asks
again (DNS rebinding). The check runs before the read, in the process that reads.

The module decides with plain functions; the one piece of I/O, name resolution, is a parameter
(:func:`resolve_host` by default, cached per process).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from harvest.errors import ConfigError, HrefRefusedError

CatalogKind = Literal["stac-api", "stac-geoparquet", "earth-engine"]
CATALOG_KINDS: tuple[str, ...] = ("stac-api", "stac-geoparquet", "earth-engine")
"""Kinds of catalog (:attr:`harvest.backends.registry.OpenedCatalog.kind`)."""
REMOTE_KINDS: frozenset[str] = frozenset({"stac-api", "earth-engine"})
"""Kinds whose hrefs are restricted (the others are files on the user's disk)."""

ALLOW_HOSTS_ENV = "HARVEST_ALLOW_HOSTS"
"""Environment variable with more allowed hosts, comma separated (read by the CLI only)."""

REMOTE_RASTER_DRIVERS: tuple[str, ...] = ("GTiff", "JP2OpenJPEG")
"""GDAL drivers a remote catalog's files are opened with: COGs (GTiff) and JPEG 2000. Not VRT,
GTI or WMS, whose files name other files or services."""

REMOTE_GDAL_OPTIONS: dict[str, str] = {
    # A VRT raw band reads any local file as pixels; VRTs are refused anyway, this is the
    # second lock on that door.
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
}
"""GDAL settings added to the reads of a remote catalog's files."""

# GDAL network file systems and the URL scheme each one stands for.
VSI_NETWORK_PREFIXES: dict[str, str] = {
    "vsicurl": "http",
    "vsicurl_streaming": "http",
    "vsis3": "s3",
    "vsis3_streaming": "s3",
    "vsigs": "gs",
    "vsigs_streaming": "gs",
    "vsiaz": "az",
    "vsiaz_streaming": "az",
}
_HTTP_SCHEMES = ("http", "https")
_BUCKET_SCHEMES = ("s3", "gs", "az")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOCALHOST_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6"}
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_VSI = re.compile(r"^/(vsi[A-Za-z0-9_]*)/(.*)$", re.DOTALL)
# A host as harvest and curl read it alike: a name of letters, digits, dots, dashes and
# underscores, or an IPv6 literal in brackets; then an optional port.
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?)\]|(?P<name>[A-Za-z0-9._-]+))"
    r"(?::(?P<port>\d{1,5}))?$"
)
_BARE_V6 = re.compile(r"^[0-9A-Fa-f:.]+$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], tuple[str, ...]]


@dataclass(frozen=True)
class AllowedHost:
    """One allow-list entry.

    Attributes:
        host: Lower-case name or IP literal (IPv6 without brackets).
        port: Only this port, or None for any port.
    """

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def matches(self, host: str, port: int | None) -> bool:
        """Whether a URL's (lower-case) host and effective port fall under this entry."""
        if self.port is not None and port != self.port:
            return False
        if host == self.host:
            return True
        mine, theirs = _ip(self.host), _ip(host)
        return mine is not None and mine == theirs


def parse_allowed_host(entry: str) -> AllowedHost:
    """``HOST``, ``HOST:PORT``, ``[IPV6]``, ``[IPV6]:PORT`` or a bare IPv6 as an entry.

    Raises:
        ConfigError: the text is not a host with an optional port (one line, with an example).
    """
    text = entry.strip()
    if _BARE_V6.match(text) and text.count(":") >= 2 and _ip(text) is not None:
        return AllowedHost(text.lower())
    m = _HOST_PORT.match(text)
    port = int(m.group("port")) if m and m.group("port") else None
    if m is None or (port is not None and not 1 <= port <= 65535):
        raise ConfigError(
            f"allowed host {entry!r} is not HOST or HOST:PORT (e.g. 127.0.0.1:8080, "
            "[::1]:8080 or data.example.com): fix --allow-host or $" + ALLOW_HOSTS_ENV
        )
    host = (m.group("v6") or m.group("name")).lower().rstrip(".")
    return AllowedHost(host, port)


def parse_allowed_hosts(entries: Iterable[str]) -> tuple[AllowedHost, ...]:
    """Allow-list entries from option values, each of which may hold several, comma separated.

    Empty entries are skipped; repeated ones kept once.

    Raises:
        ConfigError: an entry is not a host with an optional port.
    """
    out: dict[AllowedHost, None] = {}
    for value in entries:
        for part in value.split(","):
            if part.strip():
                out[parse_allowed_host(part)] = None
    return tuple(out)


@dataclass(frozen=True)
class HrefPolicy:
    """What hrefs of one pairs table may be read (see the module docstring).

    The default (everything) is that of a local catalog.

    Attributes:
        local: Local paths, ``file://``, any ``/vsi`` prefix and any host may be read (the
            catalog is on the user's disk).
        earth_engine: ``ee://`` assets may be read.
        allow_hosts: Hosts read even when they are loopback, private or link-local.
    """

    local: bool = True
    earth_engine: bool = True
    allow_hosts: tuple[AllowedHost, ...] = ()

    @classmethod
    def for_catalog(cls, kind: str, allow_hosts: Iterable[str | AllowedHost] = ()) -> HrefPolicy:
        """The policy of a catalog of ``kind`` (``stac-api``, ``stac-geoparquet``, ...).

        Raises:
            ConfigError: an unknown kind, or an allow-list entry that is not a host.
        """
        if kind not in CATALOG_KINDS:
            raise ConfigError(
                f"catalog kind {kind!r} is not one of {', '.join(CATALOG_KINDS)}; "
                "search the catalog again with 'harvest search'"
            )
        hosts = tuple(
            h if isinstance(h, AllowedHost) else parse_allowed_host(h) for h in allow_hosts
        )
        return cls(
            local=kind not in REMOTE_KINDS,
            earth_engine=kind != "stac-api",
            allow_hosts=hosts,
        )

    @property
    def raster_drivers(self) -> tuple[str, ...] | None:
        """GDAL drivers the reader may open files with (None: any)."""
        return None if self.local else REMOTE_RASTER_DRIVERS

    @property
    def gdal_options(self) -> dict[str, str]:
        """GDAL settings to add to the reads (none for a local catalog)."""
        return {} if self.local else dict(REMOTE_GDAL_OPTIONS)

    def refusal(self, href: str, resolve: Resolver | None = None) -> str | None:
        """Why ``href`` may not be read, or None.

        One line: why, what to do where something can be done, then the href (last, so that
        a shortened line still says why).

        Args:
            href: The asset href as the catalog gave it (unsigned).
            resolve: Name -> addresses (default :func:`resolve_host`; tests pass their own).
        """
        if self.local:
            return None
        why = _remote_refusal(href, self, resolve or resolve_host)
        if why is None:
            return None
        return f"refused a remote catalog's href ({why}): {href}"

    def check(self, href: str, resolve: Resolver | None = None) -> None:
        """Raise when ``href`` may not be read.

        Raises:
            HrefRefusedError: naming the href, why, and how to allow it where that is possible.
        """
        why = self.refusal(href, resolve)
        if why is not None:
            raise HrefRefusedError(why)

    def check_all(self, hrefs: Iterable[str], resolve: Resolver | None = None) -> None:
        """:meth:`check` for each href, in order (the first refused one raises)."""
        if self.local:
            return
        for href in dict.fromkeys(hrefs):
            self.check(href, resolve)


LOCAL_POLICY = HrefPolicy()
"""The policy of a local catalog (and of fetch jobs a caller builds itself): read everything."""


def infer_catalog_kind(catalog: str, provider: str = "") -> str:
    """The kind of catalog a pairs table written before kinds were recorded came from.

    An http(s) URL is a STAC API; a provider name is its profile's kind (``demo`` is a local
    world); anything else is a local stac-geoparquet file or folder.
    """
    text = catalog.strip()
    if text.lower().startswith(("http://", "https://")):
        return "stac-api"
    from harvest.backends.profiles import known_profiles, load_profile

    if text in known_profiles():
        kind = load_profile(text).kind
        return "stac-geoparquet" if kind == "local" else kind
    if not text and provider in known_profiles():
        kind = load_profile(provider).kind
        return "stac-geoparquet" if kind == "local" else kind
    return "stac-geoparquet"


@lru_cache(maxsize=4096)
def resolve_host(name: str) -> tuple[str, ...]:
    """Addresses of ``name`` (empty when it does not resolve); cached per process."""
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))


# --- decisions ---------------------------------------------------------------------------------

_ALLOW_HINT = "if you trust it, pass --allow-host {host} to 'harvest fetch' or add it to ${env}"
_LOCAL_HINT = "only a local catalog, a stac-geoparquet file or folder, may name local files"


def _remote_refusal(href: str, policy: HrefPolicy, resolve: Resolver) -> str | None:
    if not href or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in href):
        return "the href is empty or holds whitespace or control characters"
    if href.startswith("/vsi"):
        m = _VSI.match(href)
        prefix = m.group(1).lower() if m else ""
        scheme = VSI_NETWORK_PREFIXES.get(prefix)
        if m is None or scheme is None:
            shown = f"/{prefix}/" if m else href.split("?")[0][:20]
            return (
                f"GDAL's {shown} reads local files or wraps another file; from a remote catalog "
                "only /vsicurl/, /vsis3/, /vsigs/ and /vsiaz/ (and their _streaming forms) with "
                "a URL target are read"
            )
        target = m.group(2)
        if scheme == "http":
            if _scheme_of(target) not in _HTTP_SCHEMES:
                return f"/{prefix}/ must be followed by an http(s) URL"
            return _url_refusal(target, policy, resolve)
        return _bucket_refusal(f"{scheme}://{target}", scheme)
    scheme = _scheme_of(href)
    if scheme is None or (len(scheme) == 1 and href[1:3] in (":\\", ":/")):
        return f"it is a local path; {_LOCAL_HINT}"
    if scheme == "file":
        return f"it is a file:// URL; {_LOCAL_HINT}"
    if scheme == "ee":
        if policy.earth_engine:
            return None
        return "ee:// assets are read only from the earth-engine provider"
    if scheme in _HTTP_SCHEMES:
        return _url_refusal(href, policy, resolve)
    if scheme in _BUCKET_SCHEMES:
        return _bucket_refusal(href, scheme)
    return (
        f"its scheme {scheme!r} is not one harvest reads from a remote catalog "
        "(http, https, s3, gs, az)"
    )


def _scheme_of(href: str) -> str | None:
    m = _SCHEME.match(href)
    return m.group(1).lower() if m else None


def _is_vrt(path: str) -> bool:
    return path.lower().rstrip("/").endswith(".vrt")


_VRT_WHY = "it is a GDAL VRT, which may name local files; a remote catalog's VRTs are not followed"


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _bucket_refusal(url: str, scheme: str) -> str | None:
    parts = _split(url)
    if parts is None:
        return "it is not a valid URL"
    if not parts.netloc or not parts.path.strip("/"):
        return f"a {scheme}:// URL needs a bucket and a key ({scheme}://BUCKET/KEY)"
    if "@" in parts.netloc or _HOST_PORT.match(parts.netloc) is None:
        return f"the bucket {parts.netloc!r} is not a plain bucket name"
    if _is_vrt(parts.path):
        return _VRT_WHY
    return None


def _url_refusal(url: str, policy: HrefPolicy, resolve: Resolver) -> str | None:
    parts = _split(url)
    if parts is None:
        return "it is not a valid URL"
    scheme = parts.scheme.lower()
    m = _HOST_PORT.match(parts.netloc)
    if m is None or "@" in parts.netloc or int(m.group("port") or 0) > 65535:
        return f"its host part {parts.netloc!r} is not a plain HOST or HOST:PORT"
    if _is_vrt(parts.path):
        return _VRT_WHY
    host = (m.group("v6") or m.group("name")).lower().rstrip(".")
    port = int(m.group("port")) if m.group("port") else _DEFAULT_PORTS[scheme]
    if any(entry.matches(host, port) for entry in policy.allow_hosts):
        return None
    shown = f"[{host}]" if ":" in host else host
    wanted = f"{shown}:{m.group('port')}" if m.group("port") else shown
    hint = _ALLOW_HINT.format(host=wanted, env=ALLOW_HOSTS_ENV)
    if host in _LOCALHOST_NAMES or host.endswith(".localhost"):
        return f"host {shown} is this machine (loopback); {hint}"
    literal = _ip(host)
    addresses: Sequence[IpAddress]
    if literal is not None:
        addresses = [literal]
    else:
        addresses = [ip for a in resolve(host) if (ip := _ip(a)) is not None]
    for ip in addresses:
        what = non_public_kind(ip)
        if what is not None:
            if literal is None:
                return f"host {shown} resolves to {ip}, {what}; {hint}"
            return f"host {shown} is {what}; {hint}"
    return None


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def non_public_kind(ip: IpAddress) -> str | None:
    """What makes ``ip`` non-public (e.g. ``a loopback address``), or None for a public one.

    IPv4 addresses inside IPv6 (mapped ``::ffff:a.b.c.d``, 6to4, Teredo) are judged by the IPv4
    address they carry.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            kind = non_public_kind(inner)
            if kind is not None:
                return kind
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    )
    for attr, kind in checks:
        if getattr(ip, attr):
            return kind
    if not ip.is_global:
        return "not a public address"
    return None
