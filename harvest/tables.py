"""The search stage's tables: ``pairs.parquet`` and ``pairs.dropped.parquet``.

``pairs.parquet`` is GeoParquet (``geometry`` = the ROI point, EPSG:4326) with one row per
ROI and chosen pair (rank 0), or one row per candidate pair when the search kept them all. Each
row carries the ROI (id, point, UTM zone, MGRS tile), the LR chip grid (``chip_epsg``,
``chip_transform`` as the 6-tuple ``a, b, c, d, e, f``, ``chip_px``) and every column of
:meth:`~harvest.pairing.PairCandidate.to_record`: both scenes in full, asset hrefs (unsigned)
with scale, offset, nodata and dtype in ``lr_assets_json`` / ``hr_assets_json``. That is all the
fetch stage needs to read pixels without asking the catalog again.

The parquet key-value metadata ``harvest`` holds a JSON :class:`SearchMetadata` (recipe name and
config hash, catalog, window, requests made, harvest version).

``pairs.dropped.parquet`` (:func:`dropped_path`) lists the ROIs without a pair: ``roi_id``,
``reason`` (a :class:`~harvest.pairing.DropReason` value), ``detail`` (one sentence) and the
numbers of intersecting LR and HR scenes.

Both files are written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from harvest.errors import InputFileError
from harvest.geoio import (
    HARVEST_METADATA_KEY,
    first_line,
    require_input_file,
    write_geoparquet,
)
from harvest.ids import check_ids
from harvest.pairing import DroppedRoi, DropReason, PairCandidate

PAIRS_STAGE = "search"
PAIRS_SCHEMA_VERSION = 1
"""Bumped whenever the columns of pairs.parquet change meaning."""

_TS = pa.timestamp("us", tz="UTC")


def scene_fields(prefix: str) -> list[pa.Field]:
    """The columns of one scene (:meth:`SceneRef.to_record`), each prefixed ``PREFIX_``."""
    return [
        pa.field(f"{prefix}_item_id", pa.string(), nullable=False),
        pa.field(f"{prefix}_collection", pa.string(), nullable=False),
        pa.field(f"{prefix}_provider", pa.string(), nullable=False),
        pa.field(f"{prefix}_datetime", _TS, nullable=False),
        pa.field(f"{prefix}_footprint", pa.binary(), nullable=False),
        pa.field(f"{prefix}_bbox_xmin", pa.float64()),
        pa.field(f"{prefix}_bbox_ymin", pa.float64()),
        pa.field(f"{prefix}_bbox_xmax", pa.float64()),
        pa.field(f"{prefix}_bbox_ymax", pa.float64()),
        pa.field(f"{prefix}_cloud_cover_pct", pa.float64()),
        pa.field(f"{prefix}_platform", pa.string()),
        pa.field(f"{prefix}_epsg", pa.int64()),
        pa.field(f"{prefix}_processing_baseline", pa.string()),
        pa.field(f"{prefix}_view_off_nadir_deg", pa.float64()),
        pa.field(f"{prefix}_sun_azimuth_deg", pa.float64()),
        pa.field(f"{prefix}_sun_elevation_deg", pa.float64()),
        pa.field(f"{prefix}_mgrs_tile", pa.string()),
        pa.field(f"{prefix}_gsd_m", pa.float64()),
        pa.field(f"{prefix}_assets_json", pa.string(), nullable=False),
    ]


PAIRS_SCHEMA = pa.schema(
    [
        pa.field("roi_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("geometry", pa.binary(), nullable=False),
        pa.field("lon_deg", pa.float64(), nullable=False),
        pa.field("lat_deg", pa.float64(), nullable=False),
        pa.field("utm_epsg", pa.int32(), nullable=False),
        pa.field("mgrs_tile", pa.string()),
        pa.field("chip_id", pa.string(), nullable=False),
        pa.field("chip_epsg", pa.int32(), nullable=False),
        pa.field("chip_transform", pa.list_(pa.float64(), 6), nullable=False),
        pa.field("chip_px", pa.int32(), nullable=False),
        pa.field("dt_hours", pa.float64(), nullable=False),
        pa.field("lr_coverage_pct", pa.float64(), nullable=False),
        pa.field("hr_coverage_pct", pa.float64(), nullable=False),
        pa.field("cloud_score_pct", pa.float64(), nullable=False),
        pa.field("view_score_deg", pa.float64(), nullable=False),
        *scene_fields("lr"),
        *scene_fields("hr"),
    ]
)
"""Columns of pairs.parquet, in order."""

DROPPED_SCHEMA = pa.schema(
    [
        pa.field("roi_id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("n_lr_scenes", pa.int32(), nullable=False),
        pa.field("n_hr_scenes", pa.int32(), nullable=False),
    ]
)
"""Columns of pairs.dropped.parquet, in order."""


@dataclass(frozen=True)
class SearchMetadata:
    """How a pairs table was made (stored as JSON in the parquet metadata).

    Attributes:
        recipe: Recipe name.
        recipe_hash: :func:`~harvest.config.config_hash` of the recipe.
        catalog: The ``--catalog`` value (provider name, URL or path).
        provider: Provider profile whose vocabulary the scenes use.
        start: First day of the search window (ISO date, inclusive).
        end: Last day of the search window (ISO date, inclusive).
        n_requests: Requests sent to the catalog (retries included; one SQL query per
            collection for stac-geoparquet).
        n_rois: ROIs searched.
        all_candidates: Whether every candidate pair was kept (else rank 0 only).
        harvest_version: Version of harvest that wrote the table.
        rois: Path of the ROI table searched.
        catalog_kind: ``stac-api``, ``stac-geoparquet`` or ``earth-engine``: whether the hrefs
            come from a remote catalog (:mod:`harvest.hrefs`). Empty in tables written before
            it was recorded: :attr:`kind` infers it then.
    """

    recipe: str
    recipe_hash: str
    catalog: str
    provider: str
    start: str
    end: str
    n_requests: int
    n_rois: int
    all_candidates: bool
    harvest_version: str
    rois: str = ""
    catalog_kind: str = ""

    @property
    def kind(self) -> str:
        """The catalog's kind: :attr:`catalog_kind`, else the kind ``catalog`` names.

        A table written before the kind was recorded: an http(s) URL or a remote provider
        name is remote, ``demo`` or a path is local.
        """
        if self.catalog_kind:
            return self.catalog_kind
        from harvest.hrefs import infer_catalog_kind

        return infer_catalog_kind(self.catalog, self.provider)

    def to_json(self) -> dict[str, Any]:
        """The metadata dict written to the file (with stage and schema version)."""
        return {"stage": PAIRS_STAGE, "schema_version": PAIRS_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> SearchMetadata:
        """Inverse of :meth:`to_json`.

        Raises:
            InputFileError: the dict is not the metadata of a pairs table.
        """
        if data.get("stage") != PAIRS_STAGE:
            raise InputFileError(
                f"{path} is not a pairs table (its stage is {data.get('stage')!r}); "
                "give a pairs.parquet written by 'harvest search'"
            )
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise InputFileError(
                f"{path} has incomplete search metadata ({exc}); write it again with "
                "'harvest search'"
            ) from None


@dataclass(frozen=True)
class PairRow:
    """One row of pairs.parquet: a ROI, its LR chip grid and one candidate pair.

    Attributes:
        roi_id: The ROI.
        lon_deg: ROI centre longitude (EPSG:4326).
        lat_deg: ROI centre latitude.
        utm_epsg: UTM zone (EPSG code) the ROI's chips are cut in.
        pair: The pair: LR and HR scenes with their assets, dt, coverage, score terms, rank.
        mgrs_tile: MGRS 100 km square of the ROI centre.
        chip_id: Stable chip id (CRS and snapped upper-left corner).
        chip_epsg: CRS of the LR chip grid (equals ``utm_epsg``).
        chip_transform: LR chip affine ``(a, b, c, d, e, f)``.
        chip_px: LR chip side in pixels.
    """

    roi_id: str
    lon_deg: float
    lat_deg: float
    utm_epsg: int
    pair: PairCandidate
    mgrs_tile: str | None = None
    chip_id: str = ""
    chip_epsg: int = 0
    chip_transform: tuple[float, float, float, float, float, float] = (0, 0, 0, 0, 0, 0)
    chip_px: int = 0

    @property
    def rank(self) -> int:
        """0 for the chosen pair of the ROI."""
        return self.pair.rank

    def to_record(self) -> dict[str, Any]:
        """A flat row with the columns of :data:`PAIRS_SCHEMA`."""
        row: dict[str, Any] = {
            "roi_id": self.roi_id,
            "geometry": shapely.to_wkb(shapely.Point(self.lon_deg, self.lat_deg)),
            "lon_deg": self.lon_deg,
            "lat_deg": self.lat_deg,
            "utm_epsg": self.utm_epsg,
            "mgrs_tile": self.mgrs_tile,
            "chip_id": self.chip_id,
            "chip_epsg": self.chip_epsg,
            "chip_transform": list(self.chip_transform),
            "chip_px": self.chip_px,
        }
        rec = self.pair.to_record()
        if rec["roi_id"] != self.roi_id:
            raise InputFileError(f"pair of {rec['roi_id']} filed under ROI {self.roi_id}")
        row.update(rec)
        return row

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> PairRow:
        """Inverse of :meth:`to_record`."""
        transform = tuple(float(v) for v in row["chip_transform"])
        if len(transform) != 6:
            raise InputFileError(f"ROI {row['roi_id']}: chip_transform must hold 6 numbers")
        return cls(
            roi_id=str(row["roi_id"]),
            lon_deg=float(row["lon_deg"]),
            lat_deg=float(row["lat_deg"]),
            utm_epsg=int(row["utm_epsg"]),
            pair=PairCandidate.from_record(row),
            mgrs_tile=None if row.get("mgrs_tile") is None else str(row["mgrs_tile"]),
            chip_id=str(row["chip_id"]),
            chip_epsg=int(row["chip_epsg"]),
            chip_transform=transform,
            chip_px=int(row["chip_px"]),
        )


@dataclass(frozen=True)
class PairsTable:
    """A pairs table as read back: rows in file order (ROI order, rank 0 first) and metadata."""

    rows: tuple[PairRow, ...]
    metadata: SearchMetadata

    def __len__(self) -> int:
        return len(self.rows)

    def chosen(self) -> tuple[PairRow, ...]:
        """The rank-0 row of every ROI (the pair the fetch stage reads by default)."""
        return tuple(r for r in self.rows if r.pair.rank == 0)

    @property
    def roi_ids(self) -> tuple[str, ...]:
        """Distinct ROI ids in file order."""
        return tuple(dict.fromkeys(r.roi_id for r in self.rows))


def dropped_path(pairs_path: str | Path) -> Path:
    """``pairs.parquet`` -> ``pairs.dropped.parquet`` (the file of ROIs without a pair)."""
    p = Path(pairs_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.dropped{p.suffix or '.parquet'}")


def write_pairs(
    path: str | Path,
    rows: Sequence[PairRow],
    dropped: Iterable[DroppedRoi],
    metadata: SearchMetadata,
) -> tuple[Path, Path]:
    """Write pairs.parquet and, next to it, pairs.dropped.parquet (both atomically).

    Args:
        path: Destination of the pairs table (its folder is created if needed).
        rows: Pair rows, in the order to keep (ROI order, rank 0 first).
        dropped: ROIs without a pair.
        metadata: How the table was made.

    Returns:
        ``(pairs path, dropped path)``.

    Raises:
        InputFileError: the path is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"output {path} is a folder; give a file name such as pairs.parquet")
    meta = metadata.to_json()
    records = [r.to_record() for r in rows]
    columns = {name: [rec[name] for rec in records] for name in PAIRS_SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=PAIRS_SCHEMA)
    bbox = None
    if rows:
        lons = [r.lon_deg for r in rows]
        lats = [r.lat_deg for r in rows]
        bbox = [min(lons), min(lats), max(lons), max(lats)]
    drops = list(dropped)
    drop_table = pa.Table.from_pydict(
        {
            "roi_id": [d.roi_id for d in drops],
            "reason": [str(d.reason.value) for d in drops],
            "detail": [d.detail for d in drops],
            "n_lr_scenes": [d.n_lr_scenes for d in drops],
            "n_hr_scenes": [d.n_hr_scenes for d in drops],
        },
        schema=DROPPED_SCHEMA,
    )
    other = dropped_path(path)
    # Dropped first: a pairs.parquet on disk always has its dropped file beside it.
    write_geoparquet(other, drop_table, extra_metadata=meta)
    write_geoparquet(path, table, geometry_types=["Point"], bbox=bbox, extra_metadata=meta)
    return path, other


