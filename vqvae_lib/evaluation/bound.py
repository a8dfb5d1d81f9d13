"""The VQ-VAE's whole-model likelihood bound, in bits per dimension.

The encoder's posterior q(z | x) is one-hot on the nearest codes z_q, so the ELBO's KL term is
KL(q || p(z)) = -log p(z_q) and ``-log p(x) <= -log p(x | z_q) - log p(z_q)``: a decoder term plus a
prior term, both in nats per image. The VQ-VAE's decoder gives a mean image only; here ``p(x | z)`` is the
discretised logistic over the 256 grey levels around it (:mod:`vqvae_lib.models.likelihood`), with one log-scale
per channel, or one per pixel (``per_pixel=True``), fitted by maximum likelihood on the training split. Any
scale chosen without looking at the test split gives a valid bound on it; the fitted one is the tightest of
its family on the training split.
The prior term comes from a uniform prior, a unigram prior or any autoregressive prior's logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..data import iter_batches
from ..device import resolve_device
from ..models.likelihood import (
    NUM_LEVELS,
    _levels,
    _log_bin_prob,
    bits_per_dim,
    discretized_logistic_pixel_nll,
    summed_log_bin_prob,
)
from ..quantizers.vq import check_indices

EVAL_BATCH = 256
# The grid search for the decoder's log-scale: from far below one grey level (log(1/255) = -5.5) to far
# wider than [0, 1]; each pass zooms to +-1 step around the last pass's best, so three passes of 25 points
# end with a step of 0.0035 in log-scale, which moves the bound by about 1e-5 bits per dimension.
LOG_SCALE_RANGE = (-10.0, 2.0)
SEARCH_POINTS = 25
SEARCH_PASSES = 3
# The binned head (:class:`BinnedHead`): 16 bins of the decoded value, fitted by Adam on 300 training images.
# On chapter 5's ci VQ-VAE it gave 1.359 test decoder bits per dimension (one scale: 2.185); fitted on all
# 4,500 images for 300 steps, 8 / 32 bins gave 1.403 / 1.333, and 16 bins on 1,000 images 1.358 (19 s, not 3).
HEAD_BINS = 16
HEAD_STEPS = 100
HEAD_LR = 0.05
HEAD_IMAGES = 300
CAUSALITY_TOLERANCE = 1e-4  # logits that must not move when a later code changes: rounding only


def _check_codes(codes: torch.Tensor, num_codes: int, what: str) -> None:
    """Raise ValueError unless ``codes`` is a (N, h, w) int64 grid with values in [0, num_codes)."""
    if codes.dim() != 3 or codes.dtype != torch.long:
        raise ValueError(f"{what} must be (N, h, w) int64 code grids, got {tuple(codes.shape)} {codes.dtype}")
    check_indices(codes, num_codes, what)


def _broadcast_log_scale(log_scale, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """A float, a (C,) tensor or a (C, H, W) tensor of log-scales -> float64 broadcastable to (B, C, H, W)."""
    channels = image_shape[0]
    log_scale = torch.as_tensor(log_scale, dtype=torch.float64)
    if log_scale.shape == tuple(image_shape):
        pass  # one per pixel
    elif log_scale.numel() == 1 or log_scale.shape == (channels,):
        log_scale = log_scale.reshape(-1).expand(channels).reshape(channels, 1, 1)
    else:
        raise ValueError(f"log_scale must be a float, one value per channel ({channels},) or one per pixel "
                         f"{tuple(image_shape)}, got shape {tuple(log_scale.shape)}")
    if not torch.isfinite(log_scale).all():
        raise ValueError("log_scale must be finite")
    return log_scale


@torch.no_grad()
def decoder_nats(vqvae, x: torch.Tensor, indices: torch.Tensor, log_scale) -> torch.Tensor:
    """-log p(x | z = indices) in nats per image, exact over the 256 grey levels: (B,) float64.

    x: (B, C, H, W) on the 8-bit grid (k / 255); indices: (B, h, w) long; log_scale: a float, (C,) or
    (C, H, W). The decoder's output is the logistic's location; the bins at 0 and 1 take the tails.
    """
    return decoder_pixel_nats(vqvae, x, indices, log_scale).flatten(1).sum(1)


class BinnedHead(torch.nn.Module):
    """A pointwise likelihood head for a decoder trained on squared error: the decoded value m of a pixel,
    binned into ``len(edges) + 1`` bins, picks a location offset and a log-scale for its discretised logistic.

    forward(mean (B, C, H, W)) -> (location, log_scale), both (B, C, H, W). Fitted by :func:`fit_binned_head`
    on the training split only, so the bound it gives on the test split is valid. It is what the VAE's decoder
    learns and an MSE decoder lacks: e.g. that a pixel decoded near 0 is background, exactly 0, and certain.
    """

    def __init__(self, edges: torch.Tensor):
        super().__init__()
        self.register_buffer("edges", edges.double())
        self.offset = torch.nn.Parameter(torch.zeros(len(edges) + 1, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.full((len(edges) + 1,), -2.0, dtype=torch.float64))

    def forward(self, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = torch.bucketize(mean.double(), self.edges)
        return mean.double() + self.offset[b], self.log_scale[b]


def fit_binned_head(vqvae, train_set, bins: int = HEAD_BINS, steps: int = HEAD_STEPS,
                    max_images: int = HEAD_IMAGES, device=None) -> BinnedHead:
    """Fit a :class:`BinnedHead` to the decoded training images by maximum likelihood (Adam, full batch,
    float64, deterministic): the bins split the decoded values' range evenly; the first ``max_images``."""
    if bins < 1 or steps < 1 or max_images < 1:
        raise ValueError(f"bins, steps and max_images must be positive, got {bins}, {steps}, {max_images}")
    device = resolve_device(device)
    vqvae.to(device).eval()
    x = next(iter_batches(train_set, max_images, device))[0]
    with torch.no_grad():
        mean = vqvae.decode_indices(vqvae.encode(x)).double()
    x = x.double()
    head = BinnedHead(torch.linspace(float(mean.min()), float(mean.max()), bins + 1)[1:-1]).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    for _ in range(steps):
        optimizer.zero_grad()
        discretized_logistic_pixel_nll(x, *head(mean)).sum((1, 2, 3)).mean().backward()
        optimizer.step()
    return head.eval().requires_grad_(False)


