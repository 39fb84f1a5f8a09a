"""Benchmark `harvest demo world DIR --sites N`: build time, memory and what the world holds.

Issue 13's target: at ``--sites 40`` the world holds at least 40 sen2naip cross-sensor pairs
and builds in a few minutes on 2 cores. Each size is built from scratch by the real command in
a subprocess (two rendering processes, as by default); peak memory is the largest resident set
of the command and its workers. The default world (7 sites, what ``make demo`` builds) runs
beside it for scale.

Usage: .venv/bin/python bench/bench_demo_world.py [--sites 7 40]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harvest.demo.truth import load_truth

REPO = Path(__file__).resolve().parents[1]


def build(n_sites: int, root: Path) -> dict[str, float | int]:
    """Build one world; its wall time, peak memory, sites, pairs and size on disk."""
    out = root / f"world-{n_sites}"
    harvest = Path(sys.executable).parent / "harvest"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(
        [str(harvest), "demo", "world", str(out), "--sites", str(n_sites), "--no-progress"],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    truth = load_truth(out / "truth.json")
    pairs = truth.pairs_for("sen2naip")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return {
        "sites": len(truth.sites),
        "scenes": len(truth.scenes),
        "sen2naip_pairs": len(pairs),
        "clean": sum(p.clean for p in pairs),
        "seconds": round(seconds, 1),
        "peak_mib": round(max(peak_kib, before) / 1024),
        "mb": round(size / 1e6),
    }


def main() -> None:
    """Build each size and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[7, 40])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sites:
            rows.append(build(n, Path(tmp)))
            print(f"--sites {n}: {rows[-1]}", file=sys.stderr)
    print("| --sites | scenes | sen2naip pairs (clean) | build s | peak MiB | MB on disk |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sites']} | {r['scenes']} | {r['sen2naip_pairs']} ({r['clean']}) | "
            f"{r['seconds']} | {r['peak_mib']} | {r['mb']} |"
        )


if __name__ == "__main__":
    main()
