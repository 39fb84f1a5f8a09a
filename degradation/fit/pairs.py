"""The record the fits take: one co-located LR/HR chip as arrays, and its misregistration.

A :class:`PairChip` is a pure value (no paths, no files): whoever reads chips from disk (the
``harvest degradation fit`` stage) builds them, and everything in :mod:`degradation.fit` works
on them only.

Registration (:func:`registration_shifts`): the LR content is displaced by a misregistration
estimated elsewhere (``shift_m``). A Sentinel-2 scene has one misregistration, so by default
every chip takes the median estimate of the chips of its scene (``"scene"``), steadier than any
single chip's; ``"chip"`` uses each chip's own, ``"none"`` none. Chips whose LR was already
moved by its estimate (``shift_corrected``) get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from degradation.errors import DegradationError

#: How the misregistration of each chip is taken (see :func:`registration_shifts`).
SHIFT_MODES = ("scene", "chip", "none")


@dataclass(frozen=True, eq=False)
class PairChip:
    """One co-located LR/HR chip.

    Attributes:
        roi_id: the chip's id (its folder name in a fetch folder).
        scene_id: the LR (Sentinel-2) scene id; chips of one scene share its misregistration.
        split: "train" or "test".
        hr: HR reflectance, float32 [C, H, W].
        lr: LR reflectance, float32 [C, H / factor, W / factor].
        shift_m: estimated displacement of the LR content (east, north), metres.
        shift_corrected: the LR was already moved by its estimate.
        hr_gsd_m: HR pixel size, metres.
    """

    roi_id: str
    scene_id: str
    split: str
    hr: np.ndarray
    lr: np.ndarray
    shift_m: tuple[float, float]
    shift_corrected: bool
    hr_gsd_m: float


def registration_shifts(
    chips: Sequence[PairChip], mode: str = "scene"
) -> list[tuple[float, float]]:
    """The misregistration (east, north metres) applied to each chip (see the module doc).

    Raises:
        DegradationError: an unknown mode.
    """
    if mode not in SHIFT_MODES:
        raise DegradationError(f"shift mode must be one of {SHIFT_MODES}, got {mode!r}")
    if mode == "none":
        return [(0.0, 0.0)] * len(chips)
    if mode == "chip":
        return [(0.0, 0.0) if c.shift_corrected else c.shift_m for c in chips]
    by_scene: dict[str, list[tuple[float, float]]] = {}
    for c in chips:
        if not c.shift_corrected:
            by_scene.setdefault(c.scene_id, []).append(c.shift_m)
    median: dict[str, tuple[float, float]] = {}
    for k, s in by_scene.items():
        east, north = np.median(np.array(s), axis=0)
        median[k] = (float(east), float(north))
    return [(0.0, 0.0) if c.shift_corrected else median[c.scene_id] for c in chips]
