"""Benchmark the degradation core side by side with the usual alternatives.

Run: .venv/bin/python bench/bench_degradation.py [--repeat N] [--threads T]
Prints a markdown table (median and best of N runs, in ms per 4 x 1100 x 1100 float32 image)
and, for every row, the largest absolute difference from the row marked as reference.
Needs opencv-python-headless and scikit-image; opensr-degradation rows appear when it is
installed (its blur module is loaded from its file, so its heavy imports are not needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from degradation.errors import DegradationError  # noqa: E402
from degradation.fit import fit_sigma  # noqa: E402
from degradation.harmonize.histogram import match_histograms  # noqa: E402
from degradation.noise import PACKAGE_NOISE_STD  # noqa: E402
from degradation.pipeline import Degrader  # noqa: E402
from degradation.pretrained import load_sen2naip  # noqa: E402
from degradation.psf import SEN2NAIP_PSF, SEN2NAIP_SIGMA_PX, blur_downsample  # noqa: E402
from degradation.resample import downsample  # noqa: E402


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    out = fn()
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3, float(np.min(times)) * 1e3, out


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _scene(seed: int, size: int = 1100) -> np.ndarray:
    """A textured reflectance-like scene in [0, 0.6]: smooth fields plus fine detail."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((4, size // 10 + 2, size // 10 + 2), dtype=np.float32)
    up = F.interpolate(torch.from_numpy(coarse)[None], size=(size, size), mode="bicubic")[0]
    fine = torch.from_numpy(rng.random((4, size, size), dtype=np.float32))
    return (0.45 * up.clamp(0, 1) + 0.15 * fine).numpy()


def _published_blur() -> Callable[[torch.Tensor, dict], torch.Tensor] | None:
    spec = importlib.util.find_spec("opensr_degradation")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "naipd" / "blur.py"
    mspec = importlib.util.spec_from_file_location("_published_blur", path)
    assert mspec is not None and mspec.loader is not None
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module.blur  # type: ignore[no-any-return]


