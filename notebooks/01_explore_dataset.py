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
# # Explore a built dataset
#
# `harvest build CONFIG` leaves a folder that describes itself: `dataset.json` (version,
# counts), `manifest.parquet` (one row per chip with its QA outcome), the ROI and pairs tables,
# a STAC Collection and a card. This notebook reads them. It uses the dataset named by
# `$HARVEST_NOTEBOOK_DATASET`, else builds the demo dataset (`configs/builds/demo.yaml`:
# SEN2NAIP cross-sensor + synthetic + pruning on the offline demo world) into `demo-out/`.

# %%
import json
import os
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from IPython.display import display

from harvest.config import BuildConfig
from harvest.pipeline import run_build

dataset = Path(os.environ.get("HARVEST_NOTEBOOK_DATASET", "demo-out"))
if not (dataset / "dataset.json").exists():
    config = BuildConfig.model_validate(
        {
            "recipe": "sen2naip",
            "catalog": "demo",
            "region": "demo-world",
            "n": 8,
            "min_distance_km": 1.25,
            "output": str(dataset),
            "products": ["cross-sensor", "synthetic"],
            "synthetic": {"chip_px": 400},
            "prune": {"clusters": 1, "model": "demo"},
        }
    )
    run_build(config)
record = json.loads((dataset / "dataset.json").read_text())
print(record["name"], record["version"], record["recipe"], record["products"])
display(record["counts"])

# %% [markdown]
# ## Where the ROIs are, and what became of them
# Every sampled ROI, coloured by its outcome: kept, rejected by QA, or never paired by the
# search (no acquisition pair within the recipe's rules).

# %%
rois = gpd.read_parquet(dataset / "rois.parquet")
manifest = gpd.read_parquet(dataset / "manifest.parquet")
status = dict(zip(manifest.roi_id, manifest.status, strict=True))
rois["outcome"] = [status.get(r, "not paired") for r in rois.roi_id]
colours = {"kept": "tab:green", "rejected": "tab:orange", "failed": "tab:red",
           "not paired": "tab:grey"}  # fmt: skip
fig, ax = plt.subplots(figsize=(8, 4))
for outcome, group in rois.groupby("outcome"):
    ax.scatter(group.geometry.x, group.geometry.y, c=colours[outcome], label=outcome, s=30)
ax.set_xlabel("longitude")
ax.set_ylabel("latitude")
ax.legend()
ax.set_title(f"{len(rois)} ROIs")
plt.show()

# %% [markdown]
# ## LR and HR side by side
# A kept chip: Sentinel-2 at 10 m (121 x 121 px) over NAIP at 2.5 m (484 x 484 px), the same
# footprint on the same nested grid.


# %%
def rgb(path: Path) -> np.ndarray:
    """Bands 1-3 (red, green, blue) stretched to 2-98 % for display."""
    with rasterio.open(path) as src:
        data = src.read([1, 2, 3]).astype(np.float32)
    lo, hi = np.nanpercentile(data, [2, 98])
    return np.clip((np.moveaxis(data, 0, -1) - lo) / (hi - lo + 1e-9), 0, 1)


kept = manifest[manifest.status == "kept"].sort_values("roi_id")
roi = kept.roi_id.iloc[0]
folder = dataset / kept.folder.iloc[0]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
for ax, name in zip(axes, ("LR.tif", "HR.tif"), strict=True):
    with rasterio.open(folder / name) as src:
        ax.set_title(f"{roi} {name} {src.width} x {src.height} px, {src.res[0]:g} m")
    ax.imshow(rgb(folder / name))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## QA: misregistration (QA_1) and spectral angle (QA_2), and why chips were rejected

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
axes[0].hist(manifest.qa1_px.dropna(), bins=10, color="tab:blue")
axes[0].axvline(1.0, color="tab:red")
axes[0].set_title("QA_1 shift (LR px), limit 1")
axes[1].hist(manifest.qa2_deg.dropna(), bins=10, color="tab:blue")
axes[1].axvline(2.0, color="tab:red")
axes[1].set_title("QA_2 spectral angle (deg), limit 2")
reasons = (
    manifest.loc[manifest.status == "rejected", "reasons"].str.split(";").explode().value_counts()
)
axes[2].barh(reasons.index, reasons.to_numpy(), color="tab:orange")
axes[2].set_title("rejections per reason")
plt.tight_layout()
plt.show()
display(reasons)

# %% [markdown]
# ## The same dataset as STAC
# One item per sample; `ml-aoi:split` says train or test, and the assets point at the files.

# %%
import pystac  # noqa: E402

collection = pystac.Collection.from_file(str(dataset / "stac" / "collection.json"))
for item in collection.get_items():
    print(item.id, item.properties["ml-aoi:split"], sorted(item.assets))
