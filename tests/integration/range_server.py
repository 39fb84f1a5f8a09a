"""A loopback HTTP file server with byte ranges, recording every request it gets.

GDAL reads COGs over HTTP (``/vsicurl/``) with ``Range`` requests, which Python's
``http.server`` does not answer. :class:`RangeFileServer` serves the files under one folder on
127.0.0.1 with ``HEAD`` and ``GET``, a single ``bytes=`` range per request (206 with
``Content-Range``; a range list is answered with the whole file, as RFC 9110 allows), and keeps
a log of the requests so a test can tell whether anything was asked of it at all.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request the server got: method, path and the ``Range`` header (or None)."""

    method: str
    path: str
    range: str | None


class RangeFileServer:
    """Serves ``root``'s files at ``http://127.0.0.1:PORT/<relative path>`` (see module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append(Request(self.command, self.path, rng))
                path = server.root / unquote(urlsplit(self.path).path).lstrip("/")
                try:
                    path = path.resolve(strict=True)
                    path.relative_to(server.root)
                    data = path.read_bytes() if path.is_file() else None
                except (OSError, ValueError):
                    data = None
                if data is None:
                    self._reply(404, b"not found", body)
                    return
                m = _RANGE.match(rng or "")
                if m is None or not (m.group(1) or m.group(2)):
                    self._reply(200, data, body)
                    return
                size = len(data)
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # a suffix range: the last N bytes
                    start, end = max(size - int(m.group(2)), 0), size - 1
                if start >= size or end < start:
                    self._reply(416, b"", body, {"Content-Range": f"bytes */{size}"})
                    return
                headers = {"Content-Range": f"bytes {start}-{end}/{size}"}
                self._reply(206, data[start : end + 1], body, headers)

            def _reply(
                self, status: int, data: bytes, body: bool, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url_of(self, path: str | Path) -> str:
        """The URL of a file under the root."""
        return f"{self.url}/{Path(path).resolve().relative_to(self.root).as_posix()}"

    def seen(self) -> list[Request]:
        """The requests so far."""
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        """Forget the requests so far."""
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RangeFileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
