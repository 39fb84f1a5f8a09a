"""A real STAC API on 127.0.0.1 for the integration tests: stac-fastapi-pgstac over PostgreSQL.

Planetary Computer runs stac-fastapi + pgstac, so this server answers ``filter``, paging and
sorting the way production does. :func:`start_stac_server` creates a throw-away PostgreSQL 15
cluster (owned by the ``postgres`` user: PostgreSQL refuses to run as root), migrates pgstac,
loads collections and items from NDJSON, starts uvicorn from the server's own virtualenv
(``.venv-stac``, made by ``setup_stac_server.sh``) on a free port and waits until ``/search``
answers. :meth:`StacServer.close` stops everything and removes the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_VENV = Path(os.environ.get("HARVEST_STAC_VENV") or REPO_ROOT / ".venv-stac")
SETUP_SCRIPT = Path(__file__).resolve().parent / "setup_stac_server.sh"


class StacServerError(RuntimeError):
    """The test STAC server could not be set up (message says what to run)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(args: Sequence[str]) -> list[str]:
    """Run a command as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


def _run(args: Sequence[str], env: Mapping[str, str] | None = None, what: str = "") -> None:
    proc = subprocess.run(
        list(args), env=dict(env) if env else None, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StacServerError(f"{what or args[0]} failed ({proc.returncode}): {' | '.join(tail)}")


def _write_ndjson(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            count += 1
    return count


@dataclass
class StacServer:
    """A running stac-fastapi-pgstac server and the PostgreSQL cluster behind it.

    Attributes:
        url: Root URL of the STAC API (``http://127.0.0.1:PORT``).
        workdir: Temporary folder holding the cluster, the NDJSON files and the logs.
        pg_port: Port of the PostgreSQL server.
        n_items: Items loaded.
        startup_s: Seconds from start to ready.
    """

    url: str
    workdir: Path
    pg_port: int
    n_items: int
    startup_s: float
    _api: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pgdata: Path | None = field(default=None, repr=False)

    def log_tail(self, n: int = 30) -> str:
        """Last lines of the API server log (for failure messages)."""
        log = self.workdir / "api.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        """Stop uvicorn and PostgreSQL and delete the temporary folder."""
        if self._api is not None and self._api.poll() is None:
            self._api.terminate()
            try:
                self._api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._api.kill()
                self._api.wait(timeout=10)
        self._api = None
        if self._pgdata is not None:
            subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self._pgdata), "-m", "immediate"])
                + ["-w", "stop"],
                capture_output=True,
                check=False,
            )
            self._pgdata = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> StacServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StacServerError(f"uvicorn exited with status {proc.returncode} during start")
        try:
            with urllib.request.urlopen(f"{url}/search?limit=1", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise StacServerError(f"the STAC API at {url} was not ready after {timeout_s:.0f} s")


def start_stac_server(
    collections: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    *,
    venv: Path = DEFAULT_VENV,
    ready_timeout_s: float = 60.0,
) -> StacServer:
    """Start a stac-fastapi-pgstac server on 127.0.0.1 loaded with ``collections`` and ``items``.

    Args:
        collections: STAC collection dicts (every item's collection must be among them).
        items: STAC item dicts.
        venv: Virtualenv holding stac-fastapi-pgstac, pypgstac and uvicorn.
        ready_timeout_s: How long to wait for the API to answer.

    Raises:
        StacServerError: PostgreSQL/PostGIS or the server packages are missing (run
            ``tests/integration/setup_stac_server.sh``), or a step failed.
    """
    started = time.monotonic()
    if not (PG_BIN / "initdb").exists():
        raise StacServerError(f"PostgreSQL 15 is not installed: run {SETUP_SCRIPT}")
    if not Path("/usr/share/postgresql/15/extension/postgis.control").exists():
        raise StacServerError(f"PostGIS for PostgreSQL 15 is not installed: run {SETUP_SCRIPT}")
    for exe in ("pypgstac", "uvicorn"):
        if not (venv / "bin" / exe).exists():
            raise StacServerError(f"{venv}/bin/{exe} is missing: run {SETUP_SCRIPT}")

    workdir = Path(tempfile.mkdtemp(prefix="harvest-stac-"))
    os.chmod(workdir, 0o755)
    pgdata = workdir / "pgdata"
    pgdata.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(pgdata, "postgres", "postgres")
        shutil.chown(workdir, "postgres", "postgres")
    pg_port = free_port()
    server = StacServer(
        url="", workdir=workdir, pg_port=pg_port, n_items=0, startup_s=0.0, _pgdata=None
    )
    try:
        _run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            what="initdb",
        )
        opts = (
            f"-p {pg_port} -k {workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-o",
                    opts,
                    "-l",
                    str(workdir / "pg.log"),
                    "-w",
                    "start",
                ]
            ),
            what="pg_ctl start",
        )
        server._pgdata = pgdata
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(pg_port),
            "PGUSER": "postgres",
            "PGPASSWORD": "postgres",
            "PGDATABASE": "stac",
        }
        _run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres"]
            + ["stac"],
            env=env,
            what="createdb",
        )
        pypgstac = str(venv / "bin" / "pypgstac")
        _run([pypgstac, "migrate"], env=env, what="pypgstac migrate")
        coll_file = workdir / "collections.ndjson"
        item_file = workdir / "items.ndjson"
        _write_ndjson(coll_file, collections)
        server.n_items = _write_ndjson(item_file, items)
        _run(
            [pypgstac, "load", "collections", str(coll_file), "--method", "upsert"],
            env=env,
            what="pypgstac load collections",
        )
        if server.n_items:
            _run(
                [pypgstac, "load", "items", str(item_file), "--method", "upsert"],
                env=env,
                what="pypgstac load items",
            )
        api_port = free_port()
        server.url = f"http://127.0.0.1:{api_port}"
        log = (workdir / "api.log").open("wb")
        server._api = subprocess.Popen(
            [
                str(venv / "bin" / "uvicorn"),
                "stac_fastapi.pgstac.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--log-level",
                "warning",
            ],
            env={**env, "DB_MIN_CONN_SIZE": "1", "DB_MAX_CONN_SIZE": "4"},
            cwd=workdir,  # the settings read a .env file from the working folder
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            _wait_ready(server.url, server._api, ready_timeout_s)
        except StacServerError as exc:
            raise StacServerError(f"{exc}; log: {server.log_tail(10)}") from None
    except BaseException:
        server.close()
        raise
    server.startup_s = time.monotonic() - started
    return server


# --- a loopback proxy that injects faults --------------------------------------------------------

FAULTS = (
    "pass",
    "408",
    "429",
    "500",
    "502",
    "503",
    "504",
    "400",
    "slow",
    "drop",
    "garbage",
    "shape",
)
"""What :class:`FaultProxy` can do with a request: forward it (``pass``), answer an HTTP status,
answer slowly (longer than the client's read timeout), drop the connection, answer a non-JSON
body, or answer JSON of the wrong shape."""


@dataclass
class ProxyRecord:
    """One request seen by the proxy and what it did with it."""

    method: str
    path: str
    body: Any
    action: str


class FaultProxy:
    """A threading HTTP proxy on 127.0.0.1 in front of a STAC API, injecting planned faults.

    Requests whose path starts with ``match_path`` consume the queued faults in order (one
    fault per request); other requests and requests after the queue is empty are forwarded.
    Upstream URLs inside answers are rewritten to the proxy's, so ``next`` links come back
    through it. Every request is recorded in :attr:`log`.
    """

    def __init__(
        self,
        upstream: str,
        *,
        match_path: str = "/search",
        slow_s: float = 1.5,
        retry_after: str | None = None,
    ) -> None:
        import collections
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream.rstrip("/")
        self.match_path = match_path
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.faults: collections.deque[str] = collections.deque()
        self.persistent: str | None = None
        self.log: list[ProxyRecord] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                action = proxy._next_action(self.path)
                with proxy._lock:
                    proxy.log.append(ProxyRecord(self.command, self.path, body, action))
                if action == "pass":
                    action = "forward"
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "slow":
                    time.sleep(proxy.slow_s)
                    action = "503"  # the client has given up on it by now
                if action.isdigit():
                    payload = json.dumps({"code": action, "description": "injected"}).encode()
                    self._reply(int(action), payload, "application/json", retry=True)
                    return
                if action == "garbage":
                    self._reply(200, b"<html><body>Gateway hiccup</body></html>", "text/html")
                    return
                if action == "shape":
                    self._reply(200, b'{"type": "FeatureCollection", "features": 42}', "")
                    return
                status, data, ctype = proxy._forward(self.command, self.path, raw, self.headers)
                self._reply(status, data, ctype)

            def _reply(self, status: int, data: bytes, ctype: str, retry: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry and proxy.retry_after is not None:
                    self.send_header("Retry-After", proxy.retry_after)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._handle()

            def do_POST(self) -> None:  # noqa: N802
                self._handle()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a client that hung up on a slow answer is expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _next_action(self, path: str) -> str:
        with self._lock:
            if not path.startswith(self.match_path):
                return "forward"
            if self.faults:
                return self.faults.popleft()
            return self.persistent or "forward"

    def _forward(self, method: str, path: str, raw: bytes, headers: Any) -> tuple[int, bytes, str]:
        fwd_headers = {"Content-Type": headers.get("Content-Type") or "application/json"}
        req = urllib.request.Request(
            self.upstream + path, data=raw or None, headers=fwd_headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            status, data, ctype = err.code, err.read(), err.headers.get("Content-Type")
        data = data.replace(self.upstream.encode(), self.url.encode())
        return status, data, ctype or "application/json"

    def plan(self, faults: Sequence[str], persistent: str | None = None) -> None:
        """Queue faults for the next matching requests and clear the log."""
        unknown = [f for f in [*faults, *([persistent] if persistent else [])] if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}: use {FAULTS}")
        with self._lock:
            self.faults.clear()
            self.faults.extend(faults)
            self.persistent = persistent
            self.log.clear()

    def searches(self) -> list[ProxyRecord]:
        """Recorded requests to the matched path."""
        with self._lock:
            return [r for r in self.log if r.path.startswith(self.match_path)]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
