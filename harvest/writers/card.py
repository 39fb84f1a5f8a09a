"""The description of a built dataset: its card (``README.md``), figures and STAC Collection.

:func:`describe_dataset` reads what the stages left in the dataset folder (the ROI, pairs and
dropped tables, ``manifest.parquet``, the synthetic folders, the selection) and writes:

- ``README.md``: the dataset card, with the numbers that matter (ROIs sampled / paired / kept,
  search drops and QA rejections per reason, the dt and cloud distributions, QA_1 / QA_2
  quantiles, train/test counts, sources and licences, how to read it);
- ``figures/rois.png`` (ROIs over the region, coloured by outcome) and ``figures/qa.png`` (dt,
  QA_1 and QA_2 histograms with the limits), drawn with Pillow;
- ``stac/`` (:mod:`harvest.writers.stac`).

Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harvest.writers.stac import SourceLicense, StacSample, source_license, write_collection

CARD = "README.md"
FIGURES_DIR = "figures"
ROI_MAP = "rois.png"
QA_FIGURE = "qa.png"
# Outcome colours of the ROI map (RGB).
_COLOURS = {
    "kept": (27, 158, 119),
    "rejected": (217, 95, 2),
    "failed": (200, 30, 30),
    "unpaired": (150, 150, 150),
}


@dataclass(frozen=True)
class DatasetDescription:
    """What :func:`describe_dataset` wrote."""

    card: Path
    figures: tuple[Path, ...]
    collection: Path
    n_items: int


@dataclass(frozen=True)
class DescribeInputs:
    """Where the build's tables are and what the build was.

    Attributes:
        out_dir: The dataset folder.
        record: ``dataset.json``'s content.
        rois: The ROI table.
        pairs: The pairs table (its ``.dropped`` sibling beside it).
        region: The region the ROIs were drawn in (for the map), or None.
        selection: The pruning selection, or None.
        limits: QA limits shown on the histograms (``max_shift_px``, ``max_sam_deg``).
        stac_api_url: The catalog's STAC API root, for ``derived_from`` links (None: none).
    """

    out_dir: Path
    record: Mapping[str, Any]
    rois: Path
    pairs: Path
    region: Any
    selection: Path | None
    limits: Mapping[str, float]
    stac_api_url: str | None = None


def describe_dataset(inputs: DescribeInputs) -> DatasetDescription:
    """Write the card, its figures and the STAC Collection of a dataset folder."""
    import geopandas as gpd
    import pandas as pd

    from harvest.diskio import atomic_write_bytes
    from harvest.geoio import read_roi_points

    out = inputs.out_dir
    rois = read_roi_points(inputs.rois)
    # A synthetic-only build has no pairs table and no chip manifest.
    pairs = pd.read_parquet(inputs.pairs) if inputs.pairs.exists() else pd.DataFrame()
    dropped_path = inputs.pairs.with_name(inputs.pairs.stem + ".dropped.parquet")
    dropped = pd.read_parquet(dropped_path) if dropped_path.exists() else pd.DataFrame()
    manifest_path = out / "manifest.parquet"
    manifest = (
        gpd.read_parquet(manifest_path)
        if manifest_path.exists()
        else pd.DataFrame({"roi_id": [], "status": [], "reasons": [], "split": []})
    )
    synthetic = _synthetic_table(out)
    selection = (
        pd.read_parquet(inputs.selection)
        if inputs.selection is not None and inputs.selection.exists()
        else None
    )

    status = dict(zip(manifest["roi_id"], manifest["status"], strict=True))
    if synthetic is not None:
        for roi, st, folder in zip(
            synthetic["roi_id"], synthetic["status"], synthetic["folder"], strict=True
        ):
            if status.get(roi) == "kept":
                continue
            if folder:
                status[roi] = "kept"
            elif st in ("rejected", "failed"):
                status[roi] = str(st)
    outcome = [status.get(r, "unpaired") for r in rois.roi_id]
    figures = (out / FIGURES_DIR / ROI_MAP, out / FIGURES_DIR / QA_FIGURE)
    atomic_write_bytes(figures[0], _roi_map(rois.lon_deg, rois.lat_deg, outcome, inputs.region))
    kept = manifest[manifest["status"] == "kept"]
    atomic_write_bytes(
        figures[1],
        _qa_figure(
            _col(pairs, "dt_hours"),
            _col(manifest, "qa1_px"),
            _col(manifest, "qa2_deg"),
            inputs.limits,
        ),
    )

    licenses = _licenses(pairs)
    for lic in _licenses(_synthetic_sources(out)):
        if lic not in licenses:
            licenses.append(lic)
    samples = _samples(out, manifest, pairs, selection) + _synthetic_samples(out, selection)
    item_url = {}
    if inputs.stac_api_url:
        for coll in set(pairs.get("lr_collection", [])) | set(pairs.get("hr_collection", [])):
            item_url[str(coll)] = f"{inputs.stac_api_url.rstrip('/')}/collections/{coll}/items"
    rec = inputs.record
    collection = write_collection(
        out,
        collection_id=str(rec["name"]),
        description=f"{rec['recipe']} dataset built by harvest ({', '.join(rec['products'])})",
        samples=samples,
        licenses=licenses,
        item_url=item_url,
        version=str(rec["version"]),
        extra={"harvest:config_hash": rec["config_hash"], "harvest:counts": dict(rec["counts"])},
    )
    card = out / CARD
    text = _card_text(rec, pairs, dropped, manifest, kept, selection, licenses, inputs.limits)
    if synthetic is not None:
        text = text.replace(
            "\n## Distributions\n", _synthetic_text(synthetic) + "\n## Distributions\n"
        )
    atomic_write_bytes(card, text.encode())
    return DatasetDescription(card, figures, collection, len(samples))


# --- the card ---------------------------------------------------------------------------------


def _col(frame: Any, name: str) -> np.ndarray:
    """A column as floats (empty when the table lacks it, e.g. a manifest with no chip)."""
    if name not in frame:
        return np.array([], dtype=float)
    return np.asarray(frame[name].to_numpy(dtype=float, na_value=np.nan), dtype=float)


def _quantiles(values: np.ndarray, digits: int = 2) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "n/a"
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0])
    return " / ".join(f"{x:.{digits}f}" for x in q)


def _card_text(
    rec: Mapping[str, Any],
    pairs: Any,
    dropped: Any,
    manifest: Any,
    kept: Any,
    selection: Any,
    licenses: Sequence[SourceLicense],
    limits: Mapping[str, float],
) -> str:
    counts: Mapping[str, int] = rec["counts"]
    lines = [
        f"# {rec['name']}",
        "",
        f"A **{rec['recipe']}** dataset ({', '.join(rec['products'])}) built by harvest "
        f"{rec['harvest_version']} from the `{rec['catalog']}` catalog. Version "
        f"**{rec['version']}**; config `{rec['config']}` (hash `{rec['config_hash']}`); "
        f"created {rec['created']}, updated {rec['updated']}.",
        "",
        "## Numbers",
        "",
        "| step | count |",
        "|---|---:|",
        f"| ROIs sampled | {counts.get('rois_sampled', 0)} |",
        f"| ROIs paired (search) | {counts.get('rois_paired', 0)} |",
        f"| chips kept (QA passed) | {counts.get('chips_kept', 0)} |",
        f"| chips rejected by QA | {counts.get('chips_rejected', 0)} |",
        f"| chips failed (read errors) | {counts.get('chips_failed', 0)} |",
    ]
    if "synthetic_images" in counts:
        lines.append(f"| synthetic HR images | {counts['synthetic_images']} |")
    if "selected" in counts:
        lines.append(f"| kept by diversity pruning (one per cluster) | {counts['selected']} |")
    lines += [
        f"| kept chips in train / test | {counts.get('kept_train', 0)} / "
        f"{counts.get('kept_test', 0)} |",
        "",
        "## Why ROIs and chips were left out",
        "",
        "| stage | reason | count |",
        "|---|---|---:|",
    ]
    drop_counts = Counter(dropped["reason"]) if len(dropped) else Counter()
    for reason, n in sorted(drop_counts.items()):
        lines.append(f"| search | {reason} | {n} |")
    reasons: Counter[str] = Counter()
    for st, rs in zip(manifest["status"], manifest["reasons"], strict=True):
        if st == "rejected":
            reasons.update(r for r in str(rs or "").split(";") if r)
    for reason, n in sorted(reasons.items()):
        lines.append(f"| QA | {reason} | {n} |")
    if not drop_counts and not reasons:
        lines.append("| | (none) | 0 |")
    lines += [
        "",
        "A chip can be rejected for several reasons at once; each is counted.",
        "",
        "## Distributions",
        "",
        "Quantiles (min / 25 % / median / 75 % / max):",
        "",
        "| quantity | all paired / checked | kept |",
        "|---|---|---|",
        f"| dt = t_HR - t_LR (hours) | {_quantiles(_col(pairs, 'dt_hours'), 1)}"
        f" | {_quantiles(_col(kept, 'dt_hours'), 1)} |",
    ]
    if "lr_cloud_cover_pct" in pairs:
        lines.append(
            f"| LR scene cloud cover (%) | {_quantiles(_col(pairs, 'lr_cloud_cover_pct'), 1)} | |"
        )
    if "cloud_fraction" in manifest:
        lines.append(
            f"| chip cloud fraction | {_quantiles(_col(manifest, 'cloud_fraction'))}"
            f" | {_quantiles(_col(kept, 'cloud_fraction'))} |"
        )
    for col, label in (("qa1_px", "QA_1 shift (LR px)"), ("qa2_deg", "QA_2 spectral angle (deg)")):
        if col in manifest:
            lines.append(
                f"| {label} | {_quantiles(_col(manifest, col))} | {_quantiles(_col(kept, col))} |"
            )
    lines += [
        "",
        f"QA limits: QA_1 <= {limits.get('max_shift_px', float('nan')):g} LR px, "
        f"QA_2 <= {limits.get('max_sam_deg', float('nan')):g} degrees.",
        "",
        f"![ROIs by outcome]({FIGURES_DIR}/{ROI_MAP})",
        "",
        "ROIs over the region: green kept, orange rejected by QA, red failed, grey not paired.",
        "",
        f"![dt, QA_1 and QA_2]({FIGURES_DIR}/{QA_FIGURE})",
        "",
        "## Layout",
        "",
        "- `cross-sensor/ROI_x/` (or `kept/ROI_x/`): the kept chips, `LR.tif`, `HR.tif`, `SCL.tif`,"
        " `metadata.json`; `rejected/ROI_x/`: the rejected ones, kept for `harvest qa`.",
        "- `synthetic/ROI_x/{early,late}/`: `HR.tif` (uint16 reflectance x 10,000), "
        "`metadata.json` (Table 1 fields, `d_sim_to_real` histograms per method), "
        "`histograms.npz`; `hr-pool/`: every early/late image before pruning; "
        "`synthetic.parquet`: one row per image (status, reasons, selected); "
        "`acquisitions.parquet`: the early/late search.",
        "- `manifest.parquet`: one row per chip (status, reasons, QA metrics, sha256 of files).",
        "- `selection.parquet`: every pruned image with its cluster and `selected` flag.",
        "- `rois.parquet`, `pairs.parquet` (+ `.dropped`): the sampling and search tables.",
        "- `stac/collection.json`: this dataset as a STAC Collection, one item per sample.",
        "- `dataset.json`: version, config hash, counts; `config.yaml`: the resolved config.",
        "",
        "## Sources and licences",
        "",
    ]
    for lic in licenses:
        credit = f' Credit: "{lic.attribution}".' if lic.attribution else ""
        lines.append(f"- {lic.title} ({lic.href}).{credit}")
    if selection is not None:
        lines += [
            "",
            "## Diversity pruning",
            "",
            f"{int(selection['selected'].sum())} of {len(selection)} images kept, one per "
            f"cluster of image embeddings ({selection['cluster'].nunique()} clusters); see "
            "`selection.report.md`.",
        ]
    lines.append("")
    return "\n".join(lines)


def _licenses(pairs: Any) -> list[SourceLicense]:
    found: list[SourceLicense] = []
    for side in ("lr", "hr"):
        coll, prov = f"{side}_collection", f"{side}_provider"
        if coll not in pairs:
            continue
        for c, p in sorted(set(zip(pairs[coll], pairs[prov], strict=True))):
            lic = source_license(str(c), str(p))
            if lic not in found:
                found.append(lic)
    return found


# --- STAC items -------------------------------------------------------------------------------


def _when(value: Any) -> datetime:
    import pandas as pd

    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(UTC)
    return ts.to_pydatetime()


def _samples(out: Path, manifest: Any, pairs: Any, selection: Any) -> list[StacSample]:
    import shapely.geometry

    by_roi = {r["roi_id"]: r for r in pairs.to_dict("records")}
    chosen: dict[str, bool] = {}
    if selection is not None:
        chosen = dict(zip(selection["path"], selection["selected"], strict=True))
    samples: list[StacSample] = []
    metric_cols = [
        c
        for c in ("qa1_px", "qa2_deg", "cloud_fraction", "nodata_fraction", "dt_hours")
        if c in manifest
    ]
    for row in manifest.to_dict("records"):
        if row["status"] != "kept" or not row.get("folder"):
            continue
        pair = by_roi.get(row["roi_id"], {})
        folder = out / str(row["folder"])
        files = tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))
        geom = shapely.geometry.mapping(row["geometry"])
        when = _when(pair.get("lr_datetime") or pair.get("hr_datetime"))
        sources = tuple(
            (str(pair[f"{s}_collection"]), str(pair[f"{s}_item_id"]))
            for s in ("lr", "hr")
            if pair.get(f"{s}_item_id")
        )
        props: dict[str, Any] = {c: row[c] for c in metric_cols}
        for side in ("lr", "hr"):
            if pair.get(f"{side}_item_id"):
                props[f"harvest:{side}_item_id"] = str(pair[f"{side}_item_id"])
        product = Path(str(row["folder"])).parts[0]
        rel = f"{row['folder']}/HR.tif"
        if rel in chosen:
            props["harvest:selected"] = bool(chosen[rel])
        samples.append(
            StacSample(
                row["roi_id"],
                product,
                str(row["folder"]),
                files,
                geom,
                when,
                str(row["split"] or "train"),
                props,
                sources,
            )
        )
    return samples


def _synthetic_table(out: Path) -> Any:
    import pandas as pd

    path = out / "synthetic.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _synthetic_sources(out: Path) -> Any:
    """The early/late scenes' collections and providers, as ``hr_*`` columns of a frame."""
    import pandas as pd

    path = out / "acquisitions.parquet"
    if not path.exists():
        return pd.DataFrame()
    cols = ["status", "early_collection", "early_provider"]
    frame = pd.read_parquet(path, columns=cols)
    frame = frame[frame["status"] == "chosen"]
    return frame.rename(
        columns={"early_collection": "hr_collection", "early_provider": "hr_provider"}
    )


