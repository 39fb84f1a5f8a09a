"""Benchmark the clustering of `harvest prune` against scikit-learn's and faiss' k-means.

Data: synthetic embeddings shaped like CLIP image embeddings of remote-sensing chips, seeded:
L2-normalised rows around a shared direction (CLIP embeddings of one domain sit in a narrow
cone: mean pairwise cosine ~0.45 here), drawn from a few thousand modes of very unequal size
(log-normal weights, modes grouped under a few dozen themes with Zipf weights, like the
agricultural bias pruning is meant to undo), with isotropic noise (cosine ~0.85 inside a mode).

Each method runs in its own child process (fresh interpreter, same data), so its peak RSS is
its own. Timed: fit + assign + select (harvest's whole `cluster_and_select`); for the peers,
their fit, plus harvest's assignment for their inertia (not timed). Inertia: sum over ALL
points of the squared distance to the nearest centroid (harvest.cluster.inertia), the same
function for every method.

Methods:
  harvest            harvest's defaults (KMeansSettings(n_clusters=k)), end to end.
  harvest-faiss      harvest with backend="faiss" (if faiss-cpu is installed), end to end.
  sklearn-defaults   MiniBatchKMeans(n_clusters=k, random_state=seed): k-means++ init, batch
                     1024 (10+ minutes at k = 18,000; --skip-sklearn-defaults to leave it out).
  faiss-defaults     faiss.Kmeans(d, k, seed=seed) at its defaults (25 iterations, random init).
  extra rows         --variants NAME=JSON...: harvest with KMeansSettings fields overridden,
                     e.g. 'bs8192={"batch_size": 8192}'.

--stability L2 also runs every harvest row on the embeddings moved by about L2 (0.0035: what
bf16 inference moves fp32's) and reports how many `selected` flags stay the same.

Usage: .venv/bin/python bench/bench_cluster.py [--n 101123] [--d 512] [--k 18000]
           [--skip-sklearn-defaults] [--sklearn-timeout 1800] [--skip-faiss]
           [--stability 0.0035] [--variants NAME=JSON ...] [--json results.json]
(about 31 minutes at the defaults on two cores, 13 of them scikit-learn's defaults)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

SEED = 0


def synthetic_embeddings(n: int, d: int, n_modes: int, seed: int) -> np.ndarray:
    """CLIP-like embeddings: (n, d) float32, L2-normalised, clustered (see the module doc)."""
    rng = np.random.default_rng(seed)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    common = unit(rng.standard_normal(d))
    n_themes = 40
    themes = unit(rng.standard_normal((n_themes, d)))
    theme_w = 1.0 / np.arange(1, n_themes + 1)
    theme_of_mode = rng.choice(n_themes, n_modes, p=theme_w / theme_w.sum())
    modes = unit(0.7 * themes[theme_of_mode] + 0.7 * unit(rng.standard_normal((n_modes, d))))
    mode_w = rng.lognormal(0.0, 1.0, n_modes)
    mode_of_row = rng.choice(n_modes, n, p=mode_w / mode_w.sum())
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):
        rows = mode_of_row[s : s + 8192]
        noise = 0.6 * rng.standard_normal((rows.size, d)) / np.sqrt(d)
        x[s : s + rows.size] = unit(common + modes[rows] + noise)
    return x


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """Run one method on the data and print one JSON line."""
    from harvest.cluster import KMeansSettings, assign, cluster_and_select, inertia

    x = synthetic_embeddings(args.n, args.d, args.modes, SEED)
    keys = [f"roi_{i:06d}/hr.tif" for i in range(args.n)]
    base_rss = rss_mib()
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    if args.method.startswith("harvest"):
        settings = KMeansSettings(n_clusters=args.k, seed=SEED)
        if args.method == "harvest-faiss":
            settings = replace(settings, backend="faiss")
        settings = replace(settings, **json.loads(args.overrides))
        sel = cluster_and_select(x, keys, settings=settings, strategy="random")
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        centroids = sel.centroids
        extra = {
            "settings": asdict(settings),
            "n_selected": sel.n_selected,
            "n_empty": sel.n_empty,
        }
        if args.stability > 0:
            # The same run on embeddings moved by about `stability` (L2), as bf16 moves fp32's.
            rng = np.random.default_rng(SEED + 1)
            noise = rng.standard_normal(x.shape, dtype=np.float32)
            moved = x + noise * np.float32(args.stability / np.sqrt(args.d))
            moved /= np.linalg.norm(moved, axis=1, keepdims=True)
            del noise
            other = cluster_and_select(moved, keys, settings=settings, strategy="random")
            extra["same_flag"] = float((other.selected == sel.selected).mean())
            extra["kept_again"] = float((other.selected & sel.selected).sum() / sel.n_selected)
    elif args.method == "sklearn-defaults":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=args.k, random_state=SEED).fit(x)
        fit_s = time.perf_counter() - t0
        km.predict(x)  # its own assignment of every image, part of a prune as well
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        centroids = km.cluster_centers_.astype(np.float32)
        extra = {"fit_seconds": fit_s, "n_steps": int(km.n_steps_), "epochs": int(km.n_iter_)}
    elif args.method == "faiss-defaults":
        import faiss

        fk = faiss.Kmeans(x.shape[1], args.k, seed=SEED)
        fk.train(x)
        fit_s = time.perf_counter() - t0
        fk.assign(x)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        centroids = np.asarray(fk.centroids, dtype=np.float32)
        extra = {"fit_seconds": fit_s, "iterations": 0 if fk.obj is None else len(fk.obj)}
    else:
        raise SystemExit(f"unknown method {args.method}")
    labels = assign(x, centroids).labels
    result = {
        "method": args.method,
        "seconds": seconds,
        "peak_rss_mib": peak,
        "data_rss_mib": base_rss,
        "inertia": inertia(x, centroids),
        "n_nonempty": int(np.unique(labels).size),
        **extra,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_child(args: argparse.Namespace, method: str, overrides: str, timeout: float | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--overrides",
        overrides,
        "--n",
        str(args.n),
        "--d",
        str(args.d),
        "--k",
        str(args.k),
        "--modes",
        str(args.modes),
        "--stability",
        str(args.stability),
    ]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"method": method, "timeout": time.perf_counter() - t0}
    except subprocess.CalledProcessError as e:
        return {"method": method, "error": e.stderr.strip().splitlines()[-1:]}
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=101_123)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=18_000)
    parser.add_argument("--modes", type=int, default=3_000)
    parser.add_argument("--skip-sklearn-defaults", action="store_true")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--sklearn-timeout", type=float, default=None, help="seconds")
    parser.add_argument("--variants", nargs="*", default=[], metavar="NAME=JSON")
    parser.add_argument(
        "--stability",
        type=float,
        default=0.0,
        metavar="L2",
        help="harvest rows: also run on embeddings moved by this much (e.g. 0.0035, bf16's "
        "move) and report how many selected flags stay the same (not timed)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return

    try:
        import faiss  # noqa: F401

        has_faiss = not args.skip_faiss
    except ImportError:
        has_faiss = False
    plan: list[tuple[str, str, str, float | None]] = [("harvest", "harvest", "{}", None)]
    for spec in args.variants:
        name, _, js = spec.partition("=")
        plan.append((name, "harvest", js, None))
    if has_faiss:
        plan += [("harvest-faiss", "harvest-faiss", "{}", None)]
        plan += [("faiss-defaults", "faiss-defaults", "{}", None)]
    if not args.skip_sklearn_defaults:
        plan.append(("sklearn-defaults", "sklearn-defaults", "{}", args.sklearn_timeout))

    results = []
    for name, method, overrides, timeout in plan:
        r = run_child(args, method, overrides, timeout)
        r["name"] = name
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, CPython "
        f"{platform.python_version()}, load average at the end {os.getloadavg()[0]:.2f}; "
        f"n={args.n:,}, d={args.d}, k={args.k:,}, {args.modes:,} modes, seed {SEED}\n"
    )
    ref = next((r for r in results if r["name"] == "sklearn-defaults" and "inertia" in r), None)
    print(
        "| method | time (s) | of which fit (s) | peak RSS (MiB) | inertia | vs sklearn defaults"
        " | non-empty clusters | moved embeddings: same flag / kept again |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "inertia" not in r:
            why = f"> {r['timeout']:.0f} s (stopped)" if "timeout" in r else f"failed {r['error']}"
            print(f"| {r['name']} | {why} | | | | | | |")
            continue
        rel = f"{100 * (r['inertia'] / ref['inertia'] - 1):+.2f} %" if ref else ""
        fit = f"{r['fit_seconds']:.1f}" if "fit_seconds" in r else ""
        stable = (
            f"{100 * r['same_flag']:.2f} % / {100 * r['kept_again']:.2f} %"
            if "same_flag" in r
            else ""
        )
        print(
            f"| {r['name']} | {r['seconds']:.1f} | {fit} | {r['peak_rss_mib']:.0f} | "
            f"{r['inertia']:.1f} | {rel} | {r['n_nonempty']:,} | {stable} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
