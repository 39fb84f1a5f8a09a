"""A loopback Earth Engine REST server for testing the real earthengine-api client offline.

What it serves (the calls earthengine-api 1.7.x makes, measured in ../shared/OFFLINE-TESTING.md):

* ``GET /$discovery/rest?version=v1``: the discovery document shipped in the ee wheel
  (``ee/tests/cloud_api_discovery_document.json``) with ``rootUrl``/``baseUrl`` pointing here;
* ``GET /v1/projects/P/algorithms`` (any version prefix): ``ee/tests/algorithms.json``;
* ``POST /v1/projects/P/value:compute``: ``{"result": ...}``, the documented getInfo answer.

How much of Earth Engine it implements: a tiny interpreter of the expression graph that covers
the functions :mod:`harvest.backends.earthengine.search` sends: collection load, ``filter``
with date range, bounds, ``>``/``not``/``==``/``listContains`` property filters, ``limit``,
``Join.saveFirst`` on equal fields, and ``map`` with a per-image function built from
``Feature``, ``Element.set/get``, ``Element.toDictionary``, ``Image.geometry``,
``Image.bandNames``, ``Image.select``, ``Image.projection``, ``Projection.crs``,
``Projection.nominalScale`` and ``If``. It runs over a small in-test catalog of
:class:`FakeImage`. Any other function makes it answer 400 with the function's name, so a graph
the interpreter does not understand fails the test loudly instead of being answered wrongly.
Geometry predicates use planar lon/lat (shapely); real Earth Engine uses geodesic edges unless
told otherwise, which makes no difference for the small, far-apart footprints of the tests.
Element.set with a null value leaves the property unset, which is how the parser on the other
side must treat it.

Faults: :meth:`EEServer.push_fault` queues HTTP errors answered to the next compute calls (e.g. a
429 the client retries itself); ``memory_limit_images`` answers 400 "User memory limit exceeded."
to any request whose (pre-limit) collection holds more images than that, the way a real server
fails a too-large query every time it is sent.

Every request is recorded (:attr:`EEServer.requests`, bodies decoded), so tests can assert on the
expression graph that went over the wire.

Pixels: ``POST .../image:computePixels`` answers an ``.npy`` structured array (one field per band,
the ``NUMPY_NDARRAY`` answer) for an expression ``Image.load`` + ``Image.select`` (optionally
resampled, ``toFloat``, ``unmask``). Values come from :attr:`EEServer.pixel_value`, a function of
the image, the band and the pixel-centre coordinates computed from the request's ``grid`` (so a
test knows exactly what every pixel of a correctly placed grid holds); pixels where
:attr:`EEServer.pixel_mask` is True are masked (filled with the ``unmask`` value, else 0). The
documented limits are enforced (400 over 48 MB, 32768 px a side or 1024 bands), as is
``pixel_memory_limit_px`` (400 "User memory limit exceeded." for larger requests, every time);
the fault queue applies too. The server counts computePixels calls in flight
(:attr:`EEServer.max_pixels_in_flight`), each held ``pixel_delay_s`` seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ee
import googleapiclient.http
import numpy as np
import numpy.typing as npt
import pytest
import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry

EE_TESTS_DIR = Path(ee.__file__).resolve().parent / "tests"
DISCOVERY_DOCUMENT = EE_TESTS_DIR / "cloud_api_discovery_document.json"
ALGORITHMS = EE_TESTS_DIR / "algorithms.json"


@dataclass(frozen=True)
class FakeImage:
    """One image of the fake catalog.

    Attributes:
        collection: Earth Engine collection id (``COPERNICUS/S2_SR_HARMONIZED``).
        index: ``system:index`` of the image.
        time_start_ms: ``system:time_start`` in milliseconds since the epoch.
        footprint: Image footprint in lon/lat.
        properties: Other image properties (CLOUDY_PIXEL_PERCENTAGE, MGRS_TILE, ...).
        bands: Band names.
        crs: CRS code of every band (``EPSG:32610``).
        scale_m: Nominal scale of every band in metres.
    """

    collection: str
    index: str
    time_start_ms: int
    footprint: BaseGeometry
    properties: Mapping[str, Any] = field(default_factory=dict)
    bands: tuple[str, ...] = ()
    crs: str = "EPSG:4326"
    scale_m: float = 10.0

    def get(self, name: str) -> Any:
        """A property, the system ones included; None when absent."""
        if name == "system:index":
            return self.index
        if name == "system:time_start":
            return self.time_start_ms
        if name == "system:id":
            return f"{self.collection}/{self.index}"
        if name == "system:footprint":
            return shapely.geometry.mapping(self.footprint)
        return self.properties.get(name)


@dataclass
class _Element:
    """A value the interpreter passes around for images and features (mutable copy on set)."""

    geometry: BaseGeometry | None
    props: dict[str, Any]
    source: FakeImage | None = None
    element_id: str | None = None

    def get(self, name: str) -> Any:
        if name in self.props:
            return self.props[name]
        return self.source.get(name) if self.source is not None else None


class _Collection(list[_Element]):
    """A collection value (answered as a FeatureCollection, also when empty)."""


@dataclass(frozen=True)
class _Projection:
    crs: str
    scale_m: float


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server received."""

    method: str
    path: str
    body: Any