def _synthetic_text(table: Any) -> str:
    """The card's section on the synthetic set: the funnel from ROIs to written images."""
    per_roi = table.drop_duplicates("roi_id")
    n_rois = len(per_roi)
    chosen = per_roi[per_roi["status"] != "dropped"]
    kept = per_roi[per_roi["status"] == "kept"]
    written = table[table["folder"].notna()]
    selected = table[table["selected"].eq(True)]
    lines = [
        "## Synthetic set",
        "",
        "| step | count |",
        "|---|---:|",
        f"| ROIs searched for an early and a late HR image | {n_rois} |",
        f"| ROIs with both | {len(chosen)} |",
        f"| ROIs kept by the blank / nodata filter ({2 * len(kept)} images) | {len(kept)} |",
        f"| images selected by pruning (one per cluster) | {len(selected)} |",
        f"| ROIs written / images written | {written['roi_id'].nunique()} / {len(written)} |",
        "",
        "| stage | reason | ROIs |",
        "|---|---|---:|",
    ]
    dropped = Counter(per_roi.loc[per_roi["status"] == "dropped", "reasons"])
    rejected: Counter[str] = Counter()
    for rs in per_roi.loc[per_roi["status"] == "rejected", "reasons"]:
        rejected.update(r for r in str(rs or "").split(";") if r)
    for reason, n in sorted(dropped.items()):
        lines.append(f"| search | {reason} | {n} |")
    for reason, n in sorted(rejected.items()):
        lines.append(f"| blank filter | {reason} | {n} |")
    if not dropped and not rejected:
        lines.append("| | (none) | 0 |")
    lines += [
        "",
        "A ROI is written when either of its images is selected, and then with both (the "
        "paper's 18,000 clusters gave 17,567 ROIs and 35,134 images).",
        "",
    ]
    return "\n".join(lines)


