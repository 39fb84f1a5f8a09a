"""The bulk path: search stac-geoparquet snapshots with DuckDB, many footprints in one query.

Planetary Computer publishes its collections as stac-geoparquet; pairing 100,000 ROIs against
such a snapshot must not cost 100,000 searches. :class:`StacParquetCatalog` answers a whole
:class:`~harvest.backends.base.SearchRequest` with **one SQL statement**:

1. the footprints' bounding boxes, cut into cells of a ``cell_deg`` grid, go to DuckDB as an
   Arrow table;
2. the items are filtered by collection, datetime window and cloud cover (pushed down into
   the parquet scan), cut into the same cells by their ``bbox`` struct column, equi-joined with
   the footprint cells and kept when the two bounding boxes overlap;
3. only the matching rows come back, with just the columns the provider profile reads.

The exact test (footprint intersection, inclusive window) then runs in shapely via
:func:`~harvest.backends.memory.filter_scenes`, and rows are parsed with the same
:func:`~harvest.backends.profiles.parse_item` as the STAC API path, so both paths return the
same scenes for the same items. Relative asset hrefs (the demo world writes them relative to
the parquet file's folder) are made absolute against the folder of the file holding the item.

DuckDB is opened with extension auto-install and auto-load off: nothing here needs the
``spatial`` extension (bboxes are plain structs, geometries are read as WKB), and this code
must never reach for the network.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from harvest.backends.base import SceneRef, SearchRequest, SearchResult, SearchStats, Signer
from harvest.backends.memory import filter_scenes
from harvest.backends.profiles import CollectionProfile, ProviderProfile, cover_property, parse_item
from harvest.backends.signing import HrefSigning
from harvest.errors import CatalogError
from harvest.geoio import first_line

logger = logging.getLogger(__name__)

DUCKDB_CONFIG: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
"""DuckDB settings: never download or load extensions (offline; ``spatial`` is not needed)."""

_REQUIRED_COLUMNS = ("id", "collection", "geometry", "bbox")
_BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


_GOOD_BBOX = " AND ".join(
    [
        *(f"isfinite(_b.{f})" for f in _BBOX_FIELDS),
        "_b.xmin <= _b.xmax",
        "_b.ymin <= _b.ymax",
        "_b.xmin >= -180",
        "_b.xmax <= 180",
        "_b.ymin >= -90",
        "_b.ymax <= 90",
    ]
)
"""SQL: the item's bbox (``_b``) is finite, ordered and on the globe, so cells can be cut."""


