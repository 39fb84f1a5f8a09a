"""QA against the truth of a larger demo world (`harvest demo world --sites 11`).

The four seeded CONUS sites beyond the standard seven bring a Sentinel-2 scene misregistered by
1.3-2 LR pixels (the truth's ``shift`` issue, from the simulator's own shift), besides clean
pairs and swath edges. As many ROIs as sites, 1.25 km apart (the demo spacing; a site's
chip-safe area is 1.15 km wide, so nearly always one per site): every chip whose pair the
truth calls clean is kept, every other one rejected with at least the truth's reasons (the
manifest's reason codes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd

from harvest.demo.truth import load_truth

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "builds" / "demo-sen2naip-cross-sensor.yaml"
N_SITES = 11  # conftest.LARGE_WORLD_SITES


def test_every_chip_is_judged_as_the_truth_says(large_demo_world: Path, tmp_path: Path) -> None:
    world11 = large_demo_world
    truth = load_truth(world11 / "truth.json")
    assert len(truth.sites) == N_SITES
    issues = {(p.lr_item_id, p.hr_item_id): p.issues for p in truth.pairs_for("sen2naip")}
    assert any(i == ["shift"] for i in issues.values())
    out = tmp_path / "ds"
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "build", str(CONFIG), "--set", f"output={out}",
         "--set", f"catalog.world={world11}", "--set", f"n={N_SITES}",
         "--no-progress"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    pairs = pd.read_parquet(out / "pairs.parquet").set_index("roi_id")
    manifest = gpd.read_parquet(out / "manifest.parquet")
    judged: dict[str, int] = {}
    for row in manifest.itertuples():
        key = (pairs.loc[row.roi_id, "lr_item_id"], pairs.loc[row.roi_id, "hr_item_id"])
        want = issues[key]
        reasons = {r.strip() for r in str(row.reasons or "").replace(";", ",").split(",")} - {""}
        assert (row.status == "kept") == (not want), (row.roi_id, want, reasons)
        assert set(want) <= reasons, (row.roi_id, want, reasons)
        label = "+".join(want) or "clean"
        judged[label] = judged.get(label, 0) + 1
    assert judged.get("shift", 0) >= 1 and judged.get("clean", 0) >= 3, judged
