"""``harvest prune DATASET --clusters K -o selection.parquet``: one image per CLIP cluster.

SEN2NAIP kept one image per cluster of CLIP embeddings (18,000 clusters over about 80,000 NAIP
images) to undo NAIP's agricultural bias. This stage embeds what is not embedded yet (the
embeddings table, ``embeddings.parquet`` beside the output unless ``--embeddings`` names one),
clusters with :mod:`harvest.cluster` (seeded mini-batch k-means, random init) and chooses one
image per cluster, at random (the paper) or nearest to the centroid. Files written (each
atomically; ``selection`` stands for the output's stem)::

    selection.parquet            every image: roi_id, image, path, role, cluster, distance,
                                 selected, run (the prune run that added it), footprint
    selection.centroids.parquet  the centroids (cluster, centroid, run), for incremental runs
    selection.report.json        counts, the cluster-size histogram, the settings
    selection.report.md          the same for people, with the contact sheet
    selection.clusters.png       a contact sheet: a few clusters, the chosen image framed

Incremental (the scheduled extension job): when the selection exists, a new run keeps every
earlier row as it is, assigns the new images to the existing centroids, and selects a new image
only for a cluster with no selected member yet; ``--grow K`` first adds K clusters fitted on
the new images. The selection file is the commit point: it records how many centroids it uses,
so a run killed after writing centroids but before the selection is simply done again.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harvest import __version__
from harvest.diskio import atomic_write_bytes
from harvest.errors import PruneError
from harvest.lock import folder_lock, sibling_lock_path
from harvest.progress import NO_PROGRESS, Progress
from harvest.stages._embedding import (
    EMBEDDINGS_FILE,
    DatasetImage,
    Embeddings,
    ImageEmbedder,
    dask_plan,
    embed_dataset,
    embedder_loader,
    find_images,
    read_embeddings,
    read_rgb,
    weights_record,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from harvest.cluster import Selection
    from harvest.embed import WeightsSpec

STRATEGIES = ("random", "nearest")
CONTACT_CLUSTERS = 6
CONTACT_MEMBERS = 8
THUMB_PX = 96


@dataclass(frozen=True)
class SelectionFiles:
    """The files of a selection (all beside the output)."""

    selection: Path
    centroids: Path
    report_json: Path
    report_md: Path
    contact_sheet: Path

    @classmethod
    def beside(cls, out: Path) -> SelectionFiles:
        """The file names for output ``out`` (``selection.parquet`` -> ``selection.*``)."""
        stem = out.name.removesuffix(".parquet")
        return cls(
            out,
            out.with_name(f"{stem}.centroids.parquet"),
            out.with_name(f"{stem}.report.json"),
            out.with_name(f"{stem}.report.md"),
            out.with_name(f"{stem}.clusters.png"),
        )


@dataclass(frozen=True)
class PruneSummary:
    """What :func:`run` did."""

    files: SelectionFiles
    n_images: int
    n_clusters: int
    n_selected: int
    n_empty: int
    n_new: int
    n_new_selected: int
    n_embedded: int
    incremental: bool
    seconds: float
    path_note: str = ""

    def line(self) -> str:
        """One-line summary for the CLI."""
        what = (
            f"{self.n_new} new image{'' if self.n_new == 1 else 's'} assigned, "
            f"{self.n_new_selected} newly selected; "
            if self.incremental
            else ""
        )
        return (
            f"{what}{self.n_selected} of {self.n_images} images kept, one per cluster "
            f"({self.n_clusters} clusters, {self.n_empty} empty; {self.n_embedded} embedded "
            f"now), in {self.seconds:.1f} s -> {self.files.selection}"
        )


@dataclass(frozen=True)
class _Previous:
    keys: tuple[str, ...]
    labels: np.ndarray
    distances: np.ndarray
    selected: np.ndarray
    runs: np.ndarray
    centroids: np.ndarray
    meta: dict[str, Any]


def run(
    dataset: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    clusters: int,
    seed: int = 0,
    strategy: str = "random",
    kmeans: str = "lloyd",
    weights: WeightsSpec | None = None,
    embeddings_path: str | os.PathLike[str] | None = None,
    grow: int = 0,
    image_role: str = "hr",
    subset: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 32,
    embedder: ImageEmbedder | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> PruneSummary:
    """Select one image per cluster of the dataset's embeddings (see the module docstring).

    Args:
        dataset: The dataset folder (or a folder of GeoTIFFs).
        out_path: The selection GeoParquet (its siblings are named after it).
        clusters: Number of clusters (SEN2NAIP: 18,000). On an existing selection it must be
            the number it was made with (with or without the clusters added by ``grow``).
        seed: Seed of the k-means and of the random choice per cluster.
        strategy: ``random`` (the paper) or ``nearest`` (closest to the centroid).
        kmeans: k-means backend of :mod:`harvest.cluster`: ``lloyd`` (default), ``minibatch``
            (scikit-learn's ``MiniBatchKMeans``, as the paper) or ``faiss`` (``faiss-cpu``).
        weights: The CLIP model; default: the one the embeddings table was made with, else
            ViT-B-32 / laion2b_s34b_b79k.
        embeddings_path: The embeddings table (default ``embeddings.parquet`` beside the
            output); images missing from it are embedded first.
        grow: Add this many clusters, fitted on the new images (incremental runs only).
        image_role: ``hr`` or ``lr``.
        subset: Only the images of this layout folder (``cross-sensor``, ``kept`` or
            ``synthetic``); default: every image of the dataset.
        workers: Embed on a local Dask cluster of this many worker processes (1: no Dask).
        scheduler: Embed on the existing Dask cluster at this address instead.
        device: ``cpu`` or ``cuda`` for the embedding.
        precision: ``auto`` or a named embedding path (see :mod:`harvest.embed`).
        batch_size: Images per forward pass.
        embedder: Use this embedder instead of CLIP (Python API).
        progress: Show progress bars.

    Raises:
        PruneError: options that contradict the existing selection, or bad values.
        ClusteringError: more clusters than images.
        EmbedError, WeightsError: as :func:`harvest.stages.embed.run`.
        FolderLockedError: another run writes the selection or the embeddings.
    """
    from harvest.embed import WeightsSpec

    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise PruneError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if clusters < 1:
        raise PruneError(f"--clusters {clusters}: ask for at least 1 cluster")
    from harvest.cluster import BACKENDS

    if kmeans not in BACKENDS:
        raise PruneError(f"--kmeans {kmeans!r} is not one of {', '.join(BACKENDS)}")
    if kmeans == "faiss":
        from harvest.cluster import _import_faiss

        _import_faiss()  # before embedding: a missing faiss-cpu is a one-line error at once
    if grow < 0:
        raise PruneError(f"--grow {grow}: give a number of clusters to add (>= 0)")
    out = Path(out_path)
    files = SelectionFiles.beside(out)
    emb_path = Path(embeddings_path) if embeddings_path else out.with_name(EMBEDDINGS_FILE)
    if emb_path.resolve() == out.resolve():
        raise PruneError(f"-o {out} is the embeddings table; write the selection to another file")
    images = find_images(dataset, image_role, subset)
    bar = Progress.of(progress)

    with folder_lock(out, sibling_lock_path(out)):
        previous = _read_previous(files) if out.exists() else None
        if previous is None and clusters > len(images):
            from harvest.cluster import ClusteringError

            # Before embedding: minutes of work would end in this error.
            raise ClusteringError(
                f"--clusters {clusters} is more than the {len(images)} images of {dataset}; "
                f"ask for at most {len(images)} clusters"
            )
        spec = weights
        if spec is None and embedder is None:
            spec = _recorded_spec(emb_path) or WeightsSpec()
        with folder_lock(emb_path, sibling_lock_path(emb_path)):
            if embedder is not None:
                given = embedder
                load: Any = lambda: given  # noqa: E731
                record: dict[str, Any] = {"model": embedder.model_name, "custom": True}
                expected = None
            else:
                assert spec is not None
                from harvest.embed import resolve_weights

                resolved = resolve_weights(spec)
                expected = (resolved.label, resolved.sha256)
                load = embedder_loader(spec, device=device, precision=precision)
                record = weights_record(spec)
            embedded = embed_dataset(
                images,
                emb_path,
                load,
                weights_record=record,
                expected=expected,
                batch_size=batch_size,
                progress=bar,
                started=started,
                dask=dask_plan(workers, scheduler, spec, device, embedder),
            )
        table, _meta = read_embeddings(emb_path)
        emb = table.take([i.rel for i in images])
        if previous is None:
            selection, runs, new_mask = _fresh(emb, clusters, seed, strategy, kmeans)
            meta_runs: list[dict[str, Any]] = []
            clusters_initial = clusters
        else:
            _check_previous(previous, files.selection, emb, clusters, seed, strategy, grow)
            selection, runs, new_mask = _incremental(previous, emb, seed, strategy, grow, kmeans)
            meta_runs = list(previous.meta.get("runs", []))
            clusters_initial = int(previous.meta["clusters_initial"])
        run_no = len(meta_runs) + 1
        n_new = int(new_mask.sum())
        n_new_selected = int((selection.selected & new_mask).sum())
        changed = previous is None or n_new > 0 or grow > 0 or len(emb) != len(previous.keys)
        if changed:
            meta_runs.append(
                {
                    "run": run_no,
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "n_new": n_new,
                    "n_new_selected": n_new_selected,
                    "grow": grow,
                    "harvest_version": __version__,
                }
            )
            meta = {
                "harvest_version": __version__,
                "dataset": str(Path(dataset).resolve()),
                "embeddings": str(emb_path.resolve()),
                "model": emb.model,
                "weights_sha256": emb.weights_sha256,
                "image_role": image_role,
                "seed": seed,
                "strategy": strategy,
                "kmeans": kmeans,
                "clusters_initial": clusters_initial,
                "n_clusters": selection.n_clusters,
                "n_empty": selection.n_empty,
                "runs": meta_runs,
            }
            # Centroids first, selection last: the selection is the commit point.
            _write_centroids(files.centroids, selection.centroids, previous, run_no)
            _write_selection(files.selection, emb, selection, runs, meta)
            report = _report(emb, selection, meta)
            atomic_write_bytes(files.report_json, json.dumps(report, indent=2).encode())
            atomic_write_bytes(files.report_md, _report_md(report, files).encode())
            atomic_write_bytes(files.contact_sheet, contact_sheet(images, emb, selection))
    return PruneSummary(
        files,
        len(emb),
        selection.n_clusters,
        int(selection.selected.sum()),
        selection.n_empty,
        n_new,
        n_new_selected,
        embedded.n_embedded,
        previous is not None,
        time.perf_counter() - started,
        embedded.path_note,
    )


def _recorded_spec(emb_path: Path) -> WeightsSpec | None:
    """The weights an existing embeddings table was made with (None: no usable record)."""
    from harvest.embed import WeightsSpec
    from harvest.stages._embedding import load_done

    try:
        _done, meta = load_done(emb_path)
    except Exception:  # noqa: BLE001 - an unreadable table is reported when it is read
        return None
    record = (meta or {}).get("weights")
    if not isinstance(record, dict):
        return None
    if record.get("custom"):
        raise PruneError(
            f"{emb_path} was made by a custom embedder (Python API); pass --model and "
            "--pretrained/--checkpoint to embed with CLIP into another --embeddings file"
        )
    checkpoint = record.get("checkpoint")
    return WeightsSpec(
        model=str(record.get("model")),
        pretrained=record.get("pretrained"),
        checkpoint=Path(checkpoint) if checkpoint else None,
    )


def _fresh(
    emb: Embeddings, clusters: int, seed: int, strategy: str, kmeans: str
) -> tuple[Selection, np.ndarray, np.ndarray]:
    from harvest.cluster import KMeansSettings, cluster_and_select

    selection = cluster_and_select(
        emb.vectors,
        list(emb.rel),
        settings=KMeansSettings(n_clusters=clusters, seed=seed, backend=kmeans),
        strategy=strategy,
    )
    n = len(emb)
    return selection, np.ones(n, np.int32), np.ones(n, bool)


def _incremental(
    prev: _Previous, emb: Embeddings, seed: int, strategy: str, grow: int, kmeans: str
) -> tuple[Selection, np.ndarray, np.ndarray]:
    """Old rows (still in the dataset) first, then the new ones, as extend_selection wants."""
    from harvest.cluster import KMeansSettings, Selection, extend_selection

    current = set(emb.rel)
    where = {k: i for i, k in enumerate(prev.keys)}
    old_keys = [k for k in prev.keys if k in current]
    old_ix = np.array([where[k] for k in old_keys], dtype=np.int64)
    new_keys = [k for k in emb.rel if k not in where]
    if grow and not new_keys:
        raise PruneError("--grow adds clusters fitted on new images, and there are none")
    labels = prev.labels[old_ix]
    k_total = prev.centroids.shape[0]
    sizes = np.bincount(labels, minlength=k_total)
    previous = Selection(
        centroids=prev.centroids,
        labels=labels,
        distances=prev.distances[old_ix],
        selected=prev.selected[old_ix],
        n_clusters=k_total,
        n_empty=int((sizes == 0).sum()),
    )
    new = emb.take(new_keys)
    settings = KMeansSettings(n_clusters=max(grow, 1), seed=seed, backend=kmeans) if grow else None
    selection = extend_selection(
        previous,
        new.vectors,
        new_keys,
        seed=seed,
        strategy=strategy,
        grow=grow,
        settings=settings,
        old_keys=old_keys,
    )
    # Back to the embeddings' order (sorted by path) for the table.
    order_keys = old_keys + new_keys
    pos = {k: i for i, k in enumerate(order_keys)}
    ix = np.array([pos[k] for k in emb.rel], dtype=np.int64)
    next_run = int(prev.runs.max(initial=0)) + 1
    runs = np.concatenate([prev.runs[old_ix], np.full(len(new_keys), next_run, np.int32)])
    new_mask = np.concatenate([np.zeros(len(old_keys), bool), np.ones(len(new_keys), bool)])
    reordered = Selection(
        centroids=selection.centroids,
        labels=selection.labels[ix],
        distances=selection.distances[ix],
        selected=selection.selected[ix],
        n_clusters=selection.n_clusters,
        n_empty=selection.n_empty,
    )
    return reordered, runs[ix], new_mask[ix]


def _check_previous(
    prev: _Previous,
    path: Path,
    emb: Embeddings,
    clusters: int,
    seed: int,
    strategy: str,
    grow: int,
) -> None:
    m = prev.meta
    fix = "or write a new selection with another -o"
    if (m.get("model"), m.get("weights_sha256")) != (emb.model, emb.weights_sha256):
        raise PruneError(
            f"{path} was made with embeddings of {m.get('model')}, the embeddings table holds "
            f"{emb.model}; use the same model {fix}"
        )
    if clusters not in (int(m["clusters_initial"]), int(m["n_clusters"])):
        raise PruneError(
            f"{path} was made with --clusters {m['clusters_initial']} "
            f"({m['n_clusters']} clusters now); pass --clusters {m['clusters_initial']} "
            f"(and --grow K to add clusters) {fix}"
        )
    if int(m["seed"]) != seed:
        raise PruneError(f"{path} was made with --seed {m['seed']}; pass --seed {m['seed']} {fix}")
    if m["strategy"] != strategy:
        raise PruneError(
            f"{path} was made with --strategy {m['strategy']}; pass --strategy "
            f"{m['strategy']} {fix}"
        )


# --- files --------------------------------------------------------------------------------------


def _read_previous(files: SelectionFiles) -> _Previous:
    import pyarrow.parquet as pq

    from harvest.geoio import read_harvest_metadata

    fix = "remove it (and its .centroids.parquet) to select again"
    try:
        table = pq.read_table(files.selection)
        meta = read_harvest_metadata(files.selection)
        cent = pq.read_table(files.centroids)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        msg = " ".join(str(exc).split())[:200]
        raise PruneError(f"cannot read the selection {files.selection}: {msg}; {fix}") from None
    need = ("n_clusters", "clusters_initial", "seed", "strategy")
    if any(k not in meta for k in need):
        raise PruneError(f"{files.selection} is not a selection harvest wrote; {fix}")
    k_total = int(meta["n_clusters"])
    n_cent = cent.num_rows
    if n_cent < k_total:
        raise PruneError(f"{files.centroids} holds {n_cent} of {k_total} centroids; {fix}")
    values = np.asarray(
        cent.column("centroid").combine_chunks().flatten().to_numpy(zero_copy_only=False),
        dtype=np.float32,
    )
    # Only the centroids the selection committed: a killed --grow run may have left more.
    centroids = values.reshape(n_cent, -1)[:k_total]
    return _Previous(
        keys=tuple(table.column("path").to_pylist()),
        labels=np.asarray(table.column("cluster").to_numpy(), np.int64),
        distances=np.asarray(table.column("distance").to_numpy(), np.float32),
        selected=np.asarray(table.column("selected").to_pylist(), bool),
        runs=np.asarray(table.column("run").to_numpy(), np.int32),
        centroids=centroids,
        meta=meta,
    )


def _write_centroids(
    path: Path, centroids: np.ndarray, previous: _Previous | None, run_no: int
) -> None:
    import pyarrow as pa

    from harvest.geoio import write_geoparquet

    k, dim = centroids.shape
    k_old = previous.centroids.shape[0] if previous is not None else 0
    runs = np.full(k, run_no, np.int32)
    if previous is not None and path.exists():
        import pyarrow.parquet as pq

        old_runs = np.asarray(pq.read_table(path).column("run").to_numpy(), np.int32)[:k_old]
        runs[: len(old_runs)] = old_runs
    flat = pa.array(np.ascontiguousarray(centroids, np.float32).reshape(-1))
    table = pa.table(
        {
            "cluster": pa.array(np.arange(k, dtype=np.int64)),
            "centroid": pa.FixedSizeListArray.from_arrays(flat, dim),
            "run": pa.array(runs),
        }
    )
    write_geoparquet(path, table, extra_metadata={"harvest_version": __version__, "dim": dim})


def _selection_table(emb: Embeddings, sel: Selection, runs: np.ndarray) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {
            "roi_id": pa.array(emb.roi_id, pa.string()),
            "image": pa.array(emb.image, pa.string()),
            "path": pa.array(emb.rel, pa.string()),
            "role": pa.array(emb.role, pa.string()),
            "cluster": pa.array(np.asarray(sel.labels, np.int64)),
            "distance": pa.array(np.asarray(sel.distances, np.float32)),
            "selected": pa.array(np.asarray(sel.selected, bool)),
            "run": pa.array(np.asarray(runs, np.int32)),
            "geometry": pa.array([f or None for f in emb.footprints], pa.binary()),
        }
    )


def _write_selection(
    path: Path, emb: Embeddings, sel: Selection, runs: np.ndarray, meta: dict[str, Any]
) -> None:
    from harvest.geoio import write_geoparquet

    valid = [f for f in emb.footprints if f]
    bbox = None
    if valid:
        from shapely import from_wkb, total_bounds

        bbox = [float(v) for v in total_bounds(from_wkb(valid))]
    write_geoparquet(
        path,
        _selection_table(emb, sel, runs),
        geometry_types=["Polygon"],
        bbox=bbox,
        extra_metadata=meta,
    )


# --- report -------------------------------------------------------------------------------------

_SIZE_BUCKETS = ((11, 20), (21, 50), (51, 100), (101, None))


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Clusters per member count: exact up to 10, then ranges (``"0"`` = empty clusters)."""
    counts = Counter(int(s) for s in sizes)
    out = {str(s): counts.get(s, 0) for s in range(0, 11) if counts.get(s, 0) or s <= 1}
    for lo, hi in _SIZE_BUCKETS:
        n = sum(c for s, c in counts.items() if s >= lo and (hi is None or s <= hi))
        if n:
            out[f"{lo}-{hi}" if hi is not None else f">{lo - 1}"] = n
    return out


def _report(emb: Embeddings, sel: Selection, meta: dict[str, Any]) -> dict[str, Any]:
    sizes = np.bincount(sel.labels, minlength=sel.n_clusters) if len(emb) else np.zeros(0)
    n_sel = int(sel.selected.sum())
    return {
        "n_images": len(emb),
        "n_clusters": int(sel.n_clusters),
        "n_selected": n_sel,
        "n_removed": len(emb) - n_sel,
        "removed_percent": round(100.0 * (len(emb) - n_sel) / max(len(emb), 1), 2),
        "n_empty_clusters": int(sel.n_empty),
        "largest_cluster": int(sizes.max(initial=0)),
        "cluster_size_histogram": size_histogram(sizes),
        **{k: meta[k] for k in ("model", "seed", "strategy", "clusters_initial", "runs")},
    }


def _report_md(report: dict[str, Any], files: SelectionFiles) -> str:
    lines = [
        f"# Diversity pruning: {files.selection.name}",
        "",
        f"- images: {report['n_images']}",
        f"- clusters: {report['n_clusters']} ({report['n_empty_clusters']} empty)",
        f"- kept: {report['n_selected']} (one per non-empty cluster); removed: "
        f"{report['n_removed']} ({report['removed_percent']} %)",
        f"- model: {report['model']}; seed {report['seed']}; choice per cluster: "
        f"{report['strategy']}",
        "",
        "## Cluster sizes",
        "",
        "| images in the cluster | clusters |",
        "|---:|---:|",
    ]
    lines += [f"| {size} | {n} |" for size, n in report["cluster_size_histogram"].items()]
    lines += [
        "",
        "## Contact sheet",
        "",
        "A few of the largest clusters, one row each, members by distance to the centroid; the "
        "kept image has the orange frame.",
        "",
        f"![clusters]({files.contact_sheet.name})",
        "",
        "## Runs",
        "",
        "| run | date | new images | newly kept | clusters added |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['run']} | {r['date']} | {r['n_new']} | {r['n_new_selected']} | {r['grow']} |"
        for r in report["runs"]
    ]
    return "\n".join(lines) + "\n"


def _display(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) reflectance -> (H, W, 3) uint8 with a 2-98 % stretch per band."""
    out = np.zeros((rgb.shape[1], rgb.shape[2], 3), np.uint8)
    for b in range(3):
        band = rgb[b]
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [2, 98])
        scaled = (band - lo) / (hi - lo) if hi > lo else np.full_like(band, 0.5)
        out[..., b] = (np.nan_to_num(np.clip(scaled, 0, 1), nan=0.0) * 255).astype(np.uint8)
    return out


def contact_sheet(
    images: list[DatasetImage],
    emb: Embeddings,
    sel: Selection,
    *,
    n_clusters: int = CONTACT_CLUSTERS,
    n_members: int = CONTACT_MEMBERS,
) -> bytes:
    """A PNG: one row per cluster (the largest ones), members by distance, the kept one framed.

    Args:
        images: The dataset's images (for their paths).
        emb: Their embeddings (the rows of ``sel``).
        sel: The selection.
        n_clusters: Rows to draw.
        n_members: Images per row at most (the kept one is always among them).
    """
    from PIL import Image, ImageDraw

    by_rel = {i.rel: i for i in images}
    sizes = np.bincount(sel.labels, minlength=sel.n_clusters) if len(emb) else np.zeros(0, int)
    order = sorted(range(len(sizes)), key=lambda c: (-int(sizes[c]), c))
    chosen = [c for c in order if sizes[c] > 0][:n_clusters]
    pad, label_h, frame = 6, 16, 4
    cell = THUMB_PX + 2 * frame
    widest = max((min(int(sizes[c]), n_members) for c in chosen), default=1)
    width = pad + widest * (cell + pad)
    height = pad + max(len(chosen), 1) * (cell + label_h + pad)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, c in enumerate(chosen):
        members = np.flatnonzero(sel.labels == c)
        members = members[
            np.lexsort((np.array([emb.rel[i] for i in members]), sel.distances[members]))
        ]
        shown = list(members[:n_members])
        kept = [int(i) for i in members if sel.selected[i]]
        if kept and kept[0] not in shown:
            shown[-1] = kept[0]
        y = pad + row * (cell + label_h + pad)
        draw.text(
            (pad, y),
            f"cluster {c}: {int(sizes[c])} image{'' if sizes[c] == 1 else 's'}",
            fill=(0, 0, 0),
        )
        for col, i in enumerate(shown):
            x = pad + col * (cell + pad)
            is_kept = bool(sel.selected[i])
            colour = (255, 140, 0) if is_kept else (200, 200, 200)
            draw.rectangle((x, y + label_h, x + cell - 1, y + label_h + cell - 1), fill=colour)
            if not is_kept:
                draw.rectangle(
                    (x + 1, y + label_h + 1, x + cell - 2, y + label_h + cell - 2),
                    fill=(255, 255, 255),
                )
            thumb = Image.fromarray(_display(read_rgb(by_rel[emb.rel[i]].path).rgb))
            thumb = thumb.resize((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR)
            sheet.paste(thumb, (x + frame, y + label_h + frame))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