def _synthetic_samples(out: Path, selection: Any) -> list[StacSample]:
    """One STAC sample per written synthetic image (``synthetic/ROI/IMAGE/``)."""
    import json

    import shapely.geometry

    from harvest.grid import lonlat_transformer
    from harvest.writers.sen2naip import chip_split_of

    chosen: dict[str, bool] = {}
    if selection is not None:
        chosen = dict(zip(selection["path"], selection["selected"], strict=True))
    samples: list[StacSample] = []
    for meta_path in sorted((out / "synthetic").glob("*/*/metadata.json")):
        folder = meta_path.parent
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if "proj:geometry" not in meta or "naip_date" not in meta:
            continue  # not a synthetic build's image (e.g. written by `harvest degrade`)
        ring = meta["proj:geometry"]["coordinates"][0]
        to_lonlat = lonlat_transformer(int(meta["proj:epsg"]))
        lonlat = [to_lonlat.transform(x, y) for x, y in ring]
        geom = shapely.geometry.mapping(shapely.geometry.Polygon(lonlat))
        roi, image = folder.parent.name, folder.name
        rel_dir = f"synthetic/{roi}/{image}"
        props: dict[str, Any] = {"harvest:hr_item_id": str(meta.get("naip_id"))}
        pool = f"hr-pool/{roi}/{image}/HR.tif"
        if pool in chosen:
            props["harvest:selected"] = bool(chosen[pool])
        samples.append(
            StacSample(
                f"{roi}-{image}",
                "synthetic",
                rel_dir,
                tuple(sorted(p.name for p in folder.iterdir() if p.is_file())),
                geom,
                _when(meta["naip_date"]),
                chip_split_of(meta),
                props,
                ((str(meta.get("hr_collection") or "naip"), str(meta.get("naip_id"))),),
            )
        )
    return samples