_HINT = "give a pairs.parquet written by 'harvest search'"


def _read_table(path: Path, schema: pa.Schema, what: str) -> tuple[pa.Table, dict[str, Any]]:
    require_input_file(path, what, _HINT)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"cannot read {what} {path} ({first_line(exc)}); {_HINT}") from None
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise InputFileError(f"{path} is not a {what} (no column {shown}); {_HINT}")
    raw = (table.schema.metadata or {}).get(HARVEST_METADATA_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    return table, meta


def read_pairs(path: str | Path) -> PairsTable:
    """Read a pairs table written by :func:`write_pairs`.

    Raises:
        InputFileError: the file is missing, unreadable, or not a pairs table.
        UnsafeIdError: a ``roi_id`` is not a safe id (:mod:`harvest.ids`).
    """
    path = Path(path)
    table, meta = _read_table(path, PAIRS_SCHEMA, "pairs table")
    metadata = SearchMetadata.from_json(meta, path)
    # roi_id names the chip folder and status file: refuse a path in disguise here, before
    # anything is written.
    check_ids(table.column("roi_id").to_pylist(), field="roi_id", source=path)
    rows = tuple(PairRow.from_record(rec) for rec in table.select(PAIRS_SCHEMA.names).to_pylist())
    return PairsTable(rows=rows, metadata=metadata)


def read_dropped(path: str | Path) -> tuple[DroppedRoi, ...]:
    """Read a dropped-ROI table (``pairs.dropped.parquet``).

    Args:
        path: The dropped file itself, or the pairs.parquet it belongs to.

    Raises:
        InputFileError: the file is missing, unreadable, or not a dropped-ROI table.
    """
    path = Path(path)
    if ".dropped" not in path.name:
        path = dropped_path(path)
    table, _ = _read_table(path, DROPPED_SCHEMA, "dropped-ROI table")
    out = []
    for rec in table.select(DROPPED_SCHEMA.names).to_pylist():
        try:
            reason = DropReason(rec["reason"])
        except ValueError:
            raise InputFileError(f"{path}: unknown drop reason {rec['reason']!r}") from None
        out.append(
            DroppedRoi(
                roi_id=str(rec["roi_id"]),
                reason=reason,
                n_lr_scenes=int(rec["n_lr_scenes"]),
                n_hr_scenes=int(rec["n_hr_scenes"]),
                detail=str(rec["detail"]),
            )
        )
    return tuple(out)