@torch.no_grad()
def decoder_pixel_nats(vqvae, x: torch.Tensor, indices: torch.Tensor, log_scale) -> torch.Tensor:
    """:func:`decoder_nats` pixel by pixel, unsummed: (B, C, H, W) float64 nats (the cost map).

    log_scale: a float, (C,), (C, H, W), or a :class:`BinnedHead` (which also moves the location)."""
    mean = vqvae.decode_indices(indices).double()
    if mean.shape != x.shape:
        raise ValueError(f"these codes decode to images {tuple(mean.shape)}, not x's {tuple(x.shape)}")
    if isinstance(log_scale, BinnedHead):
        mean, log_scale = log_scale(mean)
    else:
        log_scale = _broadcast_log_scale(log_scale, tuple(x.shape[1:])).to(x.device)
    return discretized_logistic_pixel_nll(x.double(), mean, log_scale)


@torch.no_grad()
def vqvae_cost_map(vqvae, dataset, log_scale, batch_size: int = EVAL_BATCH, device=None) -> torch.Tensor:
    """The decoder term's mean nats at each pixel over ``dataset``: (C, H, W) float64, on the CPU.

    Its sum is the mean of :func:`vqvae_reconstruction_nats`: where in the image the bits go."""
    device = resolve_device(device)
    vqvae.to(device).eval()
    total, count = 0.0, 0
    for x, *_ in iter_batches(dataset, batch_size, device):
        total = total + decoder_pixel_nats(vqvae, x, vqvae.encode(x), log_scale).sum(0).cpu()
        count += len(x)
    return total / count


@torch.no_grad()
def vqvae_reconstruction_nats(vqvae, dataset, log_scale, batch_size: int = EVAL_BATCH, device=None) -> torch.Tensor:
    """The decoder term -log p(x | z_q(x)) of every image of ``dataset``: (N,) float64 nats, on the CPU.

    z_q(x) is the encoder's nearest-code grid (``vqvae.encode``); log_scale: a float or (C,), e.g. from
    :func:`fit_decoder_log_scale`.
    """
    device = resolve_device(device)
    vqvae.to(device).eval()
    return torch.cat([decoder_nats(vqvae, x, vqvae.encode(x), log_scale).cpu()
                      for x, *_ in iter_batches(dataset, batch_size, device)])