class GraphError(Exception):
    """The expression uses something the fake interpreter does not implement."""


class _Interpreter:
    """Evaluates a serialized expression graph (``{"result": ..., "values": {...}}``)."""

    def __init__(self, catalog: Sequence[FakeImage], memory_limit_images: int | None) -> None:
        self._catalog = catalog
        self._memory_limit = memory_limit_images

    def run(self, expression: Mapping[str, Any]) -> Any:
        values = expression["values"]
        return self._to_json(self._eval(values[expression["result"]], values, {}))

    # -- evaluation ---------------------------------------------------------------------------

    def _eval(self, node: Mapping[str, Any], values: Mapping[str, Any], env: dict[str, Any]) -> Any:
        if "constantValue" in node:
            return node["constantValue"]
        if "valueReference" in node:
            return self._eval(values[node["valueReference"]], values, env)
        if "arrayValue" in node:
            return [self._eval(v, values, env) for v in node["arrayValue"]["values"]]
        if "dictionaryValue" in node:
            return {
                k: self._eval(v, values, env) for k, v in node["dictionaryValue"]["values"].items()
            }
        if "argumentReference" in node:
            return env[node["argumentReference"]]
        if "functionDefinitionValue" in node:
            definition = node["functionDefinitionValue"]
            names = definition["argumentNames"]
            body = values[definition["body"]] if "body" in definition else None
            if body is None:
                raise GraphError("function definition without a body")

            def call(*args: Any) -> Any:
                return self._eval(body, values, {**env, **dict(zip(names, args, strict=True))})

            return call
        if "functionInvocationValue" in node:
            inv = node["functionInvocationValue"]
            name = inv["functionName"]
            raw_args: Mapping[str, Any] = inv.get("arguments", {})
            if name == "If":  # lazy, as on the server
                cond = self._eval(raw_args["condition"], values, env)
                branch = "trueCase" if cond else "falseCase"
                return self._eval(raw_args[branch], values, env) if branch in raw_args else None
            args = {k: self._eval(v, values, env) for k, v in raw_args.items()}
            return self._call(name, args)
        raise GraphError(f"unsupported graph node {sorted(node)}")

    def _call(self, name: str, a: dict[str, Any]) -> Any:  # noqa: C901 - a dispatch table
        if name == "ImageCollection.load":
            return _Collection(
                _Element(img.footprint, {}, img, img.index)
                for img in self._catalog
                if img.collection == a["id"]
            )
        if name == "Collection.filter":
            predicate: Callable[[_Element], bool] = a["filter"]
            return _Collection(e for e in a["collection"] if predicate(e))
        if name == "Collection.limit":
            elements = a["collection"]
            if self._memory_limit is not None and len(elements) > self._memory_limit:
                raise MemoryError
            return _Collection(elements[: int(a["limit"])] if "limit" in a else elements)
        if name == "Collection.map":
            # Mapped elements keep the system:index of their source element.
            mapped = _Collection()
            for e in a["collection"]:
                out = a["baseAlgorithm"](e)
                if isinstance(out, _Element) and out.element_id is None:
                    out = _Element(out.geometry, out.props, out.source, e.element_id)
                mapped.append(out)
            return mapped
        if name == "DateRange":
            return (int(a["start"]), int(a["end"]))
        if name == "Filter.dateRangeContains":
            start, end = a["leftValue"]
            prop = a["rightField"]
            return lambda e: e.get(prop) is not None and start <= e.get(prop) < end
        if name == "Filter.intersects":
            if a.get("leftField") != ".all":
                raise GraphError("Filter.intersects only on the element geometry")
            geom = a["rightValue"]
            geom = geom.geometry if isinstance(geom, _Element) else geom
            return lambda e: e.geometry is not None and e.geometry.intersects(geom)
        if name == "Filter.greaterThan":
            prop, limit = a["leftField"], a["rightValue"]
            return lambda e: e.get(prop) is not None and e.get(prop) > limit
        if name == "Filter.not":
            inner: Callable[[_Element], bool] = a["filter"]
            return lambda e: not inner(e)
        if name == "Filter.equals":
            if "leftField" in a and "rightValue" in a:
                prop, want = a["leftField"], a["rightValue"]
                return lambda e: e.get(prop) == want
            return ("equals", a["leftField"], a["rightField"])
        if name == "Filter.listContains":
            prop, want = a["leftField"], a["rightValue"]
            return lambda e: want in (e.get(prop) or [])
        if name == "Join.saveFirst":
            return ("saveFirst", a["matchKey"], bool(a.get("outer", False)))
        if name == "Join.apply":
            return self._join(a["join"], a["primary"], a["secondary"], a["condition"])
        if name == "GeometryConstructors.MultiPolygon":
            return shapely.geometry.MultiPolygon(
                [shapely.geometry.Polygon(p[0], p[1:]) for p in a["coordinates"]]
            )
        if name == "GeometryConstructors.Polygon":
            rings = a["coordinates"]
            return shapely.geometry.Polygon(rings[0], rings[1:])
        if name == "Feature":
            geom = a.get("geometry")
            return _Element(geom, dict(a.get("metadata") or {}))
        if name == "Element.set":
            element: _Element = a["object"]
            props = dict(element.props)
            if a["value"] is None:
                props.pop(a["key"], None)
            else:
                props[a["key"]] = a["value"]
            return _Element(element.geometry, props, element.source, element.element_id)
        if name == "Element.get":
            return a["object"].get(a["property"])
        if name == "Element.toDictionary":
            element = a["element"]
            keys = a.get("properties") or []
            return {k: element.get(k) for k in keys if element.get(k) is not None}
        if name == "Image.geometry":
            return a["feature"].geometry
        if name == "Image.bandNames":
            src = a["image"].source
            return list(src.bands) if src is not None else []
        if name == "Image.select":
            src = a["input"].source
            missing = [b for b in a["bandSelectors"] if src is None or b not in src.bands]
            if missing:
                raise GraphError(f"Image.select: band {missing[0]} not found")
            return a["input"]
        if name == "Image.projection":
            src = a["image"].source
            if src is None:
                raise GraphError("Image.projection of a non-image")
            return _Projection(src.crs, src.scale_m)
        if name == "Projection.crs":
            return a["projection"].crs
        if name == "Projection.nominalScale":
            return a["proj"].scale_m
        raise GraphError(f"the fake Earth Engine does not implement {name}")

    @staticmethod
    def _join(join: Any, primary: list[_Element], secondary: list[_Element], cond: Any) -> Any:
        if not (isinstance(join, tuple) and join[0] == "saveFirst"):
            raise GraphError("only Join.saveFirst is implemented")
        if not (isinstance(cond, tuple) and cond[0] == "equals"):
            raise GraphError("only Filter.equals(leftField, rightField) joins are implemented")
        _, match_key, outer = join
        _, left, right = cond
        by_key = {}
        for e in secondary:
            by_key.setdefault(e.get(right), e)
        out = []
        for e in primary:
            match = by_key.get(e.get(left))
            if match is None and not outer:
                continue
            props = dict(e.props)
            if match is not None:
                props[match_key] = match
            out.append(_Element(e.geometry, props, e.source, e.element_id))
        return _Collection(out)

    # -- answers ------------------------------------------------------------------------------

    def _to_json(self, value: Any) -> Any:
        if isinstance(value, BaseGeometry):
            return dict(shapely.geometry.mapping(value))
        if isinstance(value, _Element):
            props = {k: self._to_json(v) for k, v in value.props.items()}
            out: dict[str, Any] = {
                "type": "Feature",
                "geometry": self._to_json(value.geometry) if value.geometry else None,
                "properties": props,
            }
            if value.element_id is not None:
                out["id"] = value.element_id
            return out
        if isinstance(value, _Collection):
            return {
                "type": "FeatureCollection",
                "columns": {},
                "features": [self._to_json(v) for v in value],
            }
        if isinstance(value, list):
            return [self._to_json(v) for v in value]
        if isinstance(value, tuple):
            return [self._to_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self._to_json(v) for k, v in value.items()}
        return value


