"""An in-memory catalog over SceneRefs, and the exact filter every backend ends with.

Servers and SQL prefilters answer with bounding boxes and coarse windows; :func:`filter_scenes`
applies the exact request (collection, inclusive time window, cloud limit, footprint
intersection) to what came back. :class:`MemoryCatalog` is that filter over a fixed list of
scenes: the catalog of already-parsed items (tests, the demo world, a cached search).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import shapely

from harvest.backends.base import SceneRef, SearchRequest, SearchResult, SearchStats, dedupe_scenes


def filter_scenes(scenes: Iterable[SceneRef], request: SearchRequest) -> tuple[SceneRef, ...]:
    """The scenes that answer ``request`` exactly, each once, sorted by (collection, time, id).

    A scene qualifies when its collection is requested, its datetime lies in
    ``[request.start, request.end]``, its cloud cover is unknown or <= ``request.max_cloud_pct``,
    and its footprint intersects at least one request footprint (tested with an STRtree).
    """
    wanted = set(request.collections)
    limit = request.max_cloud_pct
    kept = [
        s
        for s in dedupe_scenes(scenes)
        if s.collection in wanted
        and request.start <= s.datetime <= request.end
        and (limit is None or s.cloud_cover_pct is None or s.cloud_cover_pct <= limit)
    ]
    if not kept:
        return ()
    tree = shapely.STRtree([f.geometry for f in request.footprints])
    scene_geoms = np.array([s.geometry for s in kept], dtype=object)
    scene_idx, _ = tree.query(scene_geoms, predicate="intersects")
    hit = np.unique(scene_idx)
    return tuple(
        sorted((kept[i] for i in hit), key=lambda s: (s.collection, s.datetime, s.item_id))
    )


class MemoryCatalog:
    """A :class:`~harvest.backends.base.Catalog` over scenes already in memory (no requests)."""

    def __init__(self, scenes: Iterable[SceneRef], provider: str = "memory") -> None:
        self._scenes = dedupe_scenes(scenes)
        self._provider = provider

    @property
    def provider(self) -> str:
        """Name of the vocabulary the scenes use."""
        return self._provider

    def search(self, request: SearchRequest, *, progress: bool = False) -> SearchResult:
        """Filter the held scenes by ``request``; ``progress`` is accepted and unused (instant)."""
        started = time.perf_counter()
        found = filter_scenes(self._scenes, request)
        stats = SearchStats(
            n_footprints=len(request.footprints),
            n_groups=1,
            n_requests=0,
            n_items=len(found),
            n_scenes=len(found),
            seconds=time.perf_counter() - started,
        )
        return SearchResult(scenes=found, stats=stats)
