"""Evaluation numbers over a whole split: NMSE, perplexity, codebook usage, the code grids."""
from __future__ import annotations

import torch

from .. import distributed
from ..data import iter_batches
from ..device import resolve_device
from ..quantizers.vq import perplexity_from_counts


def perplexity(indices_or_counts: torch.Tensor, num_codes: int | None = None) -> float:
    """exp(entropy) of code usage. Give either code indices (any shape, with num_codes) or counts (K,)."""
    if num_codes is not None:
        counts = torch.bincount(indices_or_counts.flatten(), minlength=num_codes)
    else:
        counts = indices_or_counts
    return float(perplexity_from_counts(counts))


@torch.no_grad()
def encode_dataset(vqvae, dataset, batch_size: int = 256, device=None) -> torch.Tensor:
    """Code grids for a whole data set: (N, h, w) long, on the CPU."""
    device = resolve_device(device)
    vqvae.to(device).eval()
    return torch.cat([vqvae.encode(x).cpu() for x, _ in iter_batches(dataset, batch_size, device)])


def codebook_usage(vqvae, dataset, batch_size: int = 256, device=None) -> torch.Tensor:
    """How often each code is chosen over the whole data set (not per batch): (K,) long."""
    codes = encode_dataset(vqvae, dataset, batch_size, device)
    return torch.bincount(codes.flatten(), minlength=vqvae.quantizer.num_codes)


@torch.no_grad()
def evaluate_vqvae(vqvae, dataset, batch_size: int = 256, device=None) -> dict:
    """Test NMSE (against the data set's own variance), perplexity and codes used over the whole split.

    Data-parallel: each rank evaluates its part of the split and the sums are reduced.
    """
    device = resolve_device(device)
    vqvae.to(device).eval()
    se, n = 0.0, 0
    counts = torch.zeros(vqvae.quantizer.num_codes, dtype=torch.long, device=distributed.collective_device())
    start, stop = distributed.shard_range(len(dataset))
    for x, _ in iter_batches(dataset, batch_size, device, start, stop):
        out = vqvae(x)
        se += float(((out.x_recon.float() - x) ** 2).sum())
        n += x.numel()
        counts += torch.bincount(out.vq.indices.flatten(), minlength=len(counts)).to(counts.device)
    if stop - start < len(dataset):
        se, n = distributed.sum_over_ranks(se, n)
        distributed.all_reduce_sum_(counts)
    return {"nmse": se / n / dataset.variance(), "perplexity": float(perplexity_from_counts(counts)),
            "codes_used": int((counts > 0).sum()), "num_codes": len(counts)}
