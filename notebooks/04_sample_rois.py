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
# # Sampling ROIs with a hard-core point process
#
# SEN2NAIP drew its regions of interest over CONUS so that every two of them are at least 5 km
# apart. `harvest sample` does the same with random sequential adsorption on the WGS84
# ellipsoid. This notebook draws ROIs, checks the spacing independently, and extends the set
# without breaking it.

# %%
from pathlib import Path

import geopandas as gpd
import numpy as np
from pyproj import Geod
from sklearn.neighbors import BallTree

from harvest.regions import load_region
from harvest.stages.sample import run as run_sample

out = Path("rois.parquet")
summary = run_sample(n=2000, output=out, region="conus", seed=7, min_distance_km=5.0)
rois = gpd.read_parquet(out)
print(summary)
rois.head()

# %% [markdown]
# ## Every pair at least 5 km apart
# A haversine BallTree finds the nearest neighbour of every ROI; the closest pairs are then
# measured on the ellipsoid.

# %%
lonlat = np.column_stack([rois.geometry.x, rois.geometry.y])
tree = BallTree(np.radians(lonlat[:, ::-1]), metric="haversine")
dist, idx = tree.query(np.radians(lonlat[:, ::-1]), k=2)
nearest = idx[:, 1]
_, _, d_m = Geod(ellps="WGS84").inv(
    lonlat[:, 0], lonlat[:, 1], lonlat[nearest, 0], lonlat[nearest, 1]
)
print(f"closest pair: {d_m.min():.1f} m; median nearest neighbour: {np.median(d_m) / 1000:.1f} km")
assert d_m.min() >= 5000.0

# %% [markdown]
# ## Where the chips will be cut
# Each ROI carries its UTM zone (the CRS its chips are cut in) and its Sentinel-2 MGRS tile.

# %%
print(rois["utm_epsg"].value_counts().sort_index().to_string())
print(rois["mgrs_tile"].nunique(), "MGRS tiles")

# %% [markdown]
# ## Extending a dataset
# New ROIs keep the distance to the existing ones and their ids continue after them.

# %%
more = Path("more_rois.parquet")
run_sample(n=500, output=more, region="conus", seed=8, min_distance_km=5.0, exclude=out)
new = gpd.read_parquet(more)
both = np.column_stack(
    [np.r_[rois.geometry.x, new.geometry.x], np.r_[rois.geometry.y, new.geometry.y]]
)
tree = BallTree(np.radians(both[:, ::-1]), metric="haversine")
pairs = tree.query_radius(np.radians(both[:, ::-1]), r=5000.0 / 6371008.8 * 1.01)
close = np.array([(i, j) for i, js in enumerate(pairs) for j in js if i < j]).reshape(-1, 2)
_, _, d_close = Geod(ellps="WGS84").inv(
    both[close[:, 0], 0], both[close[:, 0], 1], both[close[:, 1], 0], both[close[:, 1], 1]
)
print("new ids:", new.roi_id.iloc[0], "...", new.roi_id.iloc[-1])
print("pairs under 5 km (geodesic):", int((d_close < 5000.0).sum()))
assert (d_close >= 5000.0).all()
assert not set(new.roi_id) & set(rois.roi_id)

# %% [markdown]
# ## Capacity
# A region holds only so many ROIs at a given spacing; asking for more fails at once.

# %%
region = load_region("conus")
print(f"CONUS: {region.area_m2 / 1e6:,.0f} km2")
