"""The VQ-VAE's whole-model likelihood bound, in bits per dimension.

The encoder's posterior q(z | x) is one-hot on the nearest codes z_q, so the ELBO's KL term is
KL(q || p(z)) = -log p(z_q) and ``-log p(x) <= -log p(x | z_q) - log p(z_q)``: a decoder term plus a
prior term, both in nats per image. The VQ-VAE's decoder gives a mean image only; here ``p(x | z)`` is the
discretised logistic over the 256 grey levels around it (:mod:`vqvae_lib.likelihood`), with one log-scale
per channel fitted by maximum likelihood on the training split. Any scale chosen without looking at the test
split gives a valid bound on it; the fitted one is the tightest of this family on the training split.
The prior term comes from a uniform prior, a unigram prior or any autoregressive prior's logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .data import iter_batches
from .device import resolve_device
from .likelihood import NUM_LEVELS, _levels, bits_per_dim, discretized_logistic_nll, summed_log_bin_prob
from .quantize import check_indices

EVAL_BATCH = 256
# The grid search for the decoder's log-scale: from far below one grey level (log(1/255) = -5.5) to far
# wider than [0, 1]; each pass zooms to +-1 step around the last pass's best, so three passes of 25 points
# end with a step of 0.0035 in log-scale, which moves the bound by about 1e-5 bits per dimension.
LOG_SCALE_RANGE = (-10.0, 2.0)
SEARCH_POINTS = 25
SEARCH_PASSES = 3
CAUSALITY_TOLERANCE = 1e-4  # logits that must not move when a later code changes: rounding only


def _check_codes(codes: torch.Tensor, num_codes: int, what: str) -> None:
    """Raise ValueError unless ``codes`` is a (N, h, w) int64 grid with values in [0, num_codes)."""
    if codes.dim() != 3 or codes.dtype != torch.long:
        raise ValueError(f"{what} must be (N, h, w) int64 code grids, got {tuple(codes.shape)} {codes.dtype}")
    check_indices(codes, num_codes, what)


def _per_channel(log_scale, channels: int) -> torch.Tensor:
    """A float or a (C,) tensor of log-scales -> (C, 1, 1) float64, broadcastable to images (B, C, H, W)."""
    log_scale = torch.as_tensor(log_scale, dtype=torch.float64).reshape(-1)
    if len(log_scale) == 1:
        log_scale = log_scale.expand(channels)
    if len(log_scale) != channels or not torch.isfinite(log_scale).all():
        raise ValueError(f"log_scale must be a finite float or one value per channel ({channels}), "
                         f"got {log_scale.tolist()}")
    return log_scale.reshape(channels, 1, 1)


@torch.no_grad()
def decoder_nats(vqvae, x: torch.Tensor, indices: torch.Tensor, log_scale) -> torch.Tensor:
    """-log p(x | z = indices) in nats per image, exact over the 256 grey levels: (B,) float64.

    x: (B, C, H, W) on the 8-bit grid (k / 255); indices: (B, h, w) long; log_scale: a float or (C,).
    The decoder's output is the logistic's location; the bins at 0 and 1 take the tails.
    """
    mean = vqvae.decode_indices(indices).double()
    if mean.shape != x.shape:
        raise ValueError(f"these codes decode to images {tuple(mean.shape)}, not x's {tuple(x.shape)}")
    return discretized_logistic_nll(x.double(), mean, _per_channel(log_scale, x.shape[1]).to(x.device))


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
def fit_decoder_log_scale(vqvae, train_set, batch_size: int = EVAL_BATCH, device=None) -> torch.Tensor:
    """The maximum-likelihood log-scale of the decoder's discretised logistic, one per channel: (C,) float64.

    A deterministic grid search within LOG_SCALE_RANGE on the training split's total decoder nats, each
    channel on its own (their nats add up); no random draws, so the same model gives the same value.
    """
    device = resolve_device(device)
    vqvae.to(device).eval()
    channels = vqvae.in_channels
    low, high = (torch.full((channels,), edge, dtype=torch.float64) for edge in LOG_SCALE_RANGE)
    fractions = torch.linspace(0, 1, SEARCH_POINTS, dtype=torch.float64)[:, None]
    for _ in range(SEARCH_PASSES):
        candidates = low + (high - low) * fractions  # (G, C)
        best = candidates[_nats_per_channel(vqvae, train_set, candidates, batch_size, device).argmin(0),
                          torch.arange(channels)]
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
