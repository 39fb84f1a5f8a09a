"""The demo world's truth pairs as pairs-table rows, for the fetch stage, tests and benchmarks.

`harvest search` finds these pairs through a catalog; this module builds the same rows directly
from ``truth.json`` so a stage further down the pipeline can be exercised on known pairs, with
ROIs placed anywhere in each site's chip-safe area.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pyproj import Transformer

from harvest.backends.profiles import load_profile, parse_item
from harvest.demo.stac import item_dicts_absolute
from harvest.demo.truth import load_truth
from harvest.errors import DemoWorldError
from harvest.pairing import RoiFootprint, pair_scenes
from harvest.recipes import Recipe, load_recipe
from harvest.tables import PairRow


def truth_pair_rows(
    world_dir: str | Path,
    recipe: Recipe | str = "sen2naip",
    offsets_m: Iterable[tuple[float, float]] = ((0.0, 0.0),),
    *,
    clean_only: bool = False,
    id_digits: int = 6,
) -> list[PairRow]:
    """One row per (truth pair of the recipe, offset of the ROI from its site's chip-safe centre).

    Args:
        world_dir: The demo world folder.
        recipe: Recipe (or its name) whose truth pairs to take; its LR chip sizes the ROI.
        offsets_m: ``(east, north)`` offsets in metres from the centre of the chip-safe area.
        clean_only: Only pairs whose chips pass QA anywhere on the site.
        id_digits: Zero-padding of the ``ROI_`` ids, numbered 1, 2, ... in row order.

    Returns:
        The rows, pairs in truth order, offsets inner.

    Raises:
        DemoWorldError: a truth pair does not pair at an offset (the offset leaves the site).
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    truth = load_truth(world_dir)
    profile = load_profile("demo")
    wanted = {rec.lr.collection, rec.hr.collection}
    scenes = {
        d["id"]: parse_item(d, profile)
        for d in item_dicts_absolute(world_dir)
        if d["collection"] in wanted
    }
    offsets = list(offsets_m)
    rows: list[PairRow] = []
    for p in truth.pairs_for(rec.name):
        if clean_only and not p.clean:
            continue
        site = truth.site(p.site_id)
        b = site.chip_safe_bounds
        to_ll = Transformer.from_crs(site.utm_epsg, 4326, always_xy=True)
        for dx, dy in offsets:
            lon, lat = to_ll.transform((b.xmin + b.xmax) / 2 + dx, (b.ymin + b.ymax) / 2 + dy)
            rid = f"ROI_{len(rows) + 1:0{id_digits}d}"
            roi = RoiFootprint.square(rid, lon, lat, rec.lr.chip_side_m, site.utm_epsg)
            paired = pair_scenes([roi], [scenes[p.lr_item_id]], [scenes[p.hr_item_id]], rec)
            if len(paired.pairs) != 1:
                raise DemoWorldError(
                    f"truth pair {p.lr_item_id} / {p.hr_item_id} does not pair at offset "
                    f"({dx}, {dy}) m: keep offsets inside the site's chip-safe area"
                )
            rows.append(PairRow(rid, float(lon), float(lat), site.utm_epsg, paired.pairs[0]))
    return rows
