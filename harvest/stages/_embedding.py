"""What ``harvest embed`` and ``harvest prune`` share: a dataset's images and their embeddings.

A DATASET is a folder written by ``harvest fetch`` (kept chips only: ``cross-sensor/ROI/HR.tif``
and ``LR.tif``, or ``kept/ROI/<role>_<group>.tif``), by ``harvest degrade`` or a synthetic build
(``synthetic/ROI/IMAGE/HR.tif`` and ``LR_<method>.tif``), or any folder of GeoTIFFs. Rejected
chips (``rejected/``) and hidden files are never read. Each image is known by its path relative
to the dataset (the key of every table), its ROI and an image name (``early``, a NAIP id, ...).

The embeddings table (GeoParquet, one row per image) is written through a resumable scheme:
while a run works, every few hundred images go to a part file in ``.<name>.parts/`` beside the
output (each written atomically); at the end the output is rewritten whole (temp file + rename)
and the parts removed. A killed run leaves its parts, and the next run reads them and skips the
images they hold, so nothing is embedded twice and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from harvest import __version__
from harvest.errors import EmbedError
from harvest.ids import check_id
from harvest.progress import Progress

if TYPE_CHECKING:
    import pyarrow as pa

    from harvest.embed import WeightsSpec

logger = logging.getLogger(__name__)

IMAGE_ROLES = ("hr", "lr")
EMBEDDINGS_FILE = "embeddings.parquet"
# Preference order of the LR made by `harvest degrade` (the paper's default method first).
_LR_METHODS = ("statistical", "deterministic", "variational", "raw")
_RED = ("red", "r", "b04", "b4")
_GREEN = ("green", "g", "b03", "b3")
_BLUE = ("blue", "b", "b02", "b2")
PART_ROWS = 256
"""Images per part file: what a killed run can lose at most is the part in progress."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset and its names in the tables."""

    path: Path
    """Absolute path of the GeoTIFF."""
    rel: str
    """Path relative to the dataset folder (POSIX separators): the key of every table."""
    roi_id: str
    image: str
    """Name of the image within its ROI: ``early``/``late`` or a NAIP id, ``HR``, ``LR``..."""
    role: str
    """``hr``, ``lr`` or ``image`` (a plain GeoTIFF folder)."""


# The sub-folders of a dataset layout that hold images (``subset=`` picks one of them).
SUBSETS = ("cross-sensor", "kept", "synthetic", "hr-pool")