def _error_body(code: int, message: str, status: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


class EEServer:
    """A threaded loopback server; use as a context manager or call start()/stop()."""

    def __init__(self, catalog: Sequence[FakeImage] = ()) -> None:
        self.catalog: list[FakeImage] = list(catalog)
        self.requests: list[RecordedRequest] = []
        self.memory_limit_images: int | None = None
        self.pixel_value: PixelFunction = smooth_field
        self.pixel_mask: MaskFunction | None = None
        self.pixel_memory_limit_px: int | None = None
        self.pixel_delay_s = 0.0
        self.max_pixels_in_flight = 0
        self._pixels_in_flight = 0
        self._faults: deque[tuple[int, str, str]] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the ``opt_url`` to give the client)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def push_fault(self, code: int, message: str, status: str) -> None:
        """Answer the next compute call with this error (queued, first in first out)."""
        with self._lock:
            self._faults.append((code, message, status))

    def pixel_requests(self) -> list[RecordedRequest]:
        """The recorded ``image:computePixels`` calls, in order."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith(":computePixels")]

    def compute_requests(self) -> list[RecordedRequest]:
        """The recorded ``value:compute`` calls, in order."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith("value:compute")]

    def start(self) -> EEServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep pytest output clean

            def do_GET(self) -> None:
                server._record("GET", self.path, None)
                if self.path.startswith("/$discovery/rest"):
                    doc = json.loads(DISCOVERY_DOCUMENT.read_text())
                    doc["rootUrl"] = server.url + "/"
                    doc["baseUrl"] = server.url + "/"
                    self._send(200, json.dumps(doc).encode())
                elif self.path.split("?")[0].endswith("/algorithms"):
                    self._send(200, ALGORITHMS.read_bytes())
                else:
                    self._send(404, _error_body(404, f"no route {self.path}", "NOT_FOUND"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                server._record("POST", self.path, body)
                if self.path.split("?")[0].endswith("image:computePixels"):
                    code, payload = server._compute_pixels(body)
                    ctype = "application/octet-stream" if code == 200 else "application/json"
                    self._send(code, payload, ctype)
                    return
                if not self.path.split("?")[0].endswith("value:compute"):
                    self._send(404, _error_body(404, f"no route {self.path}", "NOT_FOUND"))
                    return
                code, payload = server._compute(body)
                self._send(code, payload)

            def _send(
                self, code: int, payload: bytes, content_type: str = "application/json"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and close its socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> EEServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body))

    def _compute(self, body: Any) -> tuple[int, bytes]:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            code, message, status = fault
            return code, _error_body(code, message, status)
        interpreter = _Interpreter(self.catalog, self.memory_limit_images)
        try:
            result = interpreter.run(body["expression"])
        except MemoryError:
            return 400, _error_body(400, "User memory limit exceeded.", "INVALID_ARGUMENT")
        except (GraphError, KeyError, TypeError, ValueError) as exc:
            return 400, _error_body(400, f"fake EE cannot evaluate: {exc!r}", "INVALID_ARGUMENT")
        return 200, json.dumps({"result": result}).encode()

    def _compute_pixels(self, body: Any) -> tuple[int, bytes]:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            self._pixels_in_flight += 1
            self.max_pixels_in_flight = max(self.max_pixels_in_flight, self._pixels_in_flight)
        try:
            if self.pixel_delay_s:
                time.sleep(self.pixel_delay_s)
            if fault is not None:
                code, message, status = fault
                return code, _error_body(code, message, status)
            try:
                return 200, self._pixels(body)
            except _RefusedError as exc:
                return 400, _error_body(400, str(exc), "INVALID_ARGUMENT")
            except (GraphError, KeyError, TypeError, ValueError) as exc:
                message = f"fake EE cannot compute pixels: {exc!r}"
                return 400, _error_body(400, message, "INVALID_ARGUMENT")
        finally:
            with self._lock:
                self._pixels_in_flight -= 1

    def _pixels(self, body: Mapping[str, Any]) -> bytes:
        if body.get("fileFormat") != "NPY":
            raise GraphError(f"fileFormat {body.get('fileFormat')!r}: only NPY is served")
        calls = dict(graph_invocations(body["expression"]))
        if "Image.load" not in calls or "Image.select" not in calls:
            raise GraphError(f"expected Image.load + Image.select, got {sorted(calls)}")
        implemented = {
            "Image.load",
            "Image.select",
            "Image.toFloat",
            "Image.unmask",
            "Image.constant",
            "Image.reduceResolution",
            "Reducer.mean",
            "Image.reproject",
            "Projection",
            "Image.resample",
        }
        unknown = sorted(set(calls) - implemented)
        if unknown:
            raise GraphError(f"the fake Earth Engine does not compute pixels of {unknown[0]}")
        image_id = calls["Image.load"]["id"]
        image = next((i for i in self.catalog if f"{i.collection}/{i.index}" == image_id), None)
        if image is None:
            raise _RefusedError(
                f"Image.load: Image asset '{image_id}' not found (does not exist or caller "
                "does not have access)."
            )
        bands = list(calls["Image.select"]["bandSelectors"])
        for band in bands:
            if band not in image.bands:
                raise _RefusedError(
                    f"Image.select: Band pattern '{band}' did not match any bands. "
                    f"Available bands: [{', '.join(image.bands)}]"
                )
        grid = body["grid"]
        width = int(grid["dimensions"]["width"])
        height = int(grid["dimensions"]["height"])
        dtype = np.dtype("<f4") if "Image.toFloat" in calls else np.dtype("<u2")
        n_bytes = width * height * len(bands) * dtype.itemsize
        if n_bytes > 48_000_000:
            raise _RefusedError(
                f"Total request size ({n_bytes} bytes) must be less than or equal to "
                "48000000 bytes."
            )
        if max(width, height) > 32768 or len(bands) > 1024:
            raise _RefusedError("Request exceeds the grid dimension or band count limits.")
        limit = self.pixel_memory_limit_px
        if limit is not None and width * height * len(bands) > limit:
            raise _RefusedError("User memory limit exceeded.")
        x, y = pixel_centres(grid["affineTransform"], width, height)
        masked = self.pixel_mask(image_id, x, y) if self.pixel_mask is not None else None
        fill = 0.0
        if "Image.unmask" in calls:
            value = calls["Image.unmask"]["value"]
            # The client wraps a number into Image.constant.
            if isinstance(value, dict) and value.get("call") == "Image.constant":
                value = value["args"]["value"]
            fill = float(value)
        out = np.zeros((height, width), dtype=[(b, dtype) for b in bands])
        for band in bands:
            values = self.pixel_value(image_id, band, x, y)
            if masked is not None:
                values = np.where(masked, fill, values)
            out[band] = values.astype(dtype)
        buffer = io.BytesIO()
        np.save(buffer, out, allow_pickle=False)
        return buffer.getvalue()


class _RefusedError(Exception):
    """An error a real Earth Engine answers with this message."""


PixelFunction = Callable[[str, str, "npt.NDArray[np.float64]", "npt.NDArray[np.float64]"],
                         "npt.NDArray[np.float64]"]  # fmt: skip
MaskFunction = Callable[[str, "npt.NDArray[np.float64]", "npt.NDArray[np.float64]"],
                        "npt.NDArray[np.bool_]"]  # fmt: skip


def pixel_centres(
    affine: Mapping[str, float], width: int, height: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """CRS coordinates of the pixel centres of a computePixels grid (``[height, width]`` each)."""
    col, row = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = affine["translateX"] + affine["scaleX"] * col + affine["shearX"] * row
    y = affine["translateY"] + affine["shearY"] * col + affine["scaleY"] * row
    return x, y


def smooth_field(
    image_id: str, band: str, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """A smooth, band-dependent DN field: a half-pixel error changes values by about 1 DN."""
    k = sum(band.encode()) % 17
    return 1500.0 + 50.0 * k + 300.0 * np.sin(x / 400.0) + 300.0 * np.cos(y / 550.0)


def graph_invocations(expression: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every function call in a serialized graph as ``(name, arguments)``, references resolved.

    Arguments are decoded to plain values where they are constants (or arrays of constants); a
    nested call stays a ``{"call": name, "args": {...}}`` dict; an argument reference becomes
    ``{"arg": name}``. Shared nodes (value references) are visited once per use.
    """
    values = expression["values"]

    def decode(node: Mapping[str, Any]) -> Any:
        if "constantValue" in node:
            return node["constantValue"]
        if "valueReference" in node:
            return decode(values[node["valueReference"]])
        if "arrayValue" in node:
            return [decode(v) for v in node["arrayValue"]["values"]]
        if "dictionaryValue" in node:
            return {k: decode(v) for k, v in node["dictionaryValue"]["values"].items()}
        if "argumentReference" in node:
            return {"arg": node["argumentReference"]}
        if "functionDefinitionValue" in node:
            return {"function": decode(values[node["functionDefinitionValue"]["body"]])}
        inv = node["functionInvocationValue"]
        return {
            "call": inv["functionName"],
            "args": {k: decode(v) for k, v in inv.get("arguments", {}).items()},
        }

    def walk(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(value, dict):
            if "call" in value and "args" in value:
                yield value["call"], value["args"]
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    yield from walk(decode(values[expression["result"]]))


@contextlib.contextmanager
def fake_earth_engine(
    monkeypatch: pytest.MonkeyPatch, catalog: Sequence[FakeImage]
) -> Iterator[EEServer]:
    """A started fake Earth Engine for one test; the client's state is reset afterwards."""
    from harvest.backends.earthengine.session import reset_earth_engine

    # Initialize asks the public data catalog for deprecated assets: no internet here.
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    # The client's backoff sleeps rand() * 2**n seconds; keep retries fast in tests.
    monkeypatch.setattr(googleapiclient.http, "random", SimpleNamespace(random=lambda: 0.005))
    srv = EEServer(catalog).start()
    try:
        yield srv
    finally:
        srv.stop()
        reset_earth_engine()
