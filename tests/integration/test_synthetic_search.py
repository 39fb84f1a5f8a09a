"""The synthetic set's early/late search through a real STAC API and a stac-geoparquet snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harvest.backends.registry import open_catalog
from harvest.demo.truth import NaipSceneTruth, load_truth
from harvest.recipes import load_recipe
from harvest.stages import _synthetic as synthetic
from harvest.stages import sample
from harvest.stages.search import search_window


def test_stac_api_and_geoparquet_choose_the_same_early_and_late_naip(
    demo_stac: Any, demo_world: Path, tmp_path: Path
) -> None:
    rois = tmp_path / "rois.parquet"
    sample.run(n=8, output=rois, region=demo_world / "region.geojson", seed=0, min_distance_km=1.25)
    recipe = synthetic.synthetic_recipe(load_recipe("sen2naip"), 400)
    first, last = search_window(recipe, None, None)
    chosen = {}
    for name, source, profile in (
        ("api", demo_stac.server.url, "demo"),
        ("parquet", str(demo_world), None),
    ):
        out = tmp_path / name
        out.mkdir()
        catalog = open_catalog(source, profile=profile).catalog
        found = synthetic.search(
            rois, recipe=recipe, catalog=catalog, out_dir=out, start=first, end=last
        )
        assert found.n_rois == found.n_searched == 8
        rows = synthetic.read_acquisitions(out / synthetic.ACQUISITIONS)
        chosen[name] = [
            (a.roi_id, a.status, a.early and a.early.item_id, a.late and a.late.item_id)
            for a in rows
        ]
        # A second search finds every ROI done and asks the catalog nothing.
        again = synthetic.search(
            rois, recipe=recipe, catalog=None, out_dir=out, start=first, end=last
        )  # type: ignore[arg-type]
        assert again.n_searched == 0 and again.n_chosen == found.n_chosen
    assert chosen["api"] == chosen["parquet"]
    # Each chosen pair is its site's oldest and newest NAIP, as the world made them.
    truth = load_truth(demo_world / "truth.json")
    naip = [s for s in truth.scenes if isinstance(s, NaipSceneTruth)]
    for _, status, early, late in chosen["api"]:
        if status == "chosen":
            site = next(s.site_id for s in naip if s.item_id == early)
            dates = sorted((s.datetime, s.item_id) for s in naip if s.site_id == site)
            assert (early, late) == (dates[0][1], dates[-1][1])
    assert {c[1] for c in chosen["api"]} >= {"chosen", "single_acquisition"}
