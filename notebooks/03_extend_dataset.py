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
# # Extend a dataset, and read its changelog
#
# `harvest extend DATASET --n N` is the scheduled job: new ROIs (kept apart from every existing
# one), new acquisitions for the ROIs without a kept chip, QA, incremental pruning, then a new
# version with a changelog entry. Here: a small cross-sensor dataset of 2 ROIs on the demo world,
# extended by 5 ROIs, as cron would run it (`--json`: one line for the scheduler's log).

# %%
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
from IPython.display import display

from harvest.config import BuildConfig
from harvest.pipeline import run_build

world = os.environ.get("HARVEST_NOTEBOOK_WORLD")  # a demo world to reuse, else built here
config = BuildConfig.model_validate(
    {
        "recipe": "sen2naip",
        "catalog": {"source": "demo", "world": world},
        "region": "demo-world",
        "n": 2,
        "min_distance_km": 1.25,
        "output": str(Path("small-dataset").resolve()),
        "prune": {"clusters": 1, "model": "demo"},
    }
)
built = run_build(config)
print(built.version, built.counts)

# %%
before = gpd.read_parquet(built.output / "rois.parquet")
run = subprocess.run(
    [sys.executable, "-m", "harvest.cli", "extend", str(built.output), "--n", "5", "--json",
     "--no-progress"],
    capture_output=True, text=True,
)  # fmt: skip
print("exit status", run.returncode)  # 0 new version, 3 nothing new, 4 busy, 75 retry later
summary = json.loads(run.stdout)
display(summary)

# %%
print((built.output / "CHANGELOG.md").read_text())

# %% [markdown]
# The new ROIs keep the 1.25 km spacing from the old ones; their ids continue after them.

# %%
after = gpd.read_parquet(built.output / "rois.parquet")
new = after[~after.roi_id.isin(before.roi_id)]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.scatter(before.geometry.x, before.geometry.y, s=60, label="before", color="tab:blue")
ax.scatter(new.geometry.x, new.geometry.y, s=25, label="added", color="tab:orange")
ax.legend()
plt.show()
print(list(new.roi_id), json.loads((built.output / "dataset.json").read_text())["version"])
