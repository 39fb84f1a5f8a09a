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
# # The Sentinel-HR series: guides, targets, and two trivial baselines scored
#
# `products: [sentinel-hr]` builds, per VENuS site, a 5 m **guide** series (VENuS thinned to a
# revisit, standing for Sentinel-HR) and **target** dates where Sentinel-2 (brought to 25 m)
# and VENuS (the 5 m reference) are less than a day apart. A fusion method predicts each target
# at 5 m from the guides and the 25 m image; `harvest evaluate` scores it. Here we build the
# demo twin, look at the stores, and score the benchmark's two trivial methods: the nearest
# guide in time (temporal interpolation) and the 25 m image upsampled (spatial interpolation).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from IPython.display import display
from scipy import ndimage

from harvest.config import BuildConfig
from harvest.pipeline import run_build
from harvest.stages import evaluate

world = os.environ.get("HARVEST_NOTEBOOK_WORLD")  # a demo world to reuse, else built here
config = BuildConfig.model_validate(
    {
        "recipe": "sentinel-hr",
        "catalog": {"source": "demo", "world": world},
        "region": "demo-world",
        "output": str(Path("sentinel-hr").resolve()),
        "products": ["sentinel-hr"],
        "sentinel_hr": {"guide_revisit_days": 30},  # the demo has 2 VENuS dates per site
    }
)
built = run_build(config)
print(built.version, built.counts)

# %% [markdown]
# ## The stores
# Two CF-style Zarr stores per site: reflectance as int16 with a scale factor, decoded to
# float by xarray, invalid pixels (clouds, outside the swath) as NaN.

# %%
site = sorted(p.parent.name for p in built.output.glob("*/targets.zarr"))[0]
guides = xr.open_zarr(built.output / site / "guides.zarr")
targets = xr.open_zarr(built.output / site / "targets.zarr")
display(targets)
print("guide dates: ", [str(t)[:10] for t in guides.time.values])
print("target dates:", [str(t)[:10] for t in targets.time.values])


# %%
def rgb(cube: np.ndarray) -> np.ndarray:
    """B04 B03 B02 of a [band, y, x] cube, stretched for display."""
    img = np.moveaxis(cube[[2, 1, 0]], 0, -1)
    lo, hi = np.nanpercentile(img, (2, 98))
    return np.nan_to_num(np.clip((img - lo) / (hi - lo), 0, 1))


fig, axes = plt.subplots(1, 3, figsize=(12, 4))
panels = (
    (guides.reflectance.values[0], f"guide {str(guides.time.values[0])[:10]} (5 m)"),
    (targets.lr.values[0], f"target S2 at {targets.attrs['lr_gsd_m']:g} m"),
    (targets.reference.values[0], "target reference, VENuS 5 m"),
)
for ax, (cube, title) in zip(axes, panels, strict=True):
    ax.imshow(rgb(cube))
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Two trivial predictions, scored
# Each prediction is a store on the reference's grid (the reference's `x`, `y`, `band` and
# `time`), so `harvest evaluate` compares them directly: RMSE, PSNR, UIQI, CE90, SAM, ERGAS and
# the structural R, per band and on NDVI, on all pixels and on the low / high gradient strata.

# %%
ratio = float(targets.attrs["ratio"])
coords = {
    "time": targets.time.values,
    "band": targets.band.values,
    "y": targets.y.values,
    "x": targets.x.values,
}
shape = targets.reference.shape[-2:]
nearest_guide = np.stack(
    [guides.reflectance.sel(time=t, method="nearest").values for t in targets.time.values]
)
upsampled = np.stack(
    [
        [ndimage.zoom(np.nan_to_num(b), ratio, order=1)[: shape[0], : shape[1]] for b in date]
        for date in targets.lr.values
    ]
)
scores = {}
for name, cube in (("nearest guide", nearest_guide), ("upsampled S2", upsampled)):
    path = Path(f"{name.replace(' ', '-')}.zarr")
    xr.Dataset({"prediction": (("time", "band", "y", "x"), cube)}, coords=coords).to_zarr(
        path, mode="w", zarr_format=2
    )
    report = evaluate.run(path, built.output / site / "targets.zarr", ratio=1 / ratio).report
    scores[name] = report["scores"]["all"]
for name, s in scores.items():
    bands = s["bands"]
    print(
        f"{name:14s} RMSE B04 {bands['B04']['rmse']:.4f}  struct R B04 "
        f"{bands['B04']['struct_r']:.3f}  NDVI CE90 {s['ndvi']['ce90']:.3f}  "
        f"SAM {s['sam_deg']:.2f} deg  ERGAS {s['ergas']:.2f}"
    )

# %% [markdown]
# The nearest guide keeps the 5 m edges (a high structural R) but carries whatever changed
# since; the upsampled S2 has the target date's radiometry but not its detail. A fusion method
# should beat both on every metric. On the demo world the land does not change between dates
# yet, so the nearest guide wins everywhere here: a world with real change is still to come
# (the demo world's next version).