def find_images(
    dataset: str | os.PathLike[str], role: str = "hr", subset: str | None = None
) -> list[DatasetImage]:
    """The images of ``dataset`` for ``role`` (see the module docstring), sorted by path.

    Args:
        dataset: The dataset folder (or a folder of GeoTIFFs).
        role: ``hr`` or ``lr``.
        subset: Only the images of this layout folder (of :data:`SUBSETS`); default: all.

    Raises:
        EmbedError: the folder is missing, holds no image, or ``role`` or ``subset`` is unknown.
        UnsafeIdError: a ROI or image name is not a safe id.
    """
    root = Path(dataset)
    if subset is not None and subset not in SUBSETS:
        raise EmbedError(f"--subset {subset!r} is not one of {', '.join(SUBSETS)}")
    if subset is not None and not (root / subset).is_dir():
        raise EmbedError(f"{root} has no {subset}/ folder; leave --subset out or pick another")
    if role not in IMAGE_ROLES:
        raise EmbedError(f"--image {role!r} is not one of {', '.join(IMAGE_ROLES)}")
    if not root.is_dir():
        raise EmbedError(f"{root} is not a folder; give a dataset folder or a folder of GeoTIFFs")
    found: list[DatasetImage] = []
    layout = False
    cross = root / "cross-sensor"
    if cross.is_dir() and subset in (None, "cross-sensor"):
        layout = True
        name = "HR.tif" if role == "hr" else "LR.tif"
        for p in sorted(cross.glob(f"*/{name}")):
            found.append(_image(root, p, p.parent.name, name.removesuffix(".tif"), role))
    kept = root / "kept"
    if kept.is_dir() and subset in (None, "kept"):
        layout = True
        for folder in sorted(d for d in kept.iterdir() if d.is_dir()):
            groups = sorted(
                p
                for p in folder.glob(f"{role}_*.tif")
                if not p.stem.endswith("_scl") and not p.name.startswith(".")
            )
            if groups:
                # The first group by name: the finest of a recipe ("hr_2.5m" before "hr_5m").
                p = sorted(groups, key=_group_order)[0]
                found.append(_image(root, p, folder.name, p.stem, role))
    synthetic = root / "synthetic"
    if synthetic.is_dir() and subset in (None, "synthetic"):
        layout = True
        for folder in sorted(d for d in synthetic.glob("*/*") if d.is_dir()):
            image = folder / "HR.tif" if role == "hr" else _synthetic_lr(folder)
            if image is not None and image.is_file():
                found.append(_image(root, image, folder.parent.name, folder.name, role))
    pool = root / "hr-pool"
    if pool.is_dir() and subset == "hr-pool" and role == "hr":
        # The synthetic build's early and late HR images before pruning: only when asked for.
        layout = True
        for folder in sorted(d for d in pool.glob("*/*") if d.is_dir()):
            if (folder / "HR.tif").is_file():
                found.append(_image(root, folder / "HR.tif", folder.parent.name, folder.name, role))
    if not layout:
        for p in sorted(root.rglob("*")):
            rel_parts = p.relative_to(root).parts
            if (
                p.suffix.lower() not in (".tif", ".tiff")
                or not p.is_file()
                or any(part.startswith(".") for part in rel_parts)
                or "rejected" in rel_parts[:-1]
            ):
                continue
            roi = p.parent.name if p.stem in ("HR", "LR") and p.parent != root else p.stem
            found.append(_image(root, p, roi, p.stem, "image"))
    if not found:
        raise EmbedError(
            f"no {role.upper()} images under {root}; give a folder written by 'harvest fetch' "
            "or 'harvest degrade', or a folder of GeoTIFFs"
            + (" (or try --image lr)" if role == "hr" and layout else "")
        )
    return sorted(found, key=lambda i: i.rel)


def _group_order(path: Path) -> tuple[float, str]:
    try:
        return (float(path.stem.split("_", 1)[1].removesuffix("m")), path.name)
    except ValueError:
        return (float("inf"), path.name)


def _synthetic_lr(folder: Path) -> Path | None:
    for method in _LR_METHODS:
        if (folder / f"LR_{method}.tif").is_file():
            return folder / f"LR_{method}.tif"
    others = sorted(folder.glob("LR_*.tif"))
    return others[0] if others else None


def _image(root: Path, path: Path, roi: str, image: str, role: str) -> DatasetImage:
    fix = "rename it (it names the image in the embeddings and selection tables)"
    roi_id = check_id(roi, field="ROI name", where=str(path), fix=fix)
    name = check_id(image, field="image name", where=str(path), fix=fix)
    return DatasetImage(path.resolve(), path.relative_to(root).as_posix(), roi_id, name, role)


# --- reading pixels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RgbImage:
    """The three display bands of an image (float32, NaN = nodata) and its footprint."""

    rgb: np.ndarray
    footprint_wkb: bytes
    bounds_lonlat: tuple[float, float, float, float]


def _band_index(descriptions: Sequence[str | None], names: tuple[str, ...]) -> int | None:
    for i, d in enumerate(descriptions):
        if d is not None and d.strip().lower() in names:
            return i
    return None


def rgb_band_indexes(descriptions: Sequence[str | None], count: int) -> tuple[int, int, int]:
    """0-based red, green, blue band indexes, found by band description.

    Recognised descriptions: ``red``/``green``/``blue`` (NAIP chips), ``B04``/``B03``/``B02``
    (Sentinel-2). Without them: the first three bands; a 1- or 2-band image (SAR) repeats its
    bands.
    """
    found = [_band_index(descriptions, n) for n in (_RED, _GREEN, _BLUE)]
    if all(i is not None for i in found):
        return (int(found[0]), int(found[1]), int(found[2]))  # type: ignore[arg-type]
    if count >= 3:
        return (0, 1, 2)
    return (0, min(1, count - 1), 0)


