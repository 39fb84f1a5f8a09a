"""Degradation models that turn high-resolution imagery into Sentinel-2-like imagery.

Pure numerical code: no file I/O and no dependency on ``harvest``, so it can run inside a
training DataLoader. Functions take numpy arrays or torch tensors shaped [C, H, W] or
[B, C, H, W] (float32 reflectance) and return the same type and rank.

Modules:
    resample: bilinear downsampling as ``F.interpolate`` does it (with or without antialias),
        computed as strided separable passes.
    psf: per-band Gaussian PSF, fused with downsampling (``blur_downsample``).
    fit: ``fit_sigma``, the per-band PSF sigma minimising MAE against observed LR.
    noise: the simple signal-scaled Gaussian noise and a noise level estimator.
    harmonize.histogram: exact histogram matching, 120-bin band histograms, matching to a
        histogram.
    harmonize.gamma: the statistical (power-law) harmonisation and its normal model.
    harmonize.linear: per-pair affine band mapping (SEN2VENuS).
    pipeline: ``Degrader`` (modes raw and statistical).
"""