@torch.no_grad()
def _nats_per_channel(vqvae, dataset, candidates: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """The whole data set's decoder nats per channel for each candidate log-scale: candidates (G, C) -> (G, C).

    float32 per batch (the search only compares candidates), summed over batches in float64.
    """
    totals = torch.zeros(candidates.shape, dtype=torch.float64)
    for x, *_ in iter_batches(dataset, batch_size, device):
        k = _levels(x.float(), NUM_LEVELS)
        mean = vqvae.decode_indices(vqvae.encode(x)).float()
        for c in range(candidates.shape[1]):
            totals[:, c] -= summed_log_bin_prob(k[:, c], mean[:, c], candidates[:, c], NUM_LEVELS).cpu()
    return totals


@torch.no_grad()
def _nats_per_pixel(vqvae, dataset, candidates: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """The whole data set's decoder nats at each pixel for each candidate: candidates (G, C, H, W) -> same.

    Each pixel's candidates are its own (the search zooms in pixel by pixel); float32 per batch.
    """
    totals = torch.zeros(candidates.shape, dtype=torch.float64)
    for x, *_ in iter_batches(dataset, batch_size, device):
        k = _levels(x.float(), NUM_LEVELS)
        mean = vqvae.decode_indices(vqvae.encode(x)).float()
        for g, log_scale in enumerate(candidates.float().to(device)):
            totals[g] -= _log_bin_prob(k, mean, log_scale, NUM_LEVELS).sum(0).double().cpu()
    return totals


@torch.no_grad()
def fit_decoder_log_scale(vqvae, train_set, batch_size: int = EVAL_BATCH, device=None,
                          per_pixel: bool = False) -> torch.Tensor:
    """The maximum-likelihood log-scale of the decoder's discretised logistic: (C,) float64, one per channel,
    or (C, H, W), one per pixel (``per_pixel=True``).

    A deterministic grid search within LOG_SCALE_RANGE on the training split's total decoder nats, each
    channel (or pixel) on its own, since their nats add up; no random draws, so the same model gives the
    same value. A per-pixel scale is still one fixed distribution per pixel, chosen without the test split.
    """
    device = resolve_device(device)
    vqvae.to(device).eval()
    shape = tuple(train_set[0][0].shape) if per_pixel else (vqvae.in_channels,)  # (C, H, W) or (C,)
    total_nats = _nats_per_pixel if per_pixel else _nats_per_channel
    low, high = (torch.full(shape, edge, dtype=torch.float64) for edge in LOG_SCALE_RANGE)
    fractions = torch.linspace(0, 1, SEARCH_POINTS, dtype=torch.float64).view(-1, *[1] * len(shape))
    for _ in range(SEARCH_PASSES):
        candidates = low + (high - low) * fractions  # (G, *shape)
        best = candidates.gather(0, total_nats(vqvae, train_set, candidates, batch_size, device)
                                 .argmin(0, keepdim=True))[0]
        step = (high - low) / (SEARCH_POINTS - 1)
        low, high = (best - step).clamp(min=LOG_SCALE_RANGE[0]), (best + step).clamp(max=LOG_SCALE_RANGE[1])
    return best


def uniform_nats_per_image(grid_shape: tuple[int, int], num_codes: int) -> float:
    """The uniform prior's -log p(z) for every (h, w) grid of num_codes codes: h * w * log K nats."""
    h, w = grid_shape
    if h < 1 or w < 1 or num_codes < 1:
        raise ValueError(f"need a positive grid shape and code count, got {grid_shape} and {num_codes}")
    return h * w * math.log(num_codes)


def unigram_nats_per_image(train_codes: torch.Tensor, test_codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """-log p(z) of each test grid under the training codes' add-one smoothed frequencies: (N,) float64.

    train_codes, test_codes: (N, h, w) long. p(k) = (count_k + 1) / (total + K), the same at every position.
    """
    _check_codes(train_codes, num_codes, "train_codes")
    _check_codes(test_codes, num_codes, "test_codes")
    counts = torch.bincount(train_codes.flatten(), minlength=num_codes).double() + 1  # no code gets p = 0
    log_p = (counts / counts.sum()).log()
    return -log_p[test_codes].flatten(1).sum(1)


@torch.no_grad()
def check_raster_causal(prior, grid: torch.Tensor, label: torch.Tensor | None = None) -> None:
    """Raise ValueError unless the logits at each position ignore the code there and every later code.

    grid: (1, h, w) long; label: (1,) or None. One batch of h * w copies, copy p with its code p changed:
    logits at positions <= p (raster order) must equal the unchanged grid's. A masked (MaskGIT-style)
    prior fails: its logits on a full grid see every code, so their cross entropy is no likelihood.
    """
    num_positions = grid[0].numel()
    base = prior(grid, label)
    num_codes = base.shape[1]
    changed = grid.flatten(1).repeat(num_positions, 1)
    position = torch.arange(num_positions, device=grid.device)
    changed[position, position] = (changed[position, position] + 1) % num_codes
    labels = None if label is None else label.expand(num_positions)
    moved = (prior(changed.view(-1, *grid.shape[1:]), labels) - base).abs().flatten(2).amax(1)  # (P, P)
    up_to_p = position[None, :] <= position[:, None]  # row p: the positions 0..p
    if bool((moved[up_to_p] > CAUSALITY_TOLERANCE).any()):
        leak = int(torch.nonzero((moved > CAUSALITY_TOLERANCE) & up_to_p)[0, 0])
        raise ValueError(f"the prior's logits at or before position {leak} (raster order) change with the code "
                         f"at {leak}: it is not autoregressive in raster order, so the sum of its cross "
                         "entropies is not -log p(z)")


@torch.no_grad()
def prior_nats_per_image(prior, code_grids: torch.Tensor, labels: torch.Tensor | None = None,
                         batch_size: int = EVAL_BATCH, device=None) -> torch.Tensor:
    """-log p(z) of each grid under an autoregressive prior: (N,) float64 nats, on the CPU.

    prior: any model with forward(indices (B, h, w), labels (B,) | None) -> logits (B, K, h, w) whose logits
    at (i, j) see only the codes before (i, j) in raster order (checked on the first grid with
    :func:`check_raster_causal`); then -log p(z) = sum over the grid of -log softmax(logits)[z_ij].
    code_grids: (N, h, w) long; labels: (N,) long for a class-conditional prior, which bounds -log p(x | label);
    -log p(x) <= -log p(x | y) - log p(y) for any y, so add -log p(label) (log 10 for ten equal classes).
    """
    if code_grids.dim() != 3 or code_grids.dtype != torch.long or len(code_grids) == 0:
        raise ValueError(f"code_grids must be non-empty (N, h, w) int64, got {tuple(code_grids.shape)} "
                         f"{code_grids.dtype}")
    if labels is not None and labels.shape != code_grids.shape[:1]:
        raise ValueError(f"labels must be ({len(code_grids)},), got {tuple(labels.shape)}")
    device = resolve_device(device)
    prior.to(device).eval()
    data = TensorDataset(code_grids) if labels is None else TensorDataset(code_grids, labels)
    nats = []
    for batch in iter_batches(data, batch_size, device):
        indices, batch_labels = batch[0], batch[1] if labels is not None else None
        if not nats:
            check_raster_causal(prior, indices[:1], None if batch_labels is None else batch_labels[:1])
        logits = prior(indices, batch_labels).double()
        nats.append(F.cross_entropy(logits, indices, reduction="none").flatten(1).sum(1).cpu())
    return torch.cat(nats)


def vqvae_bound_bits_per_dim(recon_nats_per_image, prior_nats_per_image, num_dims: int) -> dict:
    """The bound -log p(x) <= -log p(x | z_q) - log p(z_q), averaged over images, in bits per dimension.

    recon_nats_per_image: (N,) decoder nats (:func:`vqvae_reconstruction_nats`); prior_nats_per_image: (N,)
    or a float for a prior that gives every grid the same nats (the uniform one); num_dims: C * H * W.
    Returns {"decoder_bits_per_dim", "prior_bits_per_dim", "bits_per_dim" (their sum), "num_images"}.
    """
    recon = torch.as_tensor(recon_nats_per_image, dtype=torch.float64)
    prior = torch.as_tensor(prior_nats_per_image, dtype=torch.float64)
    if recon.dim() != 1 or len(recon) == 0:
        raise ValueError(f"recon_nats_per_image must be a non-empty (N,) tensor, got shape {tuple(recon.shape)}")
    if prior.dim() == 0:
        prior = prior.expand_as(recon)
    if prior.shape != recon.shape:
        raise ValueError(f"prior_nats_per_image must be a float or ({len(recon)},), got {tuple(prior.shape)}")
    for name, nats in (("recon", recon), ("prior", prior)):
        if not torch.isfinite(nats).all() or bool((nats < 0).any()):
            raise ValueError(f"{name}_nats_per_image must be finite and >= 0 (-log of a discrete probability)")
    decoder, prior_part = bits_per_dim(float(recon.mean()), num_dims), bits_per_dim(float(prior.mean()), num_dims)
    return {"decoder_bits_per_dim": decoder, "prior_bits_per_dim": prior_part,
            "bits_per_dim": decoder + prior_part, "num_images": len(recon)}