# --- figures (Pillow) -------------------------------------------------------------------------


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _roi_map(lon: np.ndarray, lat: np.ndarray, outcome: Sequence[str], region: Any) -> bytes:
    """ROIs as dots over the region outline (equirectangular, lon scaled by cos(lat))."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 560, 30
    xs, ys = list(lon), list(lat)
    rings: list[np.ndarray] = []
    if region is not None:
        geoms = getattr(region, "geoms", [region])
        for g in geoms:
            rings.append(np.asarray(g.exterior.coords))
            xs += list(rings[-1][:, 0])
            ys += list(rings[-1][:, 1])
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    k = max(np.cos(np.radians((y0 + y1) / 2)), 0.2)
    span_x, span_y = max((x1 - x0) * k, 1e-6), max(y1 - y0, 1e-6)
    s = min((w - 2 * pad) / span_x, (h - 2 * pad - 20) / span_y)

    def px(x: float, y: float) -> tuple[float, float]:
        return pad + (x - x0) * k * s, h - pad - (y - y0) * s

    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    for ring in rings:
        pts = [px(x, y) for x, y in ring]
        xs_, ys_ = [p[0] for p in pts], [p[1] for p in pts]
        if max(xs_) - min(xs_) < 6 and max(ys_) - min(ys_) < 6:  # a site: a visible square
            cx, cy = (max(xs_) + min(xs_)) / 2, (max(ys_) + min(ys_)) / 2
            draw.rectangle([cx - 6, cy - 6, cx + 6, cy + 6], outline=(90, 90, 90))
        else:
            draw.line(pts, fill=(90, 90, 90), width=1)
    r = 4 if len(lon) < 500 else 2
    for x, y, o in sorted(zip(lon, lat, outcome, strict=True), key=lambda t: t[2] == "kept"):
        cx, cy = px(x, y)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_COLOURS.get(o, (0, 0, 0)))
    tally = Counter(outcome)
    legend = "   ".join(f"{name}: {tally.get(name, 0)}" for name in _COLOURS)
    draw.text((pad, 8), f"ROIs by outcome   {legend}", fill=(0, 0, 0))
    return _png(img)


def _qa_figure(
    dt_hours: np.ndarray, qa1: np.ndarray, qa2: np.ndarray, limits: Mapping[str, float]
) -> bytes:
    """Three histograms side by side: dt (hours), QA_1 (px), QA_2 (deg), with the limits."""
    from PIL import Image, ImageDraw

    panels = (
        ("dt = t_HR - t_LR (hours)", dt_hours, None),
        ("QA_1 shift (LR px)", qa1, limits.get("max_shift_px")),
        ("QA_2 spectral angle (deg)", qa2, limits.get("max_sam_deg")),
    )
    pw, h, pad = 320, 260, 28
    img = Image.new("RGB", (pw * len(panels), h), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, values, limit) in enumerate(panels):
        ox = i * pw
        draw.text((ox + pad, 6), title, fill=(0, 0, 0))
        v = values[np.isfinite(values)]
        top = max([*v.tolist(), limit or 0.0, 1e-9])
        low = min([*v.tolist(), 0.0])
        edges = np.linspace(low * 1.05, top * 1.05, 21)
        hist = np.histogram(v, bins=edges)[0] if v.size else np.zeros(20, int)
        peak = max(int(hist.max()), 1)
        bw = (pw - 2 * pad) / 20
        base = h - pad
        for j, n in enumerate(hist):
            bh = (h - 3 * pad) * n / peak
            draw.rectangle(
                [ox + pad + j * bw, base - bh, ox + pad + (j + 1) * bw - 1, base],
                fill=(70, 120, 180),
            )
        draw.line([ox + pad, base, ox + pw - pad, base], fill=(0, 0, 0))
        draw.text((ox + pad, base + 4), f"{edges[0]:.3g}", fill=(0, 0, 0))
        draw.text((ox + pw - pad - 40, base + 4), f"{edges[-1]:.3g}", fill=(0, 0, 0))
        draw.text((ox + pw - pad - 60, 20), f"n = {v.size}", fill=(0, 0, 0))
        if limit is not None and edges[-1] > edges[0]:
            lx = ox + pad + (pw - 2 * pad) * (limit - edges[0]) / (edges[-1] - edges[0])
            draw.line([lx, 2 * pad, lx, base], fill=(200, 30, 30), width=2)
            draw.text((lx + 3, 2 * pad), f"limit {limit:g}", fill=(200, 30, 30))
    return _png(img)


def write_sen2venus_card(out_dir: Path, record: Mapping[str, Any], provider: str) -> Path:
    """The card (``README.md``) of a SEN2VENuS folder: numbers, layout, dropped pairs, sources.

    Args:
        out_dir: the dataset folder.
        record: its ``dataset.json``.
        provider: the catalog's provider (for the licences).

    Returns:
        The card's path.
    """
    counts = record["counts"]
    sites = sorted(p.name for p in out_dir.iterdir() if (p / "index.csv").is_file())
    lines = [
        f"# {record['name']}",
        "",
        f"SEN2VENuS-style patches (recipe `{record['recipe']}`), version {record['version']}, "
        f"built by harvest {record['harvest_version']} from `{record['catalog']}`.",
        "",
        "| | |",
        "|---|---|",
        f"| sites | {counts['sites']} |",
        f"| same-day pairs found | {counts['pairs_found']} |",
        f"| pairs written | {counts['pairs_written']} |",
        f"| patches (256 px at 5 m) | {counts['patches']} |",
        "",
        "## Layout",
        "",
        "Per site folder: `{site}_{tile}_{date}_05m_b2b3b4b8.pt` and `_10m_b2b3b4b8.pt`, "
        "`_05m_b5b6b7b8a.pt` and `_20m_b5b6b7b8a.pt` (int16 reflectance x 10000, "
        "[n, 4, 256 | 128 | 64, ...], read with `torch.load`), `_patches.gpkg` (patch "
        "footprints) and a tab-separated `index.csv`. The 5 m tensors are VENuS mapped onto "
        "Sentinel-2's radiometry (least squares per pair and band group); Sentinel-2 is "
        "registered onto VENuS (one SIFT translation per pair).",
        "",
        f"Sites: {', '.join(sites) if sites else 'none'}.",
        "",
        "## Dropped pairs",
        "",
    ]
    dropped = record.get("dropped_pairs", [])
    lines += [f"- {d['pair']}: {d['reason']}" for d in dropped] or ["None."]
    return _write_venus_card(out_dir, lines, provider)


def write_sentinel_hr_card(out_dir: Path, record: Mapping[str, Any], provider: str) -> Path:
    """The card (``README.md``) of a Sentinel-HR folder: numbers, stores, dropped sites, sources.

    Args:
        out_dir: the dataset folder.
        record: its ``dataset.json``.
        provider: the catalog's provider (for the licences).

    Returns:
        The card's path.
    """
    counts = record["counts"]
    sites = sorted(p.name for p in out_dir.iterdir() if (p / "targets.zarr").is_dir())
    lines = [
        f"# {record['name']}",
        "",
        f"Sentinel-HR hybridation series (recipe `{record['recipe']}`), version "
        f"{record['version']}, built by harvest {record['harvest_version']} from "
        f"`{record['catalog']}`.",
        "",
        "| | |",
        "|---|---|",
        f"| sites | {counts['sites']} |",
        f"| sites written | {counts['sites_written']} |",
        f"| guide dates (VENuS 5 m) | {counts['guide_dates']} |",
        f"| target dates (S2 + VENuS < 1 day apart) | {counts['target_dates']} |",
        "",
        "## Layout",
        "",
        "Per site folder, two Zarr stores (open with `xarray.open_zarr`; CF-style: `time`, "
        "projected `x`/`y` pixel centres in metres, a `spatial_ref` grid mapping, reflectance "
        "stored as int16 with `scale_factor` 1e-4 and `_FillValue` where a pixel is invalid):",
        "",
        "- `guides.zarr`: `reflectance (time, band, y, x)`, the VENuS 5 m guide series thinned "
        "to the configured revisit;",
        "- `targets.zarr`: `lr (time, band, y_lr, x_lr)`, Sentinel-2 registered onto VENuS "
        "(SIFT), mapped onto its radiometry (least squares per date) and resampled with a "
        "Gaussian matched to the MTF; `reference (time, band, y, x)`, VENuS 5 m on the same "
        "dates; `shift_px` and `mapping` per date.",
        "",
        "Bands: VENuS B3 B4 B7 B11 (coordinate `venus_band`), named by the Sentinel-2 bands "
        "they stand for, B02 B03 B04 B08 (`band`).",
        "",
        f"Sites: {', '.join(sites) if sites else 'none'}.",
        "",
        "## Dropped sites",
        "",
    ]
    dropped = record.get("dropped_sites", [])
    lines += [f"- {d['site']}: {d['reason']}" for d in dropped] or ["None."]
    return _write_venus_card(out_dir, lines, provider)


def _write_venus_card(out_dir: Path, lines: list[str], provider: str) -> Path:
    """A VENuS site product's card: ``lines``, then the S2 and VENuS sources and licences."""
    from harvest.diskio import atomic_write_bytes

    lines = [*lines, "", "## Sources and licences", ""]
    for collection in ("sentinel-2-l2a", "venus-l2a"):
        lic = source_license(collection, provider)
        credit = f" Credit: {lic.attribution}" if lic.attribution else ""
        lines.append(f"- {collection}: [{lic.title}]({lic.href}).{credit}")
    card = out_dir / CARD
    atomic_write_bytes(card, ("\n".join(lines) + "\n").encode())
    return card
