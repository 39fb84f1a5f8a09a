"""Benchmark `harvest build configs/builds/demo.yaml` (what `make demo` runs after set-up).

The issue's target: <= 3 min on 2 cores after set-up. Runs the command from the shell (a
subprocess: interpreter start, imports, the demo world's simulation, every stage), on an empty
output folder, then again on the same folder (every stage reused), --repeat times each, and
prints the per-stage times the command reports.

Usage: .venv/bin/python bench/bench_build.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARVEST = str(Path(sys.executable).parent / "harvest")
CONFIG = REPO / "configs" / "builds" / "demo.yaml"
STEP = re.compile(r"^\s*(.+?): .*\[(\d+\.\d+) s\]$")


def build(out: Path) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [HARVEST, "build", str(CONFIG), "--set", f"output={out}", "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - t0
    steps = {}
    for line in res.stdout.splitlines():
        m = STEP.match(line)
        if m:
            steps[m.group(1)] = float(m.group(2))
    return wall, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"# harvest build {CONFIG.relative_to(REPO)}: {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}"
    )
    fresh: list[float] = []
    again: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "demo-out"
            wall, steps = build(out)
            fresh.append(wall)
            for k, v in steps.items():
                stages.setdefault(k, []).append(v)
            again.append(build(out)[0])
    print("\n| run | median s | min s | max s |\n|---|---:|---:|---:|")
    for name, values in (("empty folder (world included)", fresh), ("again (all reused)", again)):
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {max(values):.1f} |")
    print("\n| stage (empty folder) | median s |\n|---|---:|")
    for k, v in stages.items():
        print(f"| {k} | {statistics.median(v):.1f} |")
    target = 180.0
    verdict = "met" if max(fresh) <= target else "NOT met"
    print(f"\ntarget <= {target:.0f} s after set-up: {verdict} (slowest run {max(fresh):.1f} s)")


if __name__ == "__main__":
    main()