def _q_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _q_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def resolve_parquet_files(source: str | Path | Sequence[str | Path]) -> tuple[Path, ...]:
    """The parquet files of a file, a folder (searched recursively) or a list of either.

    Raises:
        CatalogError: a path does not exist, or no parquet file was found.
    """
    sources = [source] if isinstance(source, str | Path) else list(source)
    files: list[Path] = []
    for entry in sources:
        path = Path(entry)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in (".parquet", ".geoparquet")
            )
            if not found:
                raise CatalogError(
                    f"folder {path} holds no .parquet files: give a stac-geoparquet file or folder"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CatalogError(f"stac-geoparquet source {path} does not exist: check the path")
    if not files:
        raise CatalogError("no stac-geoparquet file given: pass a file or a folder")
    return tuple(dict.fromkeys(p.resolve() for p in files))


def _unified_schema(files: Sequence[Path]) -> pa.Schema:
    schemas = []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(
                f"{path} is not a readable parquet file ({type(exc).__name__}): "
                "give stac-geoparquet files"
            ) from None
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise CatalogError(
            f"the stac-geoparquet files disagree on column types ({exc}): search them separately"
        ) from None


def _absolute_href(asset: Mapping[str, Any], folder: str) -> Mapping[str, Any]:
    """The asset with a relative href made absolute against ``folder`` (URLs kept as they are)."""
    href = str(asset["href"])
    if not folder or "://" in href or os.path.isabs(href):
        return asset
    return {**asset, "href": os.path.normpath(os.path.join(folder, href))}


def _unusable(item_id: Any, geometry: Any, bad_bbox: bool) -> str:
    """Why a snapshot row cannot be a scene ('' when it can)."""
    if not item_id:
        return "it has no id"
    if bad_bbox:
        return "its bbox is missing, not finite, reversed or off the globe"
    if geometry is None:
        return "its geometry is missing or not valid WKB"
    if geometry.is_empty or not np.isfinite(shapely.bounds(geometry)).all():
        return "its geometry is empty or not finite"
    return ""


class StacParquetCatalog(HrefSigning):
    """A :class:`~harvest.backends.base.Catalog` over stac-geoparquet files, queried with DuckDB.

    Construction reads only the files' parquet schemas (footers); no network I/O ever.

    Args:
        source: A stac-geoparquet file, a folder of them (recursive), or a list of either.
        profile: Provider profile of the items (Planetary Computer for its snapshots).
        sign: Href signer applied only by :meth:`sign_href` / :meth:`signed_assets`.
        cell_deg: Cell size of the grid used to join footprints and items, in degrees.
        threads: DuckDB threads (default: DuckDB's choice, all cores).
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        profile: ProviderProfile,
        *,
        sign: Signer | None = None,
        cell_deg: float = 1.0,
        threads: int | None = None,
    ) -> None:
        if cell_deg <= 0:
            raise CatalogError(f"cell_deg {cell_deg} must be > 0")
        self.files = resolve_parquet_files(source)
        self.profile = profile
        self.cell_deg = float(cell_deg)
        self.threads = threads
        self._sign = sign
        self.schema = _unified_schema(self.files)
        missing = [c for c in _REQUIRED_COLUMNS if c not in self.schema.names]
        if "datetime" not in self.schema.names and "start_datetime" not in self.schema.names:
            missing.append("datetime")
        if missing:
            raise CatalogError(
                f"{self.files[0]} is not stac-geoparquet: it lacks column(s) "
                f"{', '.join(missing)}; write it with the stac-geoparquet package"
            )
        bbox_type = self.schema.field("bbox").type
        if not pa.types.is_struct(bbox_type) or any(
            bbox_type.get_field_index(f) < 0 for f in _BBOX_FIELDS
        ):
            raise CatalogError(
                f"{self.files[0]}: column bbox must be a struct (xmin, ymin, xmax, ymax), as "
                "stac-geoparquet >= 0.6 writes it; rewrite the snapshot with a recent version"
            )

    # --- SQL ------------------------------------------------------------------------------------

    def _property_columns(self, entries: Sequence[CollectionProfile]) -> list[str]:
        keys = self.profile.properties
        wanted: list[str] = ["start_datetime"]
        for name in type(keys).model_fields:
            if name == "mgrs_prefixes":
                continue
            wanted.extend(getattr(keys, name))
        for prefix in keys.mgrs_prefixes:
            wanted.extend(f"{prefix}{s}" for s in ("utm_zone", "latitude_band", "grid_square"))
        for entry in entries:
            prop = cover_property(self.profile, entry)
            if prop:
                wanted.append(prop)
        names = set(self.schema.names)
        reserved = {"id", "collection", "geometry", "bbox", "datetime", "assets"}
        return [c for c in dict.fromkeys(wanted) if c in names and c not in reserved]

    def _asset_keys(self, entries: Sequence[CollectionProfile]) -> list[str]:
        if "assets" not in self.schema.names:
            return []
        assets_type = self.schema.field("assets").type
        if not pa.types.is_struct(assets_type):
            return []
        have = {assets_type.field(i).name for i in range(assets_type.num_fields)}
        keys = [m.asset for e in entries for m in e.bands.values()]
        return [k for k in dict.fromkeys(keys) if k in have]

    def _footprint_cells(self, request: SearchRequest) -> pa.Table:
        bounds = shapely.bounds(np.array([f.geometry for f in request.footprints], dtype=object))
        c = self.cell_deg
        lo = np.floor(bounds[:, :2] / c).astype(np.int64)
        hi = np.floor(bounds[:, 2:] / c).astype(np.int64)
        nx = hi[:, 0] - lo[:, 0] + 1
        ny = hi[:, 1] - lo[:, 1] + 1
        counts = nx * ny
        fid = np.repeat(np.arange(len(bounds)), counts)
        # Offset of each cell inside its footprint's nx x ny block.
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        cx = lo[fid, 0] + k % nx[fid]
        cy = lo[fid, 1] + k // nx[fid]
        return pa.table(
            {
                "cx": cx,
                "cy": cy,
                "fxmin": bounds[fid, 0],
                "fymin": bounds[fid, 1],
                "fxmax": bounds[fid, 2],
                "fymax": bounds[fid, 3],
            }
        )

    def _build_sql(
        self,
        entries: Sequence[CollectionProfile],
        props: Sequence[str],
        asset_keys: Sequence[str],
        request: SearchRequest,
    ) -> tuple[str, list[Any]]:
        files = ", ".join(_q_str(str(p)) for p in self.files)
        names = set(self.schema.names)
        has_dt, has_start = "datetime" in names, "start_datetime" in names
        if has_dt and has_start:
            dt = "coalesce(datetime, start_datetime)"
        else:
            dt = "datetime" if has_dt else "start_datetime"
        params: list[Any] = [request.start, request.end]
        where = [
            f"collection IN ({', '.join(_q_str(e.id) for e in entries)})",
            f"{dt} BETWEEN ? AND ?",
        ]
        if request.max_cloud_pct is not None:
            by_prop: dict[str, list[str]] = {}
            for e in entries:
                prop = cover_property(self.profile, e)
                if prop and prop in names:
                    by_prop.setdefault(prop, []).append(e.id)
            for prop, ids in by_prop.items():
                where.append(
                    f"(collection NOT IN ({', '.join(map(_q_str, ids))}) OR "
                    f"{_q_ident(prop)} IS NULL OR {_q_ident(prop)} <= ?)"
                )
                params.append(float(request.max_cloud_pct))
        select = [
            "id",
            "collection",
            "geometry::BLOB AS geometry",
            f"{dt} AS datetime",
            *(_q_ident(p) for p in props),
            *(f"assets.{_q_ident(k)} AS {_q_ident('asset:' + k)}" for k in asset_keys),
        ]
        c = repr(self.cell_deg)
        sql = f"""
WITH src AS MATERIALIZED (
    SELECT filename AS _f, file_row_number AS _r, bbox AS _b, {", ".join(select)}
    FROM read_parquet([{files}], union_by_name = true, filename = true,
                      file_row_number = true)
    WHERE {" AND ".join(where)}
),
xcells AS (
    SELECT _f, _r, _b,
           unnest(range(floor(_b.xmin / {c})::BIGINT, floor(_b.xmax / {c})::BIGINT + 1)) AS cx
    FROM src
    WHERE {_GOOD_BBOX}
),
cells AS (
    SELECT _f, _r, _b, cx,
           unnest(range(floor(_b.ymin / {c})::BIGINT, floor(_b.ymax / {c})::BIGINT + 1)) AS cy
    FROM xcells
),
hits AS (
    SELECT DISTINCT cells._f, cells._r
    FROM cells JOIN fp ON cells.cx = fp.cx AND cells.cy = fp.cy
    WHERE fp.fxmin <= cells._b.xmax AND fp.fxmax >= cells._b.xmin
      AND fp.fymin <= cells._b.ymax AND fp.fymax >= cells._b.ymin
)
SELECT src.* EXCLUDE (_r, _b), false AS _bad_bbox
FROM src SEMI JOIN hits ON src._f = hits._f AND src._r = hits._r
UNION ALL
-- Items whose bbox cannot be placed (missing, NaN, infinite, reversed, off the globe): sent
-- back flagged so that each is skipped with a warning naming it, not silently lost, and one
-- bad item cannot abort the query of a whole snapshot.
SELECT src.* EXCLUDE (_r, _b), true AS _bad_bbox
FROM src
WHERE NOT coalesce({_GOOD_BBOX}, false)
ORDER BY collection, id
"""
        return sql, params

    def query_table(self, request: SearchRequest) -> pa.Table:
        """Run the one SQL query of :meth:`search` and return the candidate rows (bbox level).

        Raises:
            CatalogError: DuckDB cannot read the files or run the query.
        """
        entries = [self.profile.collection(c) for c in request.collections]
        props = self._property_columns(entries)
        asset_keys = self._asset_keys(entries)
        sql, params = self._build_sql(entries, props, asset_keys, request)
        config = dict(DUCKDB_CONFIG)
        if self.threads is not None:
            config["threads"] = int(self.threads)
        con = duckdb.connect(config=config)
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("fp", self._footprint_cells(request))
            table = con.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as exc:
            first = first_line(exc)
            raise CatalogError(
                f"DuckDB cannot search {self.files[0]}"
                f"{f' (and {len(self.files) - 1} more)' if len(self.files) > 1 else ''}: "
                f"{first[:200]}; check that these are stac-geoparquet files"
            ) from None
        finally:
            con.close()
        return table

    def _rows_to_scenes(self, table: pa.Table) -> tuple[list[SceneRef], int]:
        n = table.num_rows
        if n == 0:
            return [], 0
        # One item with broken WKB must not abort the search: it becomes None and is skipped.
        geoms = shapely.from_wkb(
            table.column("geometry").to_numpy(zero_copy_only=False), on_invalid="ignore"
        )
        ids = table.column("id").to_pylist()
        bad_bbox = (
            table.column("_bad_bbox").to_pylist()
            if "_bad_bbox" in table.column_names
            else [False] * n
        )
        colls = table.column("collection").to_pylist()
        when = table.column("datetime").cast(pa.string()).to_pylist()
        skip = {"id", "collection", "geometry", "datetime", "_f", "_bad_bbox"}
        # Relative asset hrefs (as in the demo world's snapshot) are relative to the folder of
        # the parquet file that holds the item; resolve them so a scene names a readable file.
        folders = (
            [os.path.dirname(str(f)) for f in table.column("_f").to_pylist()]
            if "_f" in table.column_names
            else [""] * n
        )
        prop_cols = {
            name: table.column(name).to_pylist()
            for name in table.column_names
            if name not in skip and not name.startswith("asset:")
        }
        asset_cols = {
            name.removeprefix("asset:"): table.column(name).to_pylist()
            for name in table.column_names
            if name.startswith("asset:")
        }
        scenes: list[SceneRef] = []
        n_invalid = 0
        for i in range(n):
            problem = _unusable(ids[i], geoms[i], bool(bad_bbox[i]))
            if problem:
                n_invalid += 1
                logger.warning("skipping item %s of %s: %s", ids[i], folders[i] or "?", problem)
                continue
            properties: dict[str, Any] = {"datetime": when[i]}
            for name, values in prop_cols.items():
                if values[i] is not None:
                    properties[name] = values[i]
            assets: dict[str, Mapping[str, Any]] = {}
            for key, values in asset_cols.items():
                if values[i] is not None and values[i].get("href"):
                    assets[key] = _absolute_href(values[i], folders[i])
            item = {
                "id": ids[i],
                "collection": colls[i],
                "geometry": geoms[i],
                "properties": properties,
                "assets": assets,
            }
            try:
                scenes.append(parse_item(item, self.profile))
            except CatalogError as exc:
                n_invalid += 1
                logger.warning("skipping item: %s", exc)
        return scenes, n_invalid

    def search(self, request: SearchRequest, *, progress: bool = False) -> SearchResult:
        """Find the scenes for ``request`` with one SQL query over the snapshot.

        Args:
            request: Footprints, canonical collections, window, cloud limit.
            progress: Accepted for the protocol; a single query has no steps to show.

        Raises:
            CatalogError: unreadable files, or a collection the profile does not know.
        """
        started = time.perf_counter()
        table = self.query_table(request)
        parsed, n_invalid = self._rows_to_scenes(table)
        scenes = filter_scenes(parsed, request)
        stats = SearchStats(
            n_footprints=len(request.footprints),
            n_groups=1,
            n_requests=1,
            n_pages=0,
            n_items=table.num_rows,
            n_scenes=len(scenes),
            seconds=time.perf_counter() - started,
            n_invalid=n_invalid,
        )
        return SearchResult(scenes=scenes, stats=stats)
