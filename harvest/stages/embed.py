"""``harvest embed DATASET -o embeddings.parquet``: one CLIP image embedding per image.

DATASET is a folder written by ``harvest fetch`` or ``harvest degrade``, or any folder of
GeoTIFFs (:func:`harvest.stages._embedding.find_images` says which files count). Each image's
display bands (red, green, blue by band description) are stretched, resized and normalised
the way CLIP expects and run through the image tower of an open_clip model
(:class:`harvest.embed.ClipEmbedder`: weights from the local Hugging Face cache or a local
checkpoint, never downloaded unless asked; the fastest numerical path that matches fp32).

The output is GeoParquet, one row per image: ``roi_id``, ``image``, ``path`` (relative to
DATASET), ``role``, ``model``, ``weights_sha256``, ``embedding`` (float32, L2-normalised) and the
image footprint as ``geometry`` (EPSG:4326). A second run skips the images already embedded,
also after an interruption; one run at a time per output (a lock file beside it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.lock import folder_lock, sibling_lock_path
from harvest.progress import NO_PROGRESS, Progress
from harvest.stages._embedding import (
    EmbedResult,
    ImageEmbedder,
    dask_plan,
    embed_dataset,
    embedder_loader,
    find_images,
    weights_record,
)

if TYPE_CHECKING:
    from harvest.embed import WeightsSpec


@dataclass(frozen=True)
class EmbedSummary:
    """What :func:`run` did."""

    result: EmbedResult

    def line(self) -> str:
        """One-line summary for the CLI."""
        r = self.result
        return (
            f"{r.n_embedded} image{'' if r.n_embedded == 1 else 's'} embedded with {r.model}, "
            f"{r.n_done_before} done before, in {r.seconds:.1f} s -> {r.out_path}"
        )


def run(
    dataset: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    weights: WeightsSpec | None = None,
    image_role: str = "hr",
    subset: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 32,
    embedder: ImageEmbedder | None = None,
    progress: Progress | bool = NO_PROGRESS,
) -> EmbedSummary:
    """Embed every image of ``dataset`` not yet in ``out_path``.

    Args:
        dataset: The dataset folder (or a folder of GeoTIFFs).
        out_path: The embeddings GeoParquet to write (created or completed).
        weights: Which open_clip model and weights (default ViT-B-32, laion2b_s34b_b79k).
        image_role: ``hr`` (default) or ``lr``: which image of each chip.
        subset: Only the images of this layout folder (``cross-sensor``, ``kept`` or
            ``synthetic``); default: every image of the dataset.
        workers: Embed on a local Dask cluster of this many worker processes (1: no Dask).
        scheduler: Embed on the existing Dask cluster at this address instead.
        device: ``cpu`` or ``cuda``.
        precision: ``auto`` (probe the fastest path that matches fp32) or a named path.
        batch_size: Images per forward pass.
        embedder: Use this embedder instead of loading CLIP (the Python API's way to plug in
            another feature extractor; ``weights`` is then ignored).
        progress: Show progress bars.

    Raises:
        EmbedError: no images, an unreadable image, or ``out_path`` holds another model's
            embeddings.
        WeightsError: the weights are not on this machine (one line saying how to get them).
        FolderLockedError: another run writes ``out_path``.
    """
    from harvest.embed import WeightsSpec

    started = time.perf_counter()
    out = Path(out_path)
    spec = weights or WeightsSpec()
    images = find_images(dataset, image_role, subset)
    if embedder is not None:
        given = embedder
        load: Any = lambda: given  # noqa: E731 - the loader protocol is a plain callable
        record: dict[str, Any] = {"model": embedder.model_name, "custom": True}
        expected = None
    else:
        from harvest.embed import resolve_weights

        # Fast (no model built): a missing file is reported at once, and a table of another
        # model is refused even when no image is left to embed.
        resolved = resolve_weights(spec)
        expected = (resolved.label, resolved.sha256)
        load = embedder_loader(spec, device=device, precision=precision)
        record = weights_record(spec)
    with folder_lock(out, sibling_lock_path(out)):
        result = embed_dataset(
            images,
            out,
            load,
            weights_record=record,
            expected=expected,
            batch_size=batch_size,
            progress=Progress.of(progress),
            started=started,
            dask=dask_plan(workers, scheduler, spec, device, embedder),
        )
    return EmbedSummary(result)
