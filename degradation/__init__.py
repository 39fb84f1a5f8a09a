"""Degradation models that turn high-resolution imagery into Sentinel-2-like imagery.

Pure numerical code: no file I/O (except :mod:`degradation.pretrained`, which loads weight files
from a local folder or an installed package) and no dependency on ``harvest``, so it can run
inside a training DataLoader. Functions take numpy arrays or torch tensors shaped [C, H, W] or
[B, C, H, W] (float32 reflectance) and return the same type and rank.

Modules:
    resample: bilinear downsampling as ``F.interpolate`` does it (with or without antialias),
        computed as strided separable passes.
    psf: per-band Gaussian PSF, fused with downsampling (``blur_downsample``).
    fit: fitting models on LR/HR pairs given as arrays (``PairChip``): ``fit_sigma`` (the
        per-band PSF sigma minimising MAE against observed LR), the registered PSF and the
        joint gamma / sigma / shift / noise fit (``fit_pairs``), network training, Table 2.
    noise: the simple signal-scaled Gaussian noise, a noise level estimator, and the
        reflectance-to-noise matrix (estimated from LR images, sampled per pixel, vectorised).
    harmonize.histogram: exact histogram matching, 120-bin band histograms, matching to a
        histogram.
    harmonize.gamma: the statistical (power-law) harmonisation and its normal model.
    harmonize.unet: the deterministic harmonisation (a U-Net predicts S2 radiometry; the HR is
        histogram-matched to its output) and a small trainable U-Net.
    harmonize.vae: the variational harmonisation (a VAE maps 4 x 120-bin HR histograms to S2
        histograms) and its training.
    harmonize.linear: per-pair affine band mapping (SEN2VENuS).
    pretrained: the published SEN2NAIP models and fitted model folders.
    pipeline: ``Degrader`` (modes raw, statistical, deterministic, variational, all).
"""
