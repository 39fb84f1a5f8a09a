"""SEN2NAIP's cross-sensor layout: ``cross-sensor/ROI/{LR,HR,SCL}.tif`` + metadata.json.

The files and metadata.json fields are those of :mod:`harvest.store` (module docstring) and
Table 1 of the SEN2NAIP paper; a recipe with this layout has one LR and one HR band group and
its SCL (if any) on the LR grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harvest import __version__
from harvest.qa import QaResult
from harvest.recipes import Layout, Recipe, Role
from harvest.store import (
    CROSS_SENSOR_DIR,
    SEN2NAIP_FILES,
    ChipFiles,
    read_chip_folder,
    write_chip_folder,
)
from harvest.writers.base import ChipContext, ChipData, GroupChip, footprint_fields, iso_time


class Sen2naipWriter:
    """The ``sen2naip-cross-sensor`` layout (:class:`harvest.writers.base.ChipWriter`)."""

    layout = Layout.SEN2NAIP_CROSS_SENSOR
    kept_dir = CROSS_SENSOR_DIR
    id_columns = ("s2_id", "naip_id")

    def files(self, recipe: Recipe) -> tuple[str, ...]:
        """``LR.tif``, ``HR.tif``, ``SCL.tif``, ``metadata.json``."""
        return SEN2NAIP_FILES

    def metadata(self, ctx: ChipContext, chip: ChipData, qa: QaResult) -> dict[str, Any]:
        """SEN2NAIP's Table 1 fields plus harvest's own."""
        lr, hr = ctx.lr, ctx.hr
        grids = ctx.grids
        s = qa.shift
        return {
            "roi_id": ctx.roi_id,
            "test": ctx.split,  # the paper's convention: the string "train" or "test"
            "split": ctx.split,
            "s2_id": lr.item_id,
            "s2_date": iso_time(lr),
            "s2_sen2cor_version": lr.processing_baseline,
            "s2_processing_baseline": lr.processing_baseline,
            "s2_view_off_nadir": lr.view_off_nadir_deg,
            "s2_view_sun_azimuth": lr.sun_azimuth_deg,
            "s2_view_sun_elevation": lr.sun_elevation_deg,
            "naip_id": hr.item_id,
            "naip_date": iso_time(hr),
            **footprint_fields(grids),
            "proj:transform": list(grids.lr.transform_tuple),
            "proj:shape": [grids.lr.height, grids.lr.width],
            "hr_proj:transform": list(grids.hr.transform_tuple),
            "hr_proj:shape": [grids.hr.height, grids.hr.width],
            "QA_1": qa.qa1_px,
            "QA_2": qa.qa2_deg,
            "dt_hours": ctx.dt_hours,
            "shift_dx_px": s.dx_px,
            "shift_dy_px": s.dy_px,
            "shift_east_m": s.east_m,
            "shift_north_m": s.north_m,
            "shift_method": s.method,
            "shift_corrected": ctx.shift_corrected,
            "hr_saturation": chip.of_role(Role.HR)[0].saturation,
            "lr_bands": list(ctx.recipe.lr.bands),
            "hr_bands": list(ctx.recipe.hr.bands),
            "reflectance": "float32, NaN = nodata",
            "recipe": ctx.recipe.name,
            "harvest_version": __version__,
            "config_hash": ctx.config_hash,
        }

    def write(
        self, out_dir: Path, roi_id: str, *, kept: bool, chip: ChipData, metadata: dict[str, Any]
    ) -> ChipFiles:
        """``LR.tif``, ``HR.tif``, ``SCL.tif`` (when there is one) and metadata.json."""
        (lr,), (hr,) = chip.of_role(Role.LR), chip.of_role(Role.HR)
        return write_chip_folder(
            out_dir,
            roi_id,
            kept=kept,
            lr=lr.data,
            lr_grid=lr.grid,
            lr_bands=lr.group.bands,
            hr=hr.data,
            hr_grid=hr.grid,
            hr_bands=hr.group.bands,
            scl=chip.scl,
            metadata=metadata,
        )

    def read(self, folder: Path, recipe: Recipe) -> tuple[ChipData, dict[str, Any]]:
        """The LR and HR groups (named as in ``recipe``), the SCL and metadata.json."""
        disk = read_chip_folder(folder)
        meta = disk.metadata
        groups = (
            GroupChip(Role.LR, recipe.lr.primary, False, disk.lr_grid, disk.lr),
            GroupChip(
                Role.HR,
                recipe.hr.primary,
                False,
                disk.hr_grid,
                disk.hr,
                meta.get("hr_saturation"),
            ),
        )
        return ChipData(groups, disk.scl, Role.LR), meta

    def requalified(self, metadata: dict[str, Any], qa: QaResult) -> dict[str, Any]:
        """QA_2 and, unless the LR was moved by the shift at fetch time, the shift and QA_1."""
        meta = dict(metadata)
        s = qa.shift
        if not meta.get("shift_corrected"):
            meta.update(
                shift_dx_px=s.dx_px,
                shift_dy_px=s.dy_px,
                shift_east_m=s.east_m,
                shift_north_m=s.north_m,
                shift_method=s.method,
                QA_1=qa.qa1_px,
            )
        meta["QA_2"] = qa.qa2_deg
        return meta

    def facts(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Split, ``s2_id``, ``naip_id``, ``proj:epsg`` and ``dt_hours``."""
        return {
            "split": metadata.get("split"),
            "lr_id": metadata.get("s2_id"),
            "hr_id": metadata.get("naip_id"),
            "epsg": metadata.get("proj:epsg"),
            "dt_hours": metadata.get("dt_hours"),
        }


def chip_split_of(meta: dict[str, Any]) -> str:
    """``train`` or ``test`` of a chip's metadata.json, in any form a SEN2NAIP folder holds it.

    The paper's ``test`` field holds the string ``"train"`` or ``"test"``; earlier harvest
    versions wrote a boolean there; harvest also writes ``split``. A chip without any is train.
    """
    value = meta.get("test")
    if isinstance(value, str) and value.strip().lower() in ("train", "test"):
        return value.strip().lower()
    if isinstance(value, bool):
        return "test" if value else "train"
    split = meta.get("split")
    if isinstance(split, str) and split in ("train", "test"):
        return split
    return "train"
