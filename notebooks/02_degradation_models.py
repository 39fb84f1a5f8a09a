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
# # The degradation models: what harmonization does, and the fitted PSF
#
# SEN2NAIP's synthetic set brings NAIP's radiometry to Sentinel-2's (harmonization) and then
# blurs, downsamples and adds noise (degradation). As the paper published it, a synthetic image
# folder holds the NAIP HR and, per method, the histograms of its harmonized version; the
# harmonized HR and the S2-like LR are made on the fly (`degradation.pipeline.Degrader`, which
# `harvest.datasets.SEN2NAIP` runs per sample). Here we look at one image of the demo dataset
# (`$HARVEST_NOTEBOOK_DATASET`, else built into `demo-out/`), then fit the degradation on its
# real LR/HR pairs and compare the fitted PSF with the demo world's ground truth.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import yaml

from degradation.pipeline import Degrader
from degradation.pretrained import load_model
from harvest.config import BuildConfig
from harvest.demo.truth import load_truth
from harvest.pipeline import run_build

dataset = Path(os.environ.get("HARVEST_NOTEBOOK_DATASET", "demo-out"))
if not (dataset / "dataset.json").exists():
    run_build(
        BuildConfig.model_validate(
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
    )
image = sorted((dataset / "synthetic").glob("*/*/metadata.json"))[0].parent
meta = json.loads((image / "metadata.json").read_text())
print(image.relative_to(dataset), meta["bands"], list(meta["methods"]))


# %%
def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read().astype(np.float32)


def show(data: np.ndarray) -> np.ndarray:
    rgb = np.moveaxis(data[:3], 0, -1)
    return np.clip(rgb / 0.3, 0, 1)  # the same fixed stretch for every panel


methods = ("statistical", "deterministic", "variational")
hr = read(image / "HR.tif") / 10_000  # uint16 reflectance x 10,000
model = load_model("sen2naip")
made = {m: Degrader.from_model(model, mode=m)(hr, 0) for m in methods}
fig, axes = plt.subplots(2, 4, figsize=(14, 7))
axes[0, 0].imshow(show(hr))
axes[0, 0].set_title("NAIP HR (as read)")
axes[1, 0].axis("off")
for k, method in enumerate(methods, start=1):
    axes[0, k].imshow(show(np.asarray(made[method].hr)))
    axes[0, k].set_title(f"HR {method}")
    axes[1, k].imshow(show(np.asarray(made[method].lr)))
    axes[1, k].set_title(f"LR {method} (10 m)")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %% [markdown]
# ## What each method does to the histograms
# Per band, the reflectance histogram of the NAIP image before and after harmonization: the
# statistical method is a per-band gamma, the deterministic one a U-Net, the variational one a
# VAE that predicts the 120-bin histogram to match.

# %%
bins = np.linspace(0, 0.6, 121)
fig, axes = plt.subplots(1, 4, figsize=(15, 3.5), sharey=True)
for b, ax in enumerate(axes):
    ax.hist(hr[b].ravel(), bins=bins, histtype="step", color="k", label="NAIP")
    for method in methods:
        ax.hist(np.asarray(made[method].hr)[b].ravel(), bins=bins, histtype="step",
                label=method)  # fmt: skip
    ax.set_title(meta["bands"][b])
axes[0].legend()
plt.show()

# %% [markdown]
# ## Fitting the degradation on the real pairs
# `harvest degradation fit` fits, per band, the Gaussian PSF width (by MAE against the real
# Sentinel-2 chip, after registration), the gamma of the statistical model and the noise. The
# demo world knows the PSF it rendered each Sentinel-2 scene with.

# %%
from harvest.stages import fit  # noqa: E402

summary = fit.run(dataset, "fitted-model", split="all")
print(summary.line())
config = yaml.safe_load((dataset / "config.yaml").read_text())
world = Path(config["catalog"]["world"] or dataset / ".harvest" / "demo-world")
truth = load_truth(world / "truth.json")
manifest_ids = [
    json.loads(p.read_text())["s2_id"]
    for p in sorted((dataset / "cross-sensor").glob("*/metadata.json"))
]
lr_bands = ("B04", "B03", "B02", "B08")  # the recipe's LR bands, in the fit's order
true_sigma = {
    band: np.mean(
        [b.psf_sigma_hr_px for s in manifest_ids for b in truth.scene(s).bands if b.band == band]
    )
    for band in lr_bands
}
for band, fitted in zip(lr_bands, summary.sigma_px, strict=True):
    print(f"{band}: fitted sigma {fitted:.2f} HR px, world's truth {true_sigma[band]:.2f} HR px")
