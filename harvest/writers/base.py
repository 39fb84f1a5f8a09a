"""What every chip writer takes and gives: a chip's band groups, its context, the protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from harvest.backends.base import SceneRef
from harvest.grid import ChipGrid, NestedChips, lonlat_transformer
from harvest.qa import GroupImage, QaResult
from harvest.recipes import BandGroup, Layout, Recipe, Role
from harvest.store import ChipFiles


@dataclass(frozen=True)
class GroupChip:
    """One band group of a chip: what was read, on which grid.

    Attributes:
        role: The sensor's role (``lr`` or ``hr``).
        group: The recipe's band group.
        sar: Whether the sensor is a SAR (values are sigma0 in dB, not reflectance).
        grid: The group's chip grid.
        data: ``[C, H, W]`` float32 values, NaN = nodata.
        saturation: Value at or above which a band saturates (8-bit sources), if any.
    """

    role: Role
    group: BandGroup
    sar: bool
    grid: ChipGrid
    data: npt.NDArray[np.float32]
    saturation: float | None = None

    def as_qa(self) -> GroupImage:
        """The group as :func:`harvest.qa.evaluate_groups` takes it."""
        g = self.group
        return GroupImage(
            self.role.value, g.name, g.bands, g.gsd_m, self.data, self.sar, self.saturation
        )


@dataclass(frozen=True)
class ChipData:
    """Every band group of one chip, and the Sentinel-2 scene classes if the recipe has them.

    Attributes:
        groups: LR groups then HR groups, each sensor's primary group first (recipe order).
        scl: SCL classes ``[H, W]`` (uint8, 0 = nodata) on the grid of ``scl_role``'s primary
            group; None when the recipe has no cloud mask or the scene lacks it.
        scl_role: Whose primary grid the SCL lies on.
    """

    groups: tuple[GroupChip, ...]
    scl: npt.NDArray[np.uint8] | None = None
    scl_role: Role = Role.LR

    def of_role(self, role: Role) -> tuple[GroupChip, ...]:
        """The groups of one sensor, primary first."""
        return tuple(g for g in self.groups if g.role is role)


@dataclass(frozen=True)
class ChipContext:
    """Where a chip comes from: what its metadata.json records besides pixels and QA.

    Attributes:
        roi_id: The ROI.
        split: ``"train"`` or ``"test"``.
        lr: The LR scene.
        hr: The HR scene.
        dt_hours: HR time minus LR time.
        grids: The chip's nested grids.
        recipe: The recipe.
        config_hash: The recipe's hash.
        shift_corrected: Whether the LR groups were moved by the estimated shift.
    """

    roi_id: str
    split: str
    lr: SceneRef
    hr: SceneRef
    dt_hours: float
    grids: NestedChips
    recipe: Recipe
    config_hash: str
    shift_corrected: bool


class ChipWriter(Protocol):
    """One dataset layout: how chips are written, read back and recorded.

    Attributes:
        layout: The layout's name in recipes.
        kept_dir: Folder of kept chips (rejected ones go to ``rejected/`` in every layout).
        id_columns: Manifest columns of the LR and HR scene ids.
    """

    layout: Layout
    kept_dir: str
    id_columns: tuple[str, str]

    def files(self, recipe: Recipe) -> tuple[str, ...]:
        """The files of a chip folder (each gets a ``sha256_<stem>`` manifest column)."""
        ...

    def metadata(self, ctx: ChipContext, chip: ChipData, qa: QaResult) -> dict[str, Any]:
        """The chip's metadata.json."""
        ...

    def write(
        self, out_dir: Path, roi_id: str, *, kept: bool, chip: ChipData, metadata: dict[str, Any]
    ) -> ChipFiles:
        """Write the chip folder atomically into the kept or rejected folder."""
        ...

    def read(self, folder: Path, recipe: Recipe) -> tuple[ChipData, dict[str, Any]]:
        """Read a chip folder back: its groups and its metadata.json.

        Raises:
            StoreError: a file is missing or unreadable.
        """
        ...

    def requalified(self, metadata: dict[str, Any], qa: QaResult) -> dict[str, Any]:
        """The metadata.json after ``harvest qa`` decided again with ``qa``."""
        ...

    def facts(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Split, scene ids, EPSG and dt_hours of a chip from its metadata.json.

        Keys are :class:`harvest.records.ChipRecord` fields.
        """
        ...


def iso_time(scene: SceneRef) -> str:
    """A scene's time as ISO 8601 with a ``Z``."""
    return scene.datetime.isoformat().replace("+00:00", "Z")


def footprint_fields(grids: NestedChips) -> dict[str, Any]:
    """``proj:epsg``, ``proj:geometry`` (CRS ring) and ``proj:centroid`` (lon/lat) of a chip."""
    left, bottom, right, top = grids.bounds
    cx, cy = (left + right) / 2.0, (bottom + top) / 2.0
    lon, lat = lonlat_transformer(grids.epsg).transform(cx, cy)
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    return {
        "proj:epsg": grids.epsg,
        "proj:geometry": {"type": "Polygon", "coordinates": [ring]},
        "proj:centroid": {"lat": lat, "lon": lon},
    }
