"""Variational harmonisation: a VAE maps an HR image's band histograms to Sentinel-2-like ones.

As in SEN2NAIP: each band of the HR image is summarised by a 120-bin histogram over [0, 1]
(fractions of the in-range pixels, a [4, 120] tensor); the VAE encodes it to a 20-D latent
(hidden width 512) and decodes an S2-like histogram; the HR image is then histogram-matched to
that prediction, which keeps its texture and takes the predicted radiometry.

Architecture (:class:`HistogramVAE`) is the one of the published weights, so their state dict
loads as is: encoder ``Flatten -> Linear(C*bins, hidden) -> ReLU -> Linear(hidden, 2*latent)``
(first half of the output is the mean, second the log-variance), decoder ``Linear(latent,
hidden) -> ReLU -> Linear(hidden, C*bins) -> reshape [C, bins] -> Sigmoid``.

Prediction post-processing (:func:`predict_histogram`): predicted fractions below
``min_fraction`` (0.005, the published threshold) are set to zero, then each band is normalised
to sum 1. Matching targets:

- ``"uniform"`` (default): the target is uniform inside every bin (piecewise-linear inverse
  CDF, :func:`degradation.harmonize.histogram.match_to_histogram`);
- ``"published"``: opensr-degradation's rule, reproduced exactly in expectation. It drops the
  predicted CDF to 0 wherever the HR image's CDF is above it, then draws a random image at the
  bins' lower edges ``j / 120`` and matches the HR to that image. Here the same distribution is
  used directly: a level ``j / 120`` has CDF ``min(cdf'[k] for k > j)`` (the suffix minimum of
  the modified CDF, which is what the published draw-and-overwrite loop produces), and the HR is
  matched to it exactly instead of to one random draw of it.

The latent is the posterior mean unless an explicit ``torch.Generator`` asks for a sample
(``z = mu + eps * exp(log_var / 2)``, ``eps`` drawn from that generator).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from degradation._tensor import to_batched
from degradation.errors import DegradationError
from degradation.harmonize.histogram import (
    N_BINS,
    _match_all,
    _source_array,
    band_histograms,
    match_to_histogram,
)

#: Published SEN2NAIP VAE sizes.
SEN2NAIP_LATENT = 20
SEN2NAIP_HIDDEN = 512
#: Predicted fractions below this are dropped (the published threshold).
MIN_FRACTION = 0.005
TARGETS = ("uniform", "published")


class HistogramVAE(nn.Module):
    """VAE over per-band histograms [B, C, bins] (see the module doc for the layout).

    Args:
        n_bands: bands C (4).
        n_bins: bins per band (120).
        hidden: hidden width (512 in the published weights).
        latent: latent size (20 in the published weights).
    """

    def __init__(
        self,
        n_bands: int = 4,
        n_bins: int = N_BINS,
        hidden: int = SEN2NAIP_HIDDEN,
        latent: int = SEN2NAIP_LATENT,
    ) -> None:
        super().__init__()
        self.n_bands, self.n_bins, self.hidden, self.latent = n_bands, n_bins, hidden, latent
        size = n_bands * n_bins
        # Index layout fixed by the published state dict keys (encoder.1, encoder.3, ...).
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, size),
            nn.Unflatten(1, (n_bands, n_bins)),
            nn.Sigmoid(),
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> HistogramVAE:
        """Build a VAE whose sizes are read off a state dict, and load it (eval mode).

        Raises:
            DegradationError: if the state dict is not of this architecture.
        """
        try:
            hidden, size = state["encoder.1.weight"].shape
            latent = state["decoder.0.weight"].shape[1]
            out = state["decoder.2.weight"].shape[0]
        except KeyError as exc:
            raise DegradationError(
                f"the VAE weights lack {exc}; they are not a histogram VAE state dict"
            ) from None
        if out != size or state["encoder.3.weight"].shape[0] != 2 * latent:
            raise DegradationError("the VAE weights have inconsistent layer sizes")
        n_bins = N_BINS if size % N_BINS == 0 else size
        vae = cls(size // n_bins, n_bins, int(hidden), int(latent))
        try:
            vae.load_state_dict(state)
        except RuntimeError as exc:
            raise DegradationError(
                f"the VAE weights do not load: {str(exc).splitlines()[0]}"
            ) from None
        return vae.eval()

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (mean, log-variance) of the latent, each [B, latent]."""
        mu, log_var = self.encoder(hist).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the decoded histograms [B, C, bins] in (0, 1)."""
        out: torch.Tensor = self.decoder(z)
        return out

    def forward(
        self, hist: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode a latent sample (the mean when ``generator`` is None).

        Returns:
            (decoded [B, C, bins], mu, log_var).
        """
        mu, log_var = self.encode(hist)
        z = mu
        if generator is not None:
            eps = torch.randn(mu.shape, generator=generator, device=generator.device)
            z = mu + eps.to(mu) * torch.exp(0.5 * log_var)
        return self.decode(z), mu, log_var