def read_rgb(path: Path) -> RgbImage:
    """Read the display bands of a GeoTIFF as float32 (NaN = nodata) and its footprint.

    Raises:
        EmbedError: the file cannot be read as a raster.
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    try:
        with rasterio.open(path) as ds:
            idx = rgb_band_indexes(ds.descriptions, ds.count)
            data = ds.read([i + 1 for i in idx], masked=True)
            dtype = ds.dtypes[0]
            bounds = ds.bounds
            crs = ds.crs
    except (RasterioError, OSError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise EmbedError(f"cannot read {path}: {msg}; check or remove the file") from None
    arr = np.ma.filled(data.astype(np.float32), np.nan)
    if dtype == "uint8":
        arr /= 255.0
    elif dtype in ("uint16", "int16"):
        arr /= 10000.0
    if crs is not None:
        try:
            lonlat = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
        except Exception:  # noqa: BLE001 - an odd CRS costs the footprint, not the embedding
            lonlat = (float("nan"),) * 4
    else:
        lonlat = (float("nan"),) * 4
    wkb = box(*lonlat).wkb if np.all(np.isfinite(lonlat)) else b""
    return RgbImage(arr, wkb, tuple(float(v) for v in lonlat))  # type: ignore[arg-type]


# --- the embedder interface -------------------------------------------------------------------


class ImageEmbedder(Protocol):
    """What the stages need of an embedder (:class:`harvest.embed.ClipEmbedder` is one).

    Any object with these members works, which is how a test plants a feature extractor that
    separates its textures for certain.
    """

    model_name: str
    weights_sha256: str

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """``(3, H, W)`` float32 reflectance (NaN = nodata) -> the model's input."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of preprocessed images -> ``(B, dim)`` float32, L2-normalised."""
        ...


def weights_record(spec: WeightsSpec) -> dict[str, Any]:
    """The weights spec as JSON (recorded in the table; ``prune`` reloads the same model)."""
    record = asdict(spec)
    record["checkpoint"] = str(spec.checkpoint) if spec.checkpoint is not None else None
    record.pop("allow_download", None)
    return record


def embedder_loader(
    spec: WeightsSpec, *, device: str, precision: str, threads: int | None = None
) -> Any:
    """A callable that loads the CLIP embedder of ``spec`` (only when there is work)."""

    def load() -> ImageEmbedder:
        from harvest.embed import ClipEmbedder

        return ClipEmbedder.load(spec, device=device, precision=precision, threads=threads)

    return load


# --- the embeddings table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Embeddings:
    """Rows of an embeddings table (one per image), in a fixed order."""

    rel: tuple[str, ...]
    roi_id: tuple[str, ...]
    image: tuple[str, ...]
    role: tuple[str, ...]
    vectors: np.ndarray
    """``(n, dim)`` float32, L2-normalised."""
    footprints: tuple[bytes, ...]
    model: str
    weights_sha256: str

    def __len__(self) -> int:
        return len(self.rel)

    def take(self, keys: Sequence[str]) -> Embeddings:
        """The rows of ``keys`` (image paths), in that order."""
        where = {k: i for i, k in enumerate(self.rel)}
        ix = np.array([where[k] for k in keys], dtype=np.int64)
        return Embeddings(
            tuple(self.rel[i] for i in ix),
            tuple(self.roi_id[i] for i in ix),
            tuple(self.image[i] for i in ix),
            tuple(self.role[i] for i in ix),
            self.vectors[ix] if len(ix) else self.vectors[:0],
            tuple(self.footprints[i] for i in ix),
            self.model,
            self.weights_sha256,
        )


def _table(e: Embeddings) -> pa.Table:
    import pyarrow as pa

    dim = int(e.vectors.shape[1]) if e.vectors.ndim == 2 and len(e) else 0
    flat = pa.array(np.ascontiguousarray(e.vectors, dtype=np.float32).reshape(-1))
    vectors = (
        pa.FixedSizeListArray.from_arrays(flat, dim)
        if dim
        else pa.array([], type=pa.list_(pa.float32(), 1))
    )
    return pa.table(
        {
            "roi_id": pa.array(e.roi_id, pa.string()),
            "image": pa.array(e.image, pa.string()),
            "path": pa.array(e.rel, pa.string()),
            "role": pa.array(e.role, pa.string()),
            "model": pa.array([e.model] * len(e), pa.string()),
            "weights_sha256": pa.array([e.weights_sha256] * len(e), pa.string()),
            "embedding": vectors,
            "geometry": pa.array([f or None for f in e.footprints], pa.binary()),
        }
    )


