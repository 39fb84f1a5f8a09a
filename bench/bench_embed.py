"""Benchmark: CLIP ViT-B-32 image embeddings, a plain open_clip loop against harvest.embed.

Both sides embed the same GeoTIFFs in one run, on the same machine:

(a) a plain fp32 open_clip loop as a user would write it: read the RGB bands with rasterio,
    stretch each band to 0-255 (2-98 percentiles, ``np.nanpercentile``), make a PIL image, apply
    the transform ``open_clip.create_model_and_transforms`` returns, stack a batch, run
    ``model.encode_image`` in fp32 under ``torch.no_grad``, one batch after the other;
(b) harvest: :meth:`harvest.embed.ClipEmbedder.load` with ``precision="auto"`` (the start-up
    probe picks the path), images read and preprocessed by a thread pool one batch ahead while
    the current batch is embedded, as the embed stage does.

No pretrained weights can be downloaded on the benchmark machine, so the model is ViT-B-32 with
seeded random weights, saved once as a checkpoint both sides load: the speed does not depend
on the weight values; the cosine check does a little (real weights are not measured here).

The images are synthetic 4 x 484 x 484 float32 reflectance chips (NAIP-like: R, G, B, NIR; a
few land-cover "families" of colour and texture, some with nodata), written as tiled ZSTD
GeoTIFFs with the floating-point predictor, as harvest writes its chips.

Run: ``.venv/bin/python bench/bench_embed.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

SIZE_PX = 484
BANDS = 4
FAMILIES = 8


def make_images(folder: Path, n: int, seed: int) -> list[Path]:
    """Write ``n`` seeded synthetic chips (once; reused when they are already there)."""
    import cv2
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"chip_{i:05d}.tif" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    fam_rgb = rng.uniform(0.03, 0.3, size=(FAMILIES, BANDS)).astype(np.float32)
    fam_scale = rng.integers(4, 60, size=FAMILIES)  # texture cells per side
    profile = {
        "driver": "GTiff",
        "width": SIZE_PX,
        "height": SIZE_PX,
        "count": BANDS,
        "dtype": "float32",
        "crs": "EPSG:32610",
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "zstd",
        "zstd_level": 1,
        "predictor": 3,
    }
    for i, path in enumerate(paths):
        fam = i % FAMILIES
        cells = int(fam_scale[fam])
        coarse = rng.standard_normal((cells, cells, BANDS)).astype(np.float32)
        field = cv2.resize(coarse, (SIZE_PX, SIZE_PX), interpolation=cv2.INTER_CUBIC)
        tone = fam_rgb[fam] * rng.uniform(0.8, 1.2, size=BANDS).astype(np.float32)
        img = tone * (1.0 + 0.35 * field) + np.asarray(
            rng.normal(0, 0.01, size=field.shape), np.float32
        )
        img = np.clip(img, 0.0, 1.0).transpose(2, 0, 1).copy()
        if i % 10 == 3:  # a nodata corner, as at a scene edge
            cut = int(rng.integers(60, 200))
            img[:, :cut, :cut] = np.nan
        transform = from_origin(500000 + 1210 * i, 4000000, 2.5, 2.5)
        with rasterio.open(path, "w", transform=transform, **profile) as dst:
            dst.write(img)
    return paths


def read_rgb(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read([1, 2, 3])


def make_checkpoint(path: Path, seed: int) -> Path:
    """A full ViT-B-32 CLIP state dict with seeded random weights (once)."""
    if path.exists():
        return path
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def plain_open_clip_loop(paths: list[Path], ckpt: Path, batch: int) -> dict[str, Any]:
    """(a): what a user writes with open_clip; sequential, fp32."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(ckpt))
    model.eval()
    feats = []
    t_prep = t_model = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        t1 = time.perf_counter()
        images = []
        for p in paths[start : start + batch]:
            rgb = read_rgb(p)
            lo, hi = np.nanpercentile(rgb, [2, 98], axis=(1, 2))
            scaled = (rgb - lo[:, None, None]) / (hi - lo)[:, None, None]
            u8 = (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).astype(np.uint8)
            images.append(preprocess(Image.fromarray(u8.transpose(1, 2, 0))))
        x = torch.stack(images)
        t2 = time.perf_counter()
        with torch.no_grad():
            f = model.encode_image(x)
            f = f / f.norm(dim=-1, keepdim=True)
        feats.append(f.numpy())
        t3 = time.perf_counter()
        t_prep += t2 - t1
        t_model += t3 - t2
    wall = time.perf_counter() - t0
    n = len(paths)
    return {
        "images_per_s": n / wall,
        "wall_s": wall,
        "read_preprocess_s": t_prep,
        "model_s": t_model,
        "model_images_per_s": n / t_model,
        "embeddings": np.concatenate(feats),
    }


