"""The generic per-chip layout: one COG per band group and a metadata.json with every decision.

For recipes whose published layout harvest does not write yet (SEN2VENuS, SEN1-2)::

    OUT/kept/ROI_xxxxx/lr_10m.tif       one float32 COG per band group, named <role>_<group>,
    OUT/kept/ROI_xxxxx/lr_20m.tif       band names as descriptions, NaN = nodata
    OUT/kept/ROI_xxxxx/hr_5m.tif
    OUT/kept/ROI_xxxxx/lr_scl.tif       uint8 Sentinel-2 SCL on its sensor's primary grid
    OUT/kept/ROI_xxxxx/metadata.json    scenes, grids, and the QA decision: checks, thresholds,
                                        band correspondence, metrics overall and per group
    OUT/rejected/ROI_xxxxx/...          the same for chips QA rejected (``harvest qa`` decides
                                        again on them without fetching)

The status files, manifest (with ``lr_id`` / ``hr_id`` columns) and ``run.json`` are those of
every layout (:mod:`harvest.store`). See docs/decisions/0005-generic-chip-layout.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from harvest import __version__
from harvest.backends.base import SceneRef
from harvest.errors import StoreError
from harvest.qa import QaResult
from harvest.recipes import Layout, Recipe, Role, SensorKind
from harvest.records import qa_metrics
from harvest.store import (
    KEPT_DIR,
    META_FILE,
    ChipFiles,
    RasterFile,
    read_raster,
    write_chip,
)
from harvest.writers.base import ChipContext, ChipData, GroupChip, footprint_fields, iso_time


def group_file(role: str, group: str) -> str:
    """File name of one band group: ``<role>_<group>.tif`` (``lr_10m.tif``)."""
    return f"{role}_{group}.tif"


def scl_file(role: str) -> str:
    """File name of the SCL classes of one sensor: ``<role>_scl.tif``."""
    return f"{role}_scl.tif"


def _scl_role(recipe: Recipe) -> Role | None:
    return next((role for role, s in recipe.sensors() if s.cloud_mask), None)


def _scene(scene: SceneRef) -> dict[str, Any]:
    return {
        "item_id": scene.item_id,
        "collection": scene.collection,
        "datetime": iso_time(scene),
        "platform": scene.platform,
        "processing_baseline": scene.processing_baseline,
        "view_off_nadir": scene.view_off_nadir_deg,
        "sun_azimuth": scene.sun_azimuth_deg,
        "sun_elevation": scene.sun_elevation_deg,
    }


def _qa_block(qa: QaResult, recipe: Recipe) -> dict[str, Any]:
    """Every QA decision: what was checked, with which limits, the numbers and the outcome."""
    return {
        "checks": [c.value for c in recipe.qa.checks],
        "correspondence": dict(recipe.qa.correspondence),
        **_decision(qa),
    }


def _decision(qa: QaResult) -> dict[str, Any]:
    return {
        "kept": qa.kept,
        "reasons": [r.value for r in qa.reasons],
        "thresholds": asdict(qa.thresholds),
        "metrics": qa_metrics(qa),
        "groups": [asdict(g) for g in qa.groups],
    }


class GenericWriter:
    """The ``generic`` layout (:class:`harvest.writers.base.ChipWriter`)."""

    layout = Layout.GENERIC
    kept_dir = KEPT_DIR
    id_columns = ("lr_id", "hr_id")

    def files(self, recipe: Recipe) -> tuple[str, ...]:
        """One COG per band group, the SCL's, then metadata.json."""
        names = [group_file(role, g.name) for role, s in recipe.sensors() for g in s.groups]
        role = _scl_role(recipe)
        if role is not None:
            names.append(scl_file(role))
        return (*names, META_FILE)

    def metadata(self, ctx: ChipContext, chip: ChipData, qa: QaResult) -> dict[str, Any]:
        """Scenes, footprint, every group's file and grid, and the QA decision."""
        recipe = ctx.recipe
        groups = {}
        for g in chip.groups:
            groups[f"{g.role.value}_{g.group.name}"] = {
                "file": group_file(g.role.value, g.group.name),
                "role": g.role.value,
                "group": g.group.name,
                "collection": (recipe.lr if g.role is Role.LR else recipe.hr).collection,
                "bands": list(g.group.bands),
                "gsd_m": g.group.gsd_m,
                "values": "sigma0 dB, float32" if g.sar else "reflectance, float32",
                "saturation": g.saturation,
                "proj:transform": list(g.grid.transform_tuple),
                "proj:shape": [g.grid.height, g.grid.width],
            }
        scl = None
        if chip.scl is not None:
            scl = {"file": scl_file(chip.scl_role.value), "role": chip.scl_role.value}
        return {
            "roi_id": ctx.roi_id,
            "split": ctx.split,
            "test": ctx.split == "test",
            "lr_id": ctx.lr.item_id,
            "hr_id": ctx.hr.item_id,
            "lr": _scene(ctx.lr),
            "hr": _scene(ctx.hr),
            "dt_hours": ctx.dt_hours,
            **footprint_fields(ctx.grids),
            "groups": groups,
            "scl": scl,
            "nodata": "NaN",
            "shift_corrected": ctx.shift_corrected,
            "qa": _qa_block(qa, recipe),
            "recipe": recipe.name,
            "layout": self.layout.value,
            "harvest_version": __version__,
            "config_hash": ctx.config_hash,
        }

    def write(
        self, out_dir: Path, roi_id: str, *, kept: bool, chip: ChipData, metadata: dict[str, Any]
    ) -> ChipFiles:
        """Every group's COG, the SCL's and metadata.json, into ``kept/`` or ``rejected/``."""
        rasters = [
            RasterFile(
                group_file(g.role.value, g.group.name),
                g.data.astype(np.float32, copy=False),
                g.grid,
                g.group.bands,
                np.nan,
            )
            for g in chip.groups
        ]
        if chip.scl is not None:
            grid = chip.of_role(chip.scl_role)[0].grid
            rasters.append(
                RasterFile(
                    scl_file(chip.scl_role.value),
                    chip.scl[None].astype(np.uint8),
                    grid,
                    ("SCL",),
                    0,
                )
            )
        return write_chip(
            out_dir, roi_id, kept=kept, rasters=rasters, metadata=metadata, kept_dir=self.kept_dir
        )

    def read(self, folder: Path, recipe: Recipe) -> tuple[ChipData, dict[str, Any]]:
        """Every group of ``recipe`` from its COG, the SCL if written, and metadata.json.

        Raises:
            StoreError: a file is missing or unreadable.
        """
        try:
            meta = json.loads((folder / META_FILE).read_text())
            groups = []
            for role, sensor in recipe.sensors():
                for g in sensor.groups:
                    data, grid = read_raster(folder / group_file(role.value, g.name))
                    info = meta.get("groups", {}).get(f"{role.value}_{g.name}", {})
                    sar = sensor.kind is SensorKind.SAR
                    groups.append(GroupChip(role, g, sar, grid, data, info.get("saturation")))
            scl_role = _scl_role(recipe)
            scl = None
            if scl_role is not None and (folder / scl_file(scl_role.value)).exists():
                scl = read_raster(folder / scl_file(scl_role.value))[0][0]
        except Exception as exc:
            raise StoreError(f"chip folder {folder} is incomplete or unreadable: {exc}") from exc
        return ChipData(tuple(groups), scl, scl_role or Role.LR), meta

    def requalified(self, metadata: dict[str, Any], qa: QaResult) -> dict[str, Any]:
        """The metadata with the new QA decision (checks and correspondence kept)."""
        meta = dict(metadata)
        meta["qa"] = {**dict(meta.get("qa") or {}), **_decision(qa)}
        return meta

    def facts(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Split, ``lr_id``, ``hr_id``, ``proj:epsg`` and ``dt_hours``."""
        return {
            "split": metadata.get("split"),
            "lr_id": metadata.get("lr_id"),
            "hr_id": metadata.get("hr_id"),
            "epsg": metadata.get("proj:epsg"),
            "dt_hours": metadata.get("dt_hours"),
        }
