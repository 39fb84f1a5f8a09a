"""Dataset layouts: one writer per layout a recipe can name (:class:`harvest.recipes.Layout`).

``sen2naip-cross-sensor``: SEN2NAIP's published layout (:mod:`harvest.writers.sen2naip`).
``generic``: one COG per band group + metadata.json (:mod:`harvest.writers.generic`), for the
recipes whose published layout is not written yet (SEN2VENuS, SEN1-2).
"""

from __future__ import annotations

from harvest.recipes import Layout
from harvest.writers.base import ChipContext, ChipData, ChipWriter, GroupChip
from harvest.writers.generic import GenericWriter
from harvest.writers.sen2naip import Sen2naipWriter

__all__ = ["ChipContext", "ChipData", "ChipWriter", "GroupChip", "writer_for"]

_WRITERS: dict[Layout, ChipWriter] = {
    Layout.SEN2NAIP_CROSS_SENSOR: Sen2naipWriter(),
    Layout.GENERIC: GenericWriter(),
}


def writer_for(layout: Layout | str) -> ChipWriter:
    """The writer of a layout (every :class:`~harvest.recipes.Layout` has one)."""
    return _WRITERS[Layout(layout)]
