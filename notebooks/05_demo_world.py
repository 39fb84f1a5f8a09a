# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The demo world: a small offline world that knows its own ground truth
#
# `harvest demo world OUT` renders a synthetic landscape at a few sites and, from it, scenes
# shaped like NAIP, Sentinel-2 L2A, VENuS and Sentinel-1 products, as COGs catalogued as STAC.
# Every scene's degradation parameters are written to `truth.json`, so what the pipeline
# estimates can be checked. Here we build a reduced world (one site, small) to keep it quick.

# %%
from pathlib import Path

import numpy as np
import pystac
import rasterio

from harvest.demo.truth import load_truth
from harvest.demo.world import run_demo_world

summary = run_demo_world(Path("world"), seed=0, site_size_m=1800.0, site_ids=("us-ia",))
print(summary)
truth = load_truth(summary.out_dir / "truth.json")

# %% [markdown]
# ## What is in it
# The static catalog holds one collection per product; items follow the providers' schemas.

# %%
catalog = pystac.Catalog.from_file(str(summary.out_dir / "catalog.json"))
for collection in catalog.get_children():
    items = list(collection.get_items())
    print(f"{collection.id:16s} {len(items):3d} items, e.g. {items[0].id}")

# %% [markdown]
# ## The pairs the search stage must find
# `truth.json` lists, per recipe, the acquisition pairs that satisfy the recipe's rules, and
# whether a chip of the pair would pass QA (cloud, nodata, blank).

# %%
for pair in truth.pairs_for("sen2naip"):
    print(
        f"{pair.lr_item_id}  <->  {pair.hr_item_id}  dt = {pair.dt_hours:+.1f} h  "
        f"cloud = {pair.s2_cloud_cover:.1f} %  clean = {pair.clean} {pair.issues}"
    )

# %% [markdown]
# ## The known degradation of one Sentinel-2 scene
# Per band: the radiometric transfer from NAIP, the Gaussian PSF sigma (in 2.5 m pixels), the
# noise level; per scene: the misregistration in metres.

# %%
s2 = next(s for s in truth.scenes if s.kind == "sentinel-2-l2a" and s.hr_source != "landscape")
print(s2.item_id, "shift (east, north) m:", s2.shift_m)
for band in s2.bands[:4]:
    print(
        f"  {band.band}: sigma = {band.psf_sigma_hr_px:.2f} HR px, "
        f"transfer = {band.transfer.kind}, noise std = {band.noise_std:.4f}"
    )

# %% [markdown]
# ## The pixels
# The COGs are tiled with overviews on the site's UTM grid; Sentinel-2 DN carry the L2A offset
# of processing baseline >= 04.00 when the scene's baseline says so.

# %%
item = next(i for i in catalog.get_items(recursive=True) if i.id == s2.item_id)
with rasterio.open(item.assets["B04"].get_absolute_href()) as src:
    red = src.read(1).astype(np.float64)
    print(src.crs, src.res, src.overviews(1), src.block_shapes[0])
reflectance = (red[red > 0] - s2.dn_offset) / 10000.0
median, p99 = np.median(reflectance), np.percentile(reflectance, 99)
print(f"B04 reflectance: median {median:.3f}, 99th percentile {p99:.3f}")
assert 0.0 < median < 0.3
