"""Benchmark `harvest degradation fit`: seconds per pair and accuracy against the world's truth.

Issue 16's target: <= 0.5 s per pair on 2 cores (it took ~3.4 s) at the same accuracy: every
scene's sigma within 0.05 HR px and every chip's gamma within 0.005 of the demo world's truth.

Pairs: the clean sen2naip pairs of the demo world (seed 0), each at six ROI offsets inside its
site (4 scenes x 6 = 24 chips of 4 x 484 x 484 HR), fetched by the fetch stage. Timed, on the same
pairs, in one run:

- ``harvest degradation fit PAIRS -o MODEL --split all`` in a subprocess: wall time (interpreter
  start and imports included) and the stage's own time (reading, fit, Table 2, writing);
- ``fit_pairs`` in this process (the fit alone, two rounds);
- the peer: the same fit as it ran before issue 16 (``baseline_fit`` below: the registered model
  evaluated on the whole chip as dense [h, H] matrices, then cropped; every search cold:
  full-range grid + golden section for gamma and sigma, the coarse + fine shift search in every
  round). Skip it with ``--no-baseline`` (it takes minutes).

Usage: .venv/bin/python bench/bench_fit.py [--offsets 6] [--no-baseline]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from degradation.fit import PairChip, RegisteredPSF, fit_pairs, fit_sigma, registration_shifts
from degradation.harmonize.gamma import apply_gamma, fit_gamma
from degradation.psf import SEN2NAIP_SIGMA_PX
from harvest.demo.pairs import truth_pair_rows
from harvest.demo.truth import S2SceneTruth, load_truth
from harvest.demo.world import WORLD_FORMAT, run_demo_world
from harvest.recipes import load_recipe
from harvest.stages import fit as stage
from harvest.stages.fetch import run as run_fetch
from harvest.stages.fit import read_pairs

LR_BANDS = ("B04", "B03", "B02", "B08")
#: ROI offsets (east, north metres from each site's chip-safe centre): up to six per scene.
OFFSETS_M = ((-300.0, -300.0), (300.0, 300.0), (-300.0, 300.0), (300.0, -300.0), (0.0, 0.0),
             (0.0, -300.0))  # fmt: skip
MARGIN_PX = 6


def _old_refine_shift(
    op: RegisteredPSF, hr_h: torch.Tensor, lr_inner: torch.Tensor, sigma: np.ndarray
) -> tuple[float, float]:
    """The shift search before issue 16: every step the whole chip's dense model."""
    m = MARGIN_PX

    def cost(de: float, dn: float) -> float:
        moved = RegisteredPSF(
            tuple((e + de, n + dn) for e, n in op.shifts_m), op.hr_gsd_m, op.factor, op.size
        )
        pred = moved(hr_h, sigma)
        inner = pred[..., m : pred.shape[-2] - m, m : pred.shape[-1] - m]
        return float((inner - lr_inner).abs().double().mean())

    d = [0.0, 0.0]
    for step, reach in ((0.25, 1.0), (0.05, 0.25)):
        for axis in (0, 1):
            offsets = np.arange(-reach, reach + step / 2, step)
            values = []
            for o in offsets:
                trial = list(d)
                trial[axis] += float(o)
                values.append(cost(trial[0], trial[1]))
            k = int(np.argmin(values))
            best = float(offsets[k])
            if 0 < k < len(values) - 1:
                a, b, c = values[k - 1], values[k], values[k + 1]
                if a - 2 * b + c > 0:
                    best += float(np.clip(0.5 * (a - c) / (a - 2 * b + c), -0.5, 0.5)) * step
            d[axis] += best
    return d[0], d[1]


def baseline_fit(chips: Sequence[PairChip], iterations: int = 2) -> dict[str, object]:
    """Gamma per chip, sigma and shift per scene, as ``fit_pairs`` computed them before."""
    m = MARGIN_PX
    shifts = registration_shifts(chips, "scene")
    scenes: dict[str, list[int]] = {}
    for i, c in enumerate(chips):
        scenes.setdefault(c.scene_id, []).append(i)
    gammas = np.zeros((len(chips), 4))
    sigmas: dict[str, np.ndarray] = {}
    for scene_id, idx in scenes.items():
        hr = torch.from_numpy(np.stack([chips[i].hr for i in idx]))
        lr = torch.from_numpy(np.stack([chips[i].lr for i in idx]))
        lr_inner = lr[..., m:-m, m:-m]
        op = RegisteredPSF(
            tuple(shifts[i] for i in idx), chips[idx[0]].hr_gsd_m, 4, tuple(hr.shape[-2:])
        )
        sigma = np.array(SEN2NAIP_SIGMA_PX)
        g = np.zeros((len(idx), 4))
        for _ in range(iterations):
            with torch.no_grad():

                def reduce(
                    t: torch.Tensor, op: RegisteredPSF = op, s: np.ndarray = sigma
                ) -> torch.Tensor:
                    return op(t, s)[..., m:-m, m:-m]

                g = np.asarray(fit_gamma(hr, lr_inner, reduce=reduce, tol=1e-3)).reshape(
                    len(idx), 4
                )
                hr_h = apply_gamma(hr, g)
                assert isinstance(hr_h, torch.Tensor)
                sigma = np.asarray(
                    fit_sigma(hr_h, lr, 4, margin_px=m, forward=op, tol_px=5e-3).sigma_px
                )
                de, dn = _old_refine_shift(op, hr_h, lr_inner, sigma)
                for i in idx:
                    shifts[i] = (shifts[i][0] + de, shifts[i][1] + dn)
                op = RegisteredPSF(tuple(shifts[i] for i in idx), op.hr_gsd_m, 4, op.size)
                sigma = np.asarray(
                    fit_sigma(hr_h, lr, 4, margin_px=m, forward=op, tol_px=5e-3).sigma_px
                )
        gammas[idx] = g
        sigmas[scene_id] = sigma
    return {"gammas": gammas, "sigmas": sigmas}  # fmt: skip