def _published_pipe() -> Any:
    """opensr-degradation's statistical pipeline, or None when it (or its deps) is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opensr_degradation import pipe
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    params = {
        "reflectance_method": ["gamma_multivariate_normal"],
        "noise_method": "gaussian_noise",
        "percentiles": [50],
    }
    return pipe("naip_d", add_noise=True, params=params)


def _published_noise() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """opensr-degradation's per-pixel matrix sampler, or None when it cannot be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opensr_degradation.naipd.noise import create_noisy_1
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return create_noisy_1  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import cv2  # the peers are only needed here
    import torchvision
    from skimage.exposure import match_histograms as skimage_match

    cv2.setNumThreads(args.threads)
    hr = _scene(0)
    hr_t = torch.from_numpy(hr)
    sig = SEN2NAIP_SIGMA_PX
    rows: list[tuple[str, str, float, float, float | None]] = []

    def add(op: str, impl: str, fn: Callable[[], Any], ref: np.ndarray | None, n: int) -> Any:
        med, best, out = _time(fn, n)
        diff = None if ref is None else float(np.abs(_np(out) - ref).max())
        rows.append((op, impl, med, best, diff))
        return out

    # 1. PSF blur (kernel 13, the published configuration) + bilinear x4 without antialias.
    blurs = [torchvision.transforms.GaussianBlur(13, sigma=s) for s in sig]

    def torchvision_path() -> torch.Tensor:
        y = torch.cat([blurs[i](hr_t[i][None]) for i in range(4)])[None]
        return F.interpolate(y, scale_factor=0.25, mode="bilinear", antialias=False)[0]

    ref = _np(torchvision_path())
    r = args.repeat
    add(
        "blur13 + bilinear x4",
        "torchvision GaussianBlur + F.interpolate (reference)",
        torchvision_path,
        ref,
        max(3, r // 4),
    )
    published = _published_blur()
    if published is not None:
        add(
            "blur13 + bilinear x4",
            "opensr-degradation 1.0.1 blur()",
            lambda: published(hr_t, {}),
            ref,
            max(3, r // 4),
        )

    def opencv_path() -> list[np.ndarray]:
        out = []
        for c in range(4):
            b = cv2.GaussianBlur(hr[c], (13, 13), sig[c], borderType=cv2.BORDER_REFLECT_101)
            out.append(cv2.resize(b, (275, 275), interpolation=cv2.INTER_LINEAR))
        return out

    add("blur13 + bilinear x4", "OpenCV GaussianBlur + resize(INTER_LINEAR)", opencv_path, ref, r)
    add(
        "blur13 + bilinear x4",
        "degradation.blur_downsample (torch tensor)",
        lambda: blur_downsample(hr_t, sig, kernel_size=13),
        ref,
        r,
    )
    add(
        "blur13 + bilinear x4",
        "degradation.blur_downsample (numpy array)",
        lambda: blur_downsample(hr, sig, kernel_size=13),
        ref,
        r,
    )
    add(
        "blur (4 sigma) + bilinear x4",
        "degradation.blur_downsample, default truncation",
        lambda: blur_downsample(hr_t, sig),
        None,
        r,
    )

    # 2. Antialiased bilinear x4 (raw mode, U-Net input).
    ref_aa = _np(F.interpolate(hr_t[None], scale_factor=0.25, mode="bilinear", antialias=True)[0])
    add(
        "bilinear x4 antialias",
        "F.interpolate(antialias=True) (reference)",
        lambda: F.interpolate(hr_t[None], scale_factor=0.25, mode="bilinear", antialias=True),
        ref_aa[None],
        r,
    )
    add("bilinear x4 antialias", "degradation.downsample", lambda: downsample(hr_t, 4), ref_aa, r)

    # 3. Histogram matching 4 x 1100 x 1100 to a 4 x 275 x 275 reference: arbitrary float
    # reflectance (sort path), float reflectance stored as integer DN / 10000 (few distinct
    # values: lookup-table path) and 8-bit codes. Every row must equal scikit-image exactly.
    lr = _np(blur_downsample(_scene(1), sig)) ** 1.8
    w = args.threads
    dn = np.round(hr * 10000).astype(np.uint16).astype(np.float32) / np.float32(10000)
    codes = np.clip(hr * 400, 0, 255).astype(np.uint8)  # 8-bit NAIP-like digital numbers
    naip = codes.astype(np.float32) / np.float32(255)  # NAIP reflectance as float32 (DN / 255)
    for op, src, impl in (
        ("histogram matching (float)", hr, "degradation match_histograms (sort)"),
        ("histogram matching (float DN / 10000)", dn, "degradation match_histograms (table)"),
        ("histogram matching (float DN / 255)", naip, "degradation match_histograms (table)"),
        ("histogram matching (uint8 source)", codes, "degradation match_histograms (table)"),
    ):
        as_float = src.astype(np.float32)
        ref_hm = skimage_match(as_float, lr, channel_axis=0)
        add(
            op,
            "skimage match_histograms (reference)",
            lambda f=as_float: skimage_match(f, lr, channel_axis=0),  # type: ignore[misc]
            ref_hm,
            max(3, r // 4),
        )
        add(
            op,
            impl,
            lambda s=src: match_histograms(s, lr, workers=w),  # type: ignore[misc]
            ref_hm,
            r,
        )

    # 4. The whole statistical mode, configured like the published package (p50, kernel 13,
    # band-RMS noise 0.025); noise is drawn, so there is no difference column.
    ours = Degrader(
        "statistical", psf=SEN2NAIP_PSF, noise_std=PACKAGE_NOISE_STD, noise_scaling="band_rms"
    )
    add("statistical degradation", "degradation.Degrader", lambda: ours(hr_t, 0), None, r)
    pipe = _published_pipe()
    if pipe is not None:
        add(
            "statistical degradation",
            "opensr-degradation pipe.forward",
            lambda: pipe.forward(hr_t),
            None,
            3,
        )
        add(
            "statistical degradation",
            "opensr-degradation pipe.full_forward (484 tiles)",
            lambda: pipe.full_forward(hr_t),
            None,
            2,
        )

    # 5. Fitting sigma on one pair.
    lr_fit = _np(blur_downsample(hr, sig))
    add(
        "fit_sigma (4 bands, tol 1e-3 px)",
        "degradation.fit_sigma",
        lambda: fit_sigma(hr, lr_fit),
        None,
        3,
    )

    # 6. Reflectance-to-noise matrix sampler on one 4 x 275 x 275 LR image. With a legacy
    # RandomState positioned like numpy's global one, our draws equal the published ones.
    try:
        model = load_sen2naip()
    except DegradationError:
        model = None
    if model is not None and model.noise is not None:
        matrix = model.noise
        lr_img = _np(blur_downsample(hr, sig))
        noise_ref = None
        published_noise = _published_noise()
        if published_noise is not None:

            def theirs_noise() -> torch.Tensor:
                np.random.seed(0)
                return published_noise(torch.from_numpy(lr_img))

            noise_ref = _np(theirs_noise())
            add(
                "noise matrix sampler (4 x 275 x 275)",
                "opensr-degradation create_noisy_1 (reference)",
                theirs_noise,
                noise_ref,
                3,
            )

        def ours_noise() -> Any:
            rs = np.random.RandomState(0)
            rs.random_sample()  # np.vectorize draws once more for the first pixel
            return matrix.sample(lr_img, rs)

        add(
            "noise matrix sampler (4 x 275 x 275)",
            "degradation NoiseMatrix.sample",
            ours_noise,
            noise_ref,
            r,
        )

        # 7. The learned modes with the published weights (U-Net at 10 m, VAE histograms).
        full = Degrader.from_model(model)
        for mode in ("deterministic", "variational"):
            deg = replace(full, mode=mode)
            add(
                f"{mode} degradation",
                "degradation.Degrader (sen2naip)",
                lambda deg=deg: deg(hr_t, 0),  # type: ignore[misc]
                None,
                5,
            )

    print(
        f"threads: {args.threads}, torch {torch.__version__}, numpy {np.__version__}, "
        f"opencv {cv2.__version__}"
    )
    print()
    print("| operation | implementation | median ms | best ms | max abs diff vs reference |")
    print("|---|---|---:|---:|---:|")
    for op, impl, med, best, diff in rows:
        d = "" if diff is None else f"{diff:.1e}"
        print(f"| {op} | {impl} | {med:.1f} | {best:.1f} | {d} |")


if __name__ == "__main__":
    main()