def harvest_path(
    paths: list[Path], ckpt: Path, batch: int, decoders: int, threads: int, probe_n: int
) -> dict[str, Any]:
    """(b): ClipEmbedder with the probe; decoding overlapped with the model."""
    from harvest.embed import ClipEmbedder, WeightsSpec

    t0 = time.perf_counter()
    emb = ClipEmbedder.load(
        WeightsSpec("ViT-B-32", checkpoint=ckpt),
        precision="auto",
        probe_images=[read_rgb(p) for p in paths[:probe_n]],
        threads=threads,
    )
    load_s = time.perf_counter() - t0

    def load_one(p: Path) -> np.ndarray:
        return emb.preprocess(read_rgb(p))

    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    feats, inputs = [], []
    t_wait = t_model = 0.0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(decoders) as pool:
        pending: list[Future[np.ndarray]] = [pool.submit(load_one, p) for p in batches[0]]
        for k in range(len(batches)):
            current = pending
            if k + 1 < len(batches):  # the next batch decodes while this one runs
                pending = [pool.submit(load_one, p) for p in batches[k + 1]]
            t1 = time.perf_counter()
            x = np.stack([f.result() for f in current])
            t2 = time.perf_counter()
            feats.append(emb.embed(x))
            t3 = time.perf_counter()
            inputs.append(x)
            t_wait += t2 - t1
            t_model += t3 - t2
    wall = time.perf_counter() - t0
    n = len(paths)
    return {
        "embedder": emb,
        "load_probe_s": load_s,
        "images_per_s": n / wall,
        "wall_s": wall,
        "wait_for_decode_s": t_wait,
        "model_s": t_model,
        "embeddings": np.concatenate(feats),
        "inputs": np.concatenate(inputs),
    }


def embed_with_path(
    ckpt: Path, name: str, inputs: np.ndarray, batch: int
) -> tuple[np.ndarray, float]:
    """Embeddings of the same preprocessed inputs on one forced path, and its images/s."""
    from harvest.embed import ClipEmbedder, WeightsSpec

    emb = ClipEmbedder.load(WeightsSpec("ViT-B-32", checkpoint=ckpt), precision=name)
    emb.embed(inputs[:batch])  # kernel set-up for the batch shape, as the probe does
    t0 = time.perf_counter()
    out = np.concatenate([emb.embed(inputs[i : i + batch]) for i in range(0, len(inputs), batch)])
    return out, len(inputs) / (time.perf_counter() - t0)