def input_histograms(x: np.ndarray | torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """The VAE input of images ``x``: per-band histograms over [0, 1], fractions of in-range pixels.

    Returns:
        float32 tensor [B, C, bins] (a 3-D ``x`` gives B = 1).
    """
    t, _ = to_batched(x, "hr")
    counts = band_histograms(t, n_bins, normalize=False)
    assert isinstance(counts, torch.Tensor)
    total = counts.sum(dim=-1, keepdim=True)
    if bool((total == 0).any()):
        raise DegradationError("a band has no pixel inside [0, 1]; scale it to reflectance first")
    return counts / total


def predict_histogram(
    vae: HistogramVAE,
    hr: np.ndarray | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    min_fraction: float = MIN_FRACTION,
) -> np.ndarray | torch.Tensor:
    """Predict the Sentinel-2-like band histograms of HR image(s).

    Args:
        vae: the trained VAE.
        hr: [C, H, W] or [B, C, H, W] reflectance.
        generator: draw the latent from the posterior with it; None uses the posterior mean.
        min_fraction: predicted fractions below it are zeroed before normalising.

    Returns:
        Normalised histograms [C, bins] / [B, C, bins] (float32; numpy for numpy input).
    """
    hist = input_histograms(hr, vae.n_bins)
    if hist.shape[1] != vae.n_bands:
        raise DegradationError(f"the VAE takes {vae.n_bands} bands, the image has {hist.shape[1]}")
    param = next(vae.parameters())
    with torch.no_grad():
        pred, _, _ = vae(hist.to(param), generator)
    pred = _clean(pred.float().cpu(), min_fraction)
    out: np.ndarray | torch.Tensor = pred.numpy() if isinstance(hr, np.ndarray) else pred
    return out[0] if hr.ndim == 3 else out


def _clean(pred: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Zero the small fractions and normalise each band (a band left empty keeps its values)."""
    kept = torch.where(pred < min_fraction, torch.zeros_like(pred), pred)
    empty = kept.sum(dim=-1, keepdim=True) <= 0
    kept = torch.where(empty, pred, kept)
    return kept / kept.sum(dim=-1, keepdim=True)


def published_level_cdf(predicted: np.ndarray, source_hist: np.ndarray) -> np.ndarray:
    """CDF of the bin lower edges under opensr-degradation's rule (see the module doc).

    Args:
        predicted: predicted fractions [..., bins] after the small-value threshold.
        source_hist: the HR image's histograms [..., bins].

    Returns:
        float64 [..., bins]: P(value <= j / bins).
    """
    s2 = np.cumsum(predicted, axis=-1)
    s2 = s2 / s2[..., -1:]
    src = np.cumsum(source_hist, axis=-1)
    src = src / src[..., -1:]
    s2 = np.where(src - s2 > 0, 0.0, s2)
    s2 = np.clip(s2 / s2[..., -1:], 0.0, 1.0)
    # A draw u lands at level j when u > cdf'[j] and u <= cdf'[k] for all k > j.
    suffix_min = np.minimum.accumulate(s2[..., ::-1], axis=-1)[..., ::-1]
    level = np.ones_like(s2)
    level[..., :-1] = suffix_min[..., 1:]
    return level


def _level_inverse(cdf: np.ndarray, n_bins: int) -> Callable[[np.ndarray], np.ndarray]:
    """Inverse CDF of a distribution on the levels ``j / n_bins``, as skimage interpolates it."""
    prob = np.diff(cdf, prepend=0.0)
    keep = prob > 0
    values = np.arange(n_bins, dtype=np.float64)[keep] / n_bins
    quantiles = cdf[keep]
    return lambda q: np.interp(q, quantiles, values)


@dataclass(frozen=True, eq=False)
class VAEHarmonizer:
    """HR -> HR_h through the VAE's predicted histogram (the variational method).

    Attributes:
        vae: the histogram VAE.
        target: "uniform" (default) or "published" (see the module doc).
        min_fraction: threshold on predicted fractions.
        input_factor: the VAE's input histograms are those of the HR brought to the LR grid
            (antialiased downsampling by this factor), as the VAE was trained
            (:mod:`degradation.fit.networks`); 1 reads them on the HR as given (the published
            code's inference). The predicted histogram is then matched on the full-resolution
            HR either way.
    """

    vae: HistogramVAE
    target: str = "uniform"
    min_fraction: float = MIN_FRACTION
    input_factor: int = 1

    def __post_init__(self) -> None:
        """Validate the configuration."""
        if self.target not in TARGETS:
            raise DegradationError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.input_factor < 1:
            raise DegradationError(f"input_factor must be >= 1, got {self.input_factor}")

    def _input(self, hr: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """The image whose histograms the VAE reads: the HR at the LR grid (see the class)."""
        if self.input_factor == 1:
            return hr
        from degradation.resample import downsample

        t = torch.as_tensor(hr)
        batched = t if t.ndim == 4 else t[None]
        low = downsample(batched.to(torch.float32), self.input_factor, antialias=True)
        assert isinstance(low, torch.Tensor)
        low = low if t.ndim == 4 else low[0]
        return low if isinstance(hr, torch.Tensor) else low.numpy()

    def __call__(
        self, hr: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
    ) -> np.ndarray | torch.Tensor:
        """Harmonise ``hr`` ([C, H, W] or [B, C, H, W]); same type, rank and dtype out."""
        pred = predict_histogram(
            self.vae, self._input(hr), generator=generator, min_fraction=self.min_fraction
        )
        if self.target == "uniform":
            return match_to_histogram(hr, pred)
        pred_np = np.asarray(pred.numpy() if isinstance(pred, torch.Tensor) else pred, np.float64)
        src_hist = band_histograms(hr, self.vae.n_bins, normalize=False)
        src_np = np.asarray(
            src_hist.numpy() if isinstance(src_hist, torch.Tensor) else src_hist, np.float64
        )
        cdf = published_level_cdf(pred_np, src_np)
        if cdf.ndim == 2:
            cdf = cdf[None]
        src, back = _source_array(hr)
        n_bins = self.vae.n_bins
        return back(_match_all(src, lambda b, c: _level_inverse(cdf[b, c], n_bins), None))


@dataclass(frozen=True)
class TrainingLog:
    """Losses of a training run: first and last epoch mean, and every epoch."""

    first_loss: float
    last_loss: float
    losses: tuple[float, ...]


def train_minibatches(
    module: nn.Module,
    n_items: int,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    generator: torch.Generator,
    step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> TrainingLog:
    """Adam over seeded shuffled minibatches; the module is left in eval mode.

    Args:
        module: The network to train.
        n_items: Training items; each epoch visits them in a ``generator``-drawn order.
        epochs: Passes over the items.
        batch_size: Items per step.
        learning_rate: Adam's learning rate.
        generator: The only source of randomness (order, and whatever ``step`` draws).
        step: Maps a batch's item indices to (loss to minimise, loss to log).

    Returns:
        The per-epoch mean of the logged loss.
    """
    opt = torch.optim.Adam(module.parameters(), lr=learning_rate)
    losses: list[float] = []
    module.train()
    for _ in range(epochs):
        order = torch.randperm(n_items, generator=generator)
        total = 0.0
        for start in range(0, n_items, batch_size):
            idx = order[start : start + batch_size]
            loss, logged = step(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(logged.detach()) * idx.numel()
        losses.append(total / n_items)
    module.eval()
    return TrainingLog(losses[0], losses[-1], tuple(losses))


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every Linear/Conv layer from ``generator`` (uniform +-1/sqrt(fan_in)).

    torch's default initialisation draws from the global RNG; this keeps training seeded by an
    explicit generator only.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def train_vae(
    hr_histograms: np.ndarray | torch.Tensor,
    s2_histograms: np.ndarray | torch.Tensor,
    *,
    epochs: int = 200,
    seed: int = 0,
    learning_rate: float = 3e-3,
    batch_size: int = 16,
    kl_weight: float = 1e-5,
    hidden: int = SEN2NAIP_HIDDEN,
    latent: int = SEN2NAIP_LATENT,
) -> tuple[HistogramVAE, TrainingLog]:
    """Train a :class:`HistogramVAE` from paired histograms on CPU (small and fast).

    Loss: mean squared error between the CDFs of the decoded histogram (normalised) and of the
    S2 histogram (the histogram match depends only on the CDF), plus the mean squared error of
    the raw fractions, plus ``kl_weight`` times the KL divergence of the latent posterior from
    N(0, I).
    Adam; shuffling, initialisation and latent draws all from one generator seeded by ``seed``.

    Args:
        hr_histograms: [N, C, bins] HR (degraded to 10 m) histograms, fractions.
        s2_histograms: [N, C, bins] Sentinel-2 histograms of the same pairs.
        epochs: passes over the data.
        seed: the only source of randomness.
        learning_rate: Adam step size.
        batch_size: pairs per step.
        kl_weight: weight of the KL term.
        hidden: hidden width.
        latent: latent size.

    Returns:
        The trained VAE (eval mode) and its :class:`TrainingLog`.
    """
    x = torch.as_tensor(np.asarray(hr_histograms), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(s2_histograms), dtype=torch.float32)
    if x.ndim != 3 or x.shape != y.shape or x.shape[0] < 1:
        raise DegradationError(
            f"histograms must be two [N, C, bins] arrays of one shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if epochs < 1:
        raise DegradationError(f"epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    vae = HistogramVAE(x.shape[1], x.shape[2], hidden, latent)
    init_parameters(vae, gen)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred, mu, log_var = vae(x[idx], gen)
        target = y[idx]
        # The histogram match only sees the normalised CDF: fit it, and the raw fractions.
        cdf = (pred / pred.sum(dim=-1, keepdim=True).clamp_min(1e-8)).cumsum(dim=-1)
        recon = (cdf - target.cumsum(dim=-1)).square().mean()
        recon = recon + (pred - target).square().mean()
        kl = -0.5 * (1 + log_var - mu.square() - log_var.exp()).sum(dim=1).mean()
        return recon + kl_weight * kl, recon

    log = train_minibatches(
        vae,
        x.shape[0],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        generator=gen,
        step=step,
    )
    return vae, log
