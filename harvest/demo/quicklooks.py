"""Quicklook PNGs of the demo world: one sheet per site, every scene side by side in date order.

``DIR/quicklooks/SITE.png`` shows NAIP and VENuS in natural colours, each Sentinel-2 scene in
natural colours and its scene classes (SCL), and Sentinel-1 VV in dB, each titled with its
collection and date, so a reader sees at a glance what the world holds (early vs late NAIP,
clouds and their SCL, swath edges, blank patches) before trusting a number computed on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harvest.diskio import atomic_write_bytes

QUICKLOOK_DIR = "quicklooks"
PANEL_PX = 240
#: Natural-colour bands (asset key, 1-based band) per collection.
RGB = {
    "naip": (("image", 1), ("image", 2), ("image", 3)),
    "sentinel-2-l2a": (("B04", 1), ("B03", 1), ("B02", 1)),
    "venus-l2a": (("B7", 1), ("B4", 1), ("B3", 1)),
}
#: SCL class colours (0-11), close to ESA's legend.
SCL_COLOURS = (
    "#000000", "#ff0000", "#404040", "#835b1e", "#00a000", "#ffe65a",
    "#0000ff", "#808080", "#c0c0c0", "#ffffff", "#64c8ff", "#ff96ff",
)  # fmt: skip


def _read(href: str, band: int) -> np.ndarray:
    """One band at panel size (nearest overview), NaN where nodata."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(href) as src:
        scale = max(1, max(src.height, src.width) // PANEL_PX)
        shape = (max(1, src.height // scale), max(1, src.width // scale))
        data = src.read(band, out_shape=shape, resampling=Resampling.nearest, masked=True)
    return np.asarray(data.astype(np.float64).filled(np.nan))


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """2-98 % stretch per band to [0, 1]; NaN shown black."""
    out = np.zeros_like(rgb)
    for i, band in enumerate(rgb):
        finite = band[np.isfinite(band)]
        if finite.size:
            lo, hi = np.percentile(finite, (2, 98))
            out[i] = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(np.moveaxis(out, 0, -1))


def _panels(item: Mapping[str, Any]) -> list[tuple[str, np.ndarray, str]]:
    """(title, image, kind) panels of one item: kind ``rgb``, ``scl`` or ``grey``."""
    collection = str(item["collection"])
    day = str(item["properties"]["datetime"])[:10]
    assets = item["assets"]
    out: list[tuple[str, np.ndarray, str]] = []
    if collection in RGB:
        rgb = np.stack([_read(assets[k]["href"], b) for k, b in RGB[collection]])
        out.append((f"{collection} {day}", _stretch(rgb), "rgb"))
        if "SCL" in assets:
            out.append((f"SCL {day}", _read(assets["SCL"]["href"], 1), "scl"))
    elif "vv" in assets:
        vv = _read(assets["vv"]["href"], 1)
        db = np.where(np.isfinite(vv), 10 * np.log10(np.clip(vv, 1e-6, None)), np.nan)
        out.append((f"{collection} VV {day}", _stretch(db[None])[..., 0], "grey"))
    return out


def write_site_quicklook(path: Path, site: str, items: Sequence[Mapping[str, Any]]) -> Path:
    """One site's sheet (see the module doc), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    ordered = sorted(items, key=lambda d: (str(d["properties"]["datetime"]), str(d["id"])))
    panels = [p for item in ordered for p in _panels(item)]
    cols = min(4, max(1, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, kind) in zip(axes.ravel(), panels, strict=False):
        if kind == "scl":
            ax.imshow(image, cmap=ListedColormap(SCL_COLOURS), vmin=-0.5, vmax=11.5,
                      interpolation="nearest")  # fmt: skip
        elif kind == "grey":
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"demo world site {site}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), durable=False)
    return path


def write_quicklooks(
    root: Path, items: Mapping[str, Mapping[str, Any]], site_of: Mapping[str, str]
) -> list[Path]:
    """Every site's sheet under ``root/quicklooks``.

    Args:
        root: the world folder.
        items: item id -> STAC item dict (absolute hrefs).
        site_of: item id -> site id.

    Returns:
        The PNG paths, by site id.
    """
    by_site: dict[str, list[Mapping[str, Any]]] = {}
    for item_id, item in items.items():
        if item_id in site_of:
            by_site.setdefault(site_of[item_id], []).append(item)
    return [
        write_site_quicklook(root / QUICKLOOK_DIR / f"{site}.png", site, by_site[site])
        for site in sorted(by_site)
    ]
