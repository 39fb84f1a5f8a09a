"""QA against the demo world's truth on a large world: the confusion of kept / rejected chips.

Issue 13: on a world with ``--sites 40``, every chip whose pair the truth calls clean must be
kept, and every chip whose pair has truth issues rejected with (at least) those reasons. This
builds (or reuses) the world, runs ``harvest build configs/builds/demo-sen2naip-cross-sensor.yaml``
with one ROI per site, and prints the confusion and each disagreement.

Usage: .venv/bin/python bench/bench_world_confusion.py [--sites 40] [--world DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pandas as pd

from harvest.demo.truth import load_truth

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "builds" / "demo-sen2naip-cross-sensor.yaml"


def main() -> None:
    """Build, compare with the truth, print the confusion."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--world", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    harvest = str(Path(sys.executable).parent / "harvest")
    with tempfile.TemporaryDirectory() as tmp:
        world = args.world or Path(tmp) / "world"
        out = args.out or Path(tmp) / "ds"
        t0 = time.perf_counter()
        subprocess.run(
            [harvest, "demo", "world", str(world), "--sites", str(args.sites), "--no-progress"],
            check=True,
        )
        t_world = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(
            [harvest, "build", str(CONFIG), "--set", f"output={out}", "--set",
             f"catalog.world={world}", "--set", f"n={args.sites}", "--no-progress"],
            check=True,
        )  # fmt: skip
        t_build = time.perf_counter() - t0
        truth = load_truth(world / "truth.json")
        issues = {(p.lr_item_id, p.hr_item_id): p.issues for p in truth.pairs_for("sen2naip")}
        pairs = pd.read_parquet(out / "pairs.parquet").set_index("roi_id")
        manifest = gpd.read_parquet(out / "manifest.parquet")
        confusion: Counter[tuple[str, str]] = Counter()
        problems = []
        for row in manifest.itertuples():
            key = (pairs.loc[row.roi_id, "lr_item_id"], pairs.loc[row.roi_id, "hr_item_id"])
            if key not in issues:
                confusion[("no truth pair", str(row.status))] += 1
                continue
            want = issues[key]
            truth_label = "clean" if not want else "+".join(want)
            confusion[(truth_label, str(row.status))] += 1
            reasons = set(str(row.reasons or "").replace(";", ",").split(",")) - {""}
            if (not want) != (row.status == "kept") or not set(want) <= reasons:
                problems.append((row.roi_id, key[0], truth_label, row.status, sorted(reasons)))
    print(f"world: {args.sites} sites, built in {t_world:.0f} s; build: {t_build:.0f} s; "
          f"{len(manifest)} ROIs")  # fmt: skip
    print("| truth | harvest | chips |")
    print("|---|---|---|")
    for (label, status), n in sorted(confusion.items()):
        print(f"| {label} | {status} | {n} |")
    print(f"disagreements: {len(problems)}")
    for p in problems:
        print("  ", p)


if __name__ == "__main__":
    main()