def selection_harvest(x: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """``selected`` of harvest.cluster.cluster_and_select (random strategy), or None."""
    try:
        from harvest.cluster import KMeansSettings, cluster_and_select
    except ImportError:
        return None
    keys = [f"chip_{i:05d}" for i in range(len(x))]
    settings = KMeansSettings(n_clusters=k, seed=seed)
    try:
        sel = cluster_and_select(x, keys, settings=settings, strategy="random")
    except TypeError:  # the cluster module's API moved on
        return None
    return np.asarray(sel.selected)


def selection_lloyd(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``selected`` after full-batch Lloyd k-means run to convergence (scikit-learn KMeans),
    started from the same k seeded rows whatever the embeddings, then one random image per
    cluster (a seeded priority): the same selection rule with a k-means that converges."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    init = x[rng.choice(len(x), k, replace=False)].astype(np.float64)
    labels = KMeans(k, init=init, n_init=1, max_iter=300, tol=0.0).fit(x.astype(np.float64)).labels_
    priority = rng.permutation(len(x))
    selected = np.zeros(len(x), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        selected[members[np.argmin(priority[members])]] = True
    return selected


def agreement(ref: np.ndarray, other: np.ndarray, k: int, seeds: range) -> tuple[str, str]:
    """Percent of images whose ``selected`` flag is the same, per seed, for both clusterings."""
    ours, lloyd = [], []
    for seed in seeds:
        a, b = selection_harvest(ref, k, seed), selection_harvest(other, k, seed)
        if a is not None and b is not None:
            ours.append(np.mean(a == b) * 100)
        lloyd.append(
            np.mean(selection_lloyd(ref, k, seed) == selection_lloyd(other, k, seed)) * 100
        )

    def fmt(v: list[float]) -> str:
        return f"{min(v):.1f} / {np.mean(v):.1f}" if v else "n/a"

    return fmt(ours), fmt(lloyd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="images (default 256)")
    ap.add_argument("--batch", type=int, default=32, help="batch size (the stage's 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--decoders", type=int, default=2, help="decoder threads (the stage's 2)")
    ap.add_argument("--probe-images", type=int, default=32, help="chips for the probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=4, help="k-means seeds for the agreement")
    ap.add_argument(
        "--compare",
        default="fp32,bf16,bf16-full,int8,onnxruntime,openvino",
        help="paths compared on the same inputs (missing optional runtimes are left out)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "harvest-bench-embed",
        help="where the chips and the checkpoint are written (reused across runs)",
    )
    ap.add_argument("--skip-baseline", action="store_true", help="only run harvest's path")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()

    import importlib.util

    import torch

    torch.set_num_threads(args.threads)
    paths = make_images(args.workdir / "chips", args.n, args.seed)
    ckpt = make_checkpoint(args.workdir / "vit-b-32-random-seed0.pt", args.seed)
    load = os.getloadavg()[0]

    base = None if args.skip_baseline else plain_open_clip_loop(paths, ckpt, args.batch)
    ours = harvest_path(
        paths, ckpt, args.batch, args.decoders, args.threads, min(args.probe_images, args.n)
    )
    emb = ours["embedder"]
    inputs = ours["inputs"]
    ref, ref_ips = embed_with_path(ckpt, "fp32", inputs, args.batch)
    cos = np.sum(ours["embeddings"].astype(np.float64) * ref, axis=1)
    k = max(2, args.n // 4)
    seeds = range(args.seeds)

    print(
        f"# harvest embed bench: {args.n} chips {BANDS}x{SIZE_PX}x{SIZE_PX} float32, "
        f"batch {args.batch}, torch threads {args.threads}, decoder threads {args.decoders}, "
        f"load average at start {load:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"\nprobe: {emb.probe.line()}\n")
    print("| path | img/s | min cosine vs fp32 | ok | note |")
    print("|---|---:|---:|:---:|---|")
    for t in emb.probe.timings:
        print(
            f"| {t.name} | {t.images_per_s:.1f} | {t.min_cosine:.5f} | "
            f"{'yes' if t.ok else 'no'} | {t.note} |"
        )
    print("\n| run | images/s | wall s | where the time went |")
    print("|---|---:|---:|---|")
    if base is not None:
        print(
            f"| (a) plain open_clip fp32 loop | {base['images_per_s']:.1f} | "
            f"{base['wall_s']:.1f} | read + preprocess {base['read_preprocess_s']:.1f} s, "
            f"model {base['model_s']:.1f} s ({base['model_images_per_s']:.1f} img/s) |"
        )
    print(
        f"| (b) harvest, path {emb.path} | {ours['images_per_s']:.1f} | {ours['wall_s']:.1f} | "
        f"model {ours['model_s']:.1f} s, waiting for decode {ours['wait_for_decode_s']:.1f} s; "
        f"load + probe {ours['load_probe_s']:.1f} s (not in the wall time) |"
    )
    with_probe = args.n / (ours["wall_s"] + ours["load_probe_s"])
    print(
        f"| (b) with load + probe | {with_probe:.1f} | "
        f"{ours['wall_s'] + ours['load_probe_s']:.1f} | |"
    )
    if base is not None:
        print(
            f"\nspeed-up (b)/(a): {ours['images_per_s'] / base['images_per_s']:.2f}x "
            f"(with load + probe {with_probe / base['images_per_s']:.2f}x)"
        )
    print(
        f"cosine of (b) vs fp32 on the same preprocessed inputs: min {cos.min():.6f}, "
        f"mean {cos.mean():.6f}"
    )

    print(
        f"\nEvery path on (b)'s preprocessed inputs; selection agreement with fp32 = percent of "
        f"images whose `selected` flag is the same, k = {k}, seeds {seeds.start}-{seeds.stop - 1} "
        "(min / mean):\n"
    )
    print(
        "| path | model img/s | min cosine | max L2 distance | harvest.cluster | Lloyd to "
        "convergence |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    optional = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
    for name in [p.strip() for p in args.compare.split(",") if p.strip()]:
        if name in optional and importlib.util.find_spec(optional[name]) is None:
            continue
        if name == "fp32":
            out, ips = ref, ref_ips
        else:
            out, ips = embed_with_path(ckpt, name, inputs, args.batch)
        c = np.sum(out.astype(np.float64) * ref, axis=1)
        dist = np.linalg.norm(out.astype(np.float64) - ref, axis=1)
        ours_agree, lloyd_agree = agreement(ref, out, k, seeds)
        rows.append((name, ips, float(c.min()), float(dist.max()), ours_agree, lloyd_agree))
        print(
            f"| {name} | {ips:.1f} | {c.min():.6f} | {dist.max():.4f} | {ours_agree} % | "
            f"{lloyd_agree} % |"
        )
    if args.json:
        out_json = {
            "n": args.n,
            "batch": args.batch,
            "threads": args.threads,
            "decoders": args.decoders,
            "load_average": load,
            "chosen": emb.path,
            "probe": [t.__dict__ for t in emb.probe.timings],
            "harvest_images_per_s": ours["images_per_s"],
            "harvest_load_probe_s": ours["load_probe_s"],
            "baseline_images_per_s": None if base is None else base["images_per_s"],
            "min_cosine": float(cos.min()),
            "paths": rows,
        }
        args.json.write_text(json.dumps(out_json, indent=2))


if __name__ == "__main__":
    main()