def write_embeddings(path: Path, e: Embeddings, extra: dict[str, Any]) -> None:
    """Write ``e`` as GeoParquet (atomically), with ``extra`` in the ``harvest`` metadata."""
    from harvest.geoio import write_geoparquet

    valid = [f for f in e.footprints if f]
    bbox = None
    if valid:
        from shapely import from_wkb, total_bounds

        bbox = [float(v) for v in total_bounds(from_wkb(valid))]
    meta = {
        "harvest_version": __version__,
        "model": e.model,
        "weights_sha256": e.weights_sha256,
        "dim": int(e.vectors.shape[1]) if e.vectors.ndim == 2 else 0,
        **extra,
    }
    write_geoparquet(path, _table(e), geometry_types=["Polygon"], bbox=bbox, extra_metadata=meta)


def read_embeddings(path: Path) -> tuple[Embeddings, dict[str, Any]]:
    """An embeddings table and its ``harvest`` metadata.

    Raises:
        EmbedError: the file is not an embeddings table harvest wrote.
    """
    import pyarrow.parquet as pq

    from harvest.geoio import read_harvest_metadata

    need = {"roi_id", "image", "path", "role", "model", "weights_sha256", "embedding"}
    try:
        table = pq.read_table(path)
        meta = read_harvest_metadata(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        msg = " ".join(str(exc).split())[:200]
        raise EmbedError(
            f"cannot read embeddings {path}: {msg}; remove it or give another file"
        ) from None
    missing = sorted(need - set(table.column_names))
    if missing:
        raise EmbedError(
            f"{path} is not an embeddings table (no column {', '.join(missing)}); "
            "give a file written by 'harvest embed' or another -o"
        )
    n = table.num_rows
    col = table.column("embedding").combine_chunks()
    dim = int(meta.get("dim") or 0)
    if n:
        values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        dim = values.size // n
        vectors = values.reshape(n, dim)
    else:
        vectors = np.zeros((0, dim), np.float32)
    geoms = table.column("geometry").to_pylist() if "geometry" in table.column_names else []
    models = set(table.column("model").to_pylist())
    shas = set(table.column("weights_sha256").to_pylist())
    if len(models) > 1 or len(shas) > 1:
        raise EmbedError(f"{path} mixes embeddings of several models; remove it and embed again")
    e = Embeddings(
        tuple(table.column("path").to_pylist()),
        tuple(table.column("roi_id").to_pylist()),
        tuple(table.column("image").to_pylist()),
        tuple(table.column("role").to_pylist()),
        vectors,
        tuple(g or b"" for g in geoms) if geoms else (b"",) * n,
        str(models.pop() if models else meta.get("model", "")),
        str(shas.pop() if shas else meta.get("weights_sha256", "")),
    )
    return e, meta


def concat(parts: Sequence[Embeddings], model: str, sha: str) -> Embeddings:
    """Rows of all ``parts`` (the first occurrence of a path wins), sorted by path."""
    seen: dict[str, tuple[int, int]] = {}
    for pi, part in enumerate(parts):
        for ri, key in enumerate(part.rel):
            seen.setdefault(key, (pi, ri))
    keys = sorted(seen)
    dims = {p.vectors.shape[1] for p in parts if len(p)}
    if len(dims) > 1:
        raise EmbedError(f"embeddings of several sizes {sorted(dims)}; remove them, embed again")
    dim = dims.pop() if dims else 0
    vectors = np.zeros((len(keys), dim), np.float32)
    rows: list[tuple[str, str, str, bytes]] = []
    for n, key in enumerate(keys):
        pi, ri = seen[key]
        p = parts[pi]
        vectors[n] = p.vectors[ri]
        rows.append((p.roi_id[ri], p.image[ri], p.role[ri], p.footprints[ri]))
    return Embeddings(
        tuple(keys),
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        tuple(r[2] for r in rows),
        vectors,
        tuple(r[3] for r in rows),
        model,
        sha,
    )


def parts_dir(out: Path) -> Path:
    """The hidden folder of a run's part files, beside the output."""
    return out.with_name(f".{out.name}.parts")


def load_done(out: Path) -> tuple[list[Embeddings], dict[str, Any] | None]:
    """What earlier runs wrote to ``out``: the finished table and the parts of a killed run."""
    found: list[Embeddings] = []
    meta: dict[str, Any] | None = None
    if out.exists():
        e, meta = read_embeddings(out)
        found.append(e)
    parts = parts_dir(out)
    if parts.is_dir():
        from harvest.diskio import is_temporary

        for p in sorted(parts.glob("part-*.parquet")):
            if is_temporary(p):
                continue
            e, m = read_embeddings(p)
            found.append(e)
            meta = meta or m
    return found, meta


# --- embedding a dataset ----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_dataset` did."""

    out_path: Path
    n_images: int
    n_embedded: int
    n_done_before: int
    model: str
    weights_sha256: str
    path_note: str
    seconds: float


def _batches(items: Sequence[DatasetImage], size: int) -> Iterator[Sequence[DatasetImage]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class DaskPlan:
    """Where to embed on Dask: ``workers`` local processes, or an existing ``scheduler``.

    Attributes:
        workers: Worker processes of a local cluster (used when ``scheduler`` is None).
        scheduler: Address of an existing Dask scheduler (``tcp://host:8786``).
        spec: The weights each worker loads (it must see the same files).
        device: ``cpu`` or ``cuda`` on the workers.
    """

    workers: int
    scheduler: str | None
    spec: WeightsSpec
    device: str = "cpu"


def dask_plan(
    workers: int,
    scheduler: str | None,
    spec: WeightsSpec | None,
    device: str,
    embedder: ImageEmbedder | None,
) -> DaskPlan | None:
    """The Dask plan of the ``workers`` / ``scheduler`` options (None: in this process).

    Raises:
        EmbedError: a custom embedder (Python API) with Dask, or ``workers`` < 1.
    """
    if workers < 1:
        raise EmbedError(f"--workers {workers}: give 1 or more")
    if scheduler is None and workers == 1:
        return None
    if embedder is not None or spec is None:
        raise EmbedError("a custom embedder runs in this process only: leave out workers")
    return DaskPlan(workers=workers, scheduler=scheduler, spec=spec, device=device)


# Batches per Dask task: enough to keep each worker's model busy between two results, few
# enough that the last tasks of a run spread over the workers.
DASK_BATCHES_PER_TASK = 2


def embed_dataset(
    images: Sequence[DatasetImage],
    out: Path,
    load_embedder: Any,
    *,
    weights_record: dict[str, Any],
    expected: tuple[str, str] | None,
    batch_size: int = 32,
    decode_workers: int = 2,
    progress: Progress,
    started: float | None = None,
    dask: DaskPlan | None = None,
) -> EmbedResult:
    """Embed the images of ``images`` that ``out`` does not hold yet; rewrite ``out`` whole.

    Args:
        images: The dataset's images (:func:`find_images`).
        out: The embeddings table (GeoParquet); earlier runs' rows are kept.
        load_embedder: Called with no argument when there is work: returns an
            :class:`ImageEmbedder` (loading weights and probing takes seconds, so a finished
            table never pays for it).
        weights_record: The weights spec, recorded in the table's metadata (``prune`` reads it
            back to use the same model).
        expected: ``(model, weights_sha256)`` the table must hold, when known before loading.
        batch_size: Images per forward pass.
        decode_workers: Threads reading and preprocessing the next batch while one is embedded.
        progress: Progress bars.
        started: ``time.perf_counter()`` of the run's start.
        dask: Embed on a Dask cluster: the path the probe chose here is loaded by every worker
            (one model per worker process), each task embeds whole batches of the same
            boundaries as a single process does, and this process writes the table.

    Raises:
        EmbedError: ``out`` holds embeddings of another model, or an image is unreadable.
    """
    t0 = time.perf_counter() if started is None else started
    done, meta = load_done(out)
    model = str(meta.get("model")) if meta else ""
    sha = str(meta.get("weights_sha256")) if meta else ""
    if expected is not None and done and (model, sha) != expected:
        raise EmbedError(
            f"{out} holds embeddings of {model} (weights sha256 {sha[:12]}), not of "
            f"{expected[0]} (sha256 {expected[1][:12]}); write to another -o or remove it"
        )
    have = {k for part in done for k in part.rel}
    todo = [i for i in images if i.rel not in have]
    wanted = {i.rel for i in images}
    n_before = len(wanted & have)
    note = ""
    parts_folder = parts_dir(out)
    if todo:
        embedder = load_embedder()
        note = str(getattr(getattr(embedder, "probe", None), "line", lambda: "")() or "")
        if done and (embedder.model_name, embedder.weights_sha256) != (model, sha):
            raise EmbedError(
                f"{out} holds embeddings of {model} (weights sha256 {sha[:12]}), not of "
                f"{embedder.model_name} (sha256 {embedder.weights_sha256[:12]}); write to "
                "another -o or remove it"
            )
        model, sha = embedder.model_name, embedder.weights_sha256
        meta = {"weights": weights_record, "path": note}
        if dask is None:
            new_parts = _embed_todo(
                todo,
                embedder,
                parts_folder,
                first_part=_next_part_number(parts_folder),
                weights_record=weights_record,
                batch_size=batch_size,
                decode_workers=decode_workers,
                progress=progress,
            )
        else:
            new_parts = _embed_todo_dask(
                todo,
                embedder,
                parts_folder,
                dask,
                first_part=_next_part_number(parts_folder),
                weights_record=weights_record,
                batch_size=batch_size,
                progress=progress,
            )
        done.extend(new_parts)
    if todo or parts_folder.exists() or not out.exists():
        table = concat(done, model, sha)
        # Rows of images no longer in the dataset are dropped: the table mirrors the dataset.
        table = table.take([k for k in table.rel if k in wanted])
        write_embeddings(out, table, {"weights": (meta or {}).get("weights", weights_record)})
        if parts_folder.exists():
            shutil.rmtree(parts_folder)
    return EmbedResult(
        out, len(images), len(todo), n_before, model, sha, note, time.perf_counter() - t0
    )


def _next_part_number(folder: Path) -> int:
    numbers = [
        int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet") if "." not in p.stem
    ]
    return max(numbers, default=-1) + 1


def _read_and_prepare(embedder: ImageEmbedder, image: DatasetImage) -> tuple[np.ndarray, bytes]:
    rgb = read_rgb(image.path)
    return embedder.preprocess(rgb.rgb), rgb.footprint_wkb


def _embed_todo(
    todo: Sequence[DatasetImage],
    embedder: ImageEmbedder,
    folder: Path,
    *,
    first_part: int,
    weights_record: dict[str, Any],
    batch_size: int,
    decode_workers: int,
    progress: Progress,
) -> list[Embeddings]:
    """Embed ``todo`` in batches, decoding ahead; flush a part file every :data:`PART_ROWS`."""
    written: list[Embeddings] = []
    pending_rows: list[tuple[DatasetImage, np.ndarray, bytes]] = []
    part_no = first_part

    def flush() -> None:
        nonlocal part_no, pending_rows
        if not pending_rows:
            return
        part = Embeddings(
            tuple(r[0].rel for r in pending_rows),
            tuple(r[0].roi_id for r in pending_rows),
            tuple(r[0].image for r in pending_rows),
            tuple(r[0].role for r in pending_rows),
            np.stack([r[1] for r in pending_rows]).astype(np.float32),
            tuple(r[2] for r in pending_rows),
            embedder.model_name,
            embedder.weights_sha256,
        )
        write_embeddings(folder / f"part-{part_no:06d}.parquet", part, {"weights": weights_record})
        written.append(part)
        part_no += 1
        pending_rows = []

    batches = list(_batches(todo, batch_size))
    with (
        ThreadPoolExecutor(max_workers=max(1, decode_workers)) as pool,
        progress.bar("embed", len(todo)) as bar,
    ):
        # One batch is decoded ahead while the current one runs through the model.
        def submit(b: Sequence[DatasetImage]) -> list[Future[tuple[np.ndarray, bytes]]]:
            return [pool.submit(_read_and_prepare, embedder, i) for i in b]

        ahead = submit(batches[0]) if batches else []
        for n, batch in enumerate(batches):
            current = ahead
            ahead = submit(batches[n + 1]) if n + 1 < len(batches) else []
            try:
                prepared = [f.result() for f in current]
            except BaseException:
                for f in ahead:
                    f.cancel()
                raise
            vectors = embedder.embed(np.stack([p[0] for p in prepared]))
            for image, vec, (_x, wkb) in zip(batch, vectors, prepared, strict=True):
                pending_rows.append((image, np.asarray(vec, np.float32), wkb))
            if len(pending_rows) >= PART_ROWS:
                flush()
            bar.advance(len(batch))
        flush()
    return written


# --- on Dask ----------------------------------------------------------------------------------

# One embedder per worker process, per (weights, device, path): loading takes seconds.
_WORKER_EMBEDDERS: dict[tuple[str, str, str], ImageEmbedder] = {}
_WORKER_LOCK = threading.Lock()


def _worker_embedder(spec: WeightsSpec, device: str, path: str) -> ImageEmbedder:
    key = (json.dumps(weights_record(spec), sort_keys=True), device, path)
    with _WORKER_LOCK:
        if key not in _WORKER_EMBEDDERS:
            from harvest.embed import ClipEmbedder

            # One thread per worker process: the processes share the cores.
            loaded = ClipEmbedder.load(spec, device=device, precision=path, threads=1)
            _WORKER_EMBEDDERS[key] = loaded
        return _WORKER_EMBEDDERS[key]


def _embed_task(
    spec: WeightsSpec, device: str, path: str, batches: list[list[DatasetImage]]
) -> list[tuple[np.ndarray, list[bytes]]]:
    """On a worker: each batch read, preprocessed and embedded as one forward pass."""
    embedder = _worker_embedder(spec, device, path)
    out = []
    for batch in batches:
        prepared = [_read_and_prepare(embedder, i) for i in batch]
        vectors = embedder.embed(np.stack([p[0] for p in prepared]))
        out.append((np.asarray(vectors, np.float32), [p[1] for p in prepared]))
    return out


def _embed_todo_dask(
    todo: Sequence[DatasetImage],
    embedder: ImageEmbedder,
    folder: Path,
    plan: DaskPlan,
    *,
    first_part: int,
    weights_record: dict[str, Any],
    batch_size: int,
    progress: Progress,
) -> list[Embeddings]:
    """Embed ``todo`` on Dask; one part file per task, written as results arrive."""
    from distributed import as_completed

    from harvest.stages.fetch import connect_scheduler, local_cluster

    path = str(getattr(embedder, "path", "fp32"))
    batches = [list(b) for b in _batches(todo, batch_size)]
    tasks = [
        batches[i : i + DASK_BATCHES_PER_TASK]
        for i in range(0, len(batches), DASK_BATCHES_PER_TASK)
    ]
    written: list[Embeddings] = []
    with contextlib.ExitStack() as stack:
        if plan.scheduler is not None:
            client = stack.enter_context(contextlib.closing(connect_scheduler(plan.scheduler)))
        else:
            from distributed import Client

            cluster = stack.enter_context(contextlib.closing(local_cluster(plan.workers)))
            client = stack.enter_context(contextlib.closing(Client(cluster)))
        bar = stack.enter_context(progress.bar("embed", len(todo)))
        futures = {
            client.submit(_embed_task, plan.spec, plan.device, path, task, pure=False): n
            for n, task in enumerate(tasks)
        }
        for future in as_completed(futures):
            n = futures[future]
            results = future.result()
            images = [i for batch in tasks[n] for i in batch]
            part = Embeddings(
                tuple(i.rel for i in images),
                tuple(i.roi_id for i in images),
                tuple(i.image for i in images),
                tuple(i.role for i in images),
                np.concatenate([r[0] for r in results]).astype(np.float32),
                tuple(wkb for r in results for wkb in r[1]),
                embedder.model_name,
                embedder.weights_sha256,
            )
            # Part numbers follow the task order, so the table does not depend on timing.
            write_embeddings(
                folder / f"part-{first_part + n:06d}.parquet", part, {"weights": weights_record}
            )
            written.append(part)
            bar.advance(len(images))
    return written