def errors(
    chips: Sequence[PairChip], gammas: np.ndarray, sigmas: dict[str, np.ndarray], world: Path
) -> tuple[float, float]:
    """(max |sigma - truth| over scenes and bands, max |gamma - truth| over chips and bands)."""
    truth = load_truth(world)

    def band(scene_id: str, name: str) -> object:
        scene = truth.scene(scene_id)
        assert isinstance(scene, S2SceneTruth)
        return next(b for b in scene.bands if b.band == name)

    sigma_err = max(
        abs(float(s[k]) - band(sid, b).psf_sigma_hr_px)  # type: ignore[attr-defined]
        for sid, s in sigmas.items()
        for k, b in enumerate(LR_BANDS)
    )
    gamma_err = max(
        abs(float(g[k]) - band(c.scene_id, b).transfer.gamma)  # type: ignore[attr-defined]
        for c, g in zip(chips, gammas, strict=True)
        for k, b in enumerate(LR_BANDS)
    )
    return sigma_err, gamma_err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offsets", type=int, default=6, help="ROI offsets per scene (1-6).")
    ap.add_argument("--no-baseline", action="store_true", help="Skip the pre-issue-16 fit.")
    args = ap.parse_args()
    world = Path(".cache/harvest") / f"demo-world-seed0-format{WORLD_FORMAT}"
    run_demo_world(out_dir=world, seed=0, progress=False)
    recipe = load_recipe("sen2naip")
    jobs = truth_pair_rows(world, recipe, OFFSETS_M[: args.offsets], clean_only=True, id_digits=5)
    print(f"# harvest degradation fit, {len(jobs)} pairs; torch threads {torch.get_num_threads()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows: list[tuple[str, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs"
        run_fetch(jobs, recipe, pairs)
        chips = read_pairs(pairs, split="all")
        n = len(chips)

        # The command on the first two offsets (a third of the pairs) and on all: the difference
        # is the cost per added pair, without the fixed start (interpreter, imports).
        few_jobs = truth_pair_rows(world, recipe, OFFSETS_M[:2], clean_only=True, id_digits=5)
        few = Path(tmp) / "few"
        run_fetch(few_jobs, recipe, few)
        walls = {}
        for folder, count in ((few, len(few_jobs)), (pairs, n)):
            t0 = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-m", "harvest.cli", "degradation", "fit", str(folder), "-o",
                 str(Path(tmp) / f"model-{count}"), "--split", "all", "--no-progress"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            walls[count] = time.perf_counter() - t0
            print(res.stdout.strip())
        wall = walls[n]
        n_few = len(few_jobs)
        slope = (walls[n] - walls[n_few]) / (n - n_few)

        t0 = time.perf_counter()
        stage.run(pairs, Path(tmp) / "model-2", split="all")
        stage_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        fit = fit_pairs(chips)
        fit_s = time.perf_counter() - t0
        sig = {sf.scene_id: np.array(sf.sigma_px) for sf in fit.scenes}
        s_err, g_err = errors(chips, fit.gammas, sig, world)
        rows.append(("`harvest degradation fit` (subprocess, wall)", wall, wall / n, s_err, g_err))
        rows.append(
            (f"`harvest degradation fit`: {n} pairs minus {n_few} pairs, per added pair",
             walls[n] - walls[n_few], slope, s_err, g_err)
        )  # fmt: skip
        rows.append(
            (
                "the stage in this process (read, fit, Table 2, write)",
                stage_s,
                stage_s / n,
                s_err,
                g_err,
            )
        )
        rows.append(
            ("`fit_pairs` alone (interior passes, warm starts)", fit_s, fit_s / n, s_err, g_err)
        )
        if not args.no_baseline:
            t0 = time.perf_counter()
            old = baseline_fit(chips)
            old_s = time.perf_counter() - t0
            s_err, g_err = errors(chips, old["gammas"], old["sigmas"], world)  # type: ignore[arg-type]
            rows.append(
                (
                    "peer: `fit_pairs` before issue 16 (dense full chip, cold searches)",
                    old_s,
                    old_s / n,
                    s_err,
                    g_err,
                )
            )
    print("\n| what | seconds | s per pair | max sigma error (px) | max gamma error |")
    print("|---|---:|---:|---:|---:|")
    for name, total, per, s_err, g_err in rows:
        print(f"| {name} | {total:.1f} | {per:.3f} | {s_err:.4f} | {g_err:.5f} |")


if __name__ == "__main__":
    main()
