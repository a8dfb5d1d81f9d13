"""Index backpropagation quantization, IBQ (Shi et al. 2024, "Taming Scalable Visual Tokenizer for Autoregressive
Image Generation", sec. 3.2).

Each position scores every code by its dot product with z_e, logits_k = z . e_k, and takes the best one, as a
hard one-hot vector h. The forward pass uses that code; the backward pass goes through the softmax p = softmax(logits)
as well, straight-through on the one-hot:

    z_q = h C + (p - sg[p]) C,    h = onehot(i),  i = argmax_k z . e_k,    C: (K, D) the codebook

Its value is e_i exactly, since p - sg[p] is exactly zero. The encoder's gradient is that of p C (through the
logits), not the decoder's gradient copied as in straight-through VQ. The codebook's gradient is that of
(h + p - sg[p]) C: the chosen code gets the decoder's gradient g directly, and every code k a share through
the logits, p_k (g . (e_k - e_bar)) z with e_bar = sum_j p_j e_j: weighted by its probability and by how much
moving z_q toward it would change the loss, so not in proportion to its probability alone.

The loss: the VQ terms, codebook_loss + beta * commitment_loss (chapter 2's, with the chosen code e_i), plus the
index term mean ||z_q - z_e||^2 (reported as ``terms["index_loss"]``), whose gradient reaches every code and the
encoder through p. The authors' code (TencentARC/SEED-Voken, src/IBQ/modules/vqvae/quantize.py) weights the two VQ
terms the other way round (1 on the commitment, beta on the codebook), and their ImageNet configurations add an
entropy penalty over the softmax and an exponential moving average of the model's weights; the library keeps the
book's weighting and leaves the other two out, so that IBQ differs from VQ only by the index term and the gradient
path. Beyond VQ's N x K distances it keeps an N x K softmax for the backward pass and sends a gradient to all K
codes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from ..seeding import generator as seeded_generator
from .vq import VQOutput, check_indices, check_z_e, perplexity_from_counts


class IBQ(nn.Module):
    """z_e: (B, D, H, W) -> the code of highest dot product at each position; a drop-in for ``VectorQuantizer``
    (kind "ibq"). codebook: (K, D), drawn from N(0, 1) with ``seed``."""

    @register_to_config
    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, seed: int = 0):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be positive, got {num_codes}, {code_dim}")
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        # N(0, 1), as the authors' code (an nn.Embedding's default, not re-initialised). With VectorQuantizer's
        # +-1/K codes every logit starts near 0: chapter 11's ci model (K = 64, seed 0, 250 steps) then used 25
        # codes at a test NMSE of 0.445, against 30 codes and 0.244 from N(0, 1)
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim, generator=seeded_generator(seed)))

    def codes(self) -> torch.Tensor:
        """(K, D): the codebook (the same method as VectorQuantizer's)."""
        return self.codebook

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> code vectors (B, D, H, W)."""
        check_indices(indices, self.num_codes)
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def flat_logits(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_e: (B, D, H, W) -> (flat, logits): the positions as rows (N, D), N = B H W, and their dot products
        with every code (N, K), both in float32; positions as rows, so a softmax runs over contiguous memory."""
        flat = z_e.float().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        return flat, flat @ self.codebook.float().t()

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long, the code of highest dot product at each position."""
        check_z_e(z_e, self.code_dim)
        B, _, H, W = z_e.shape
        return self.flat_logits(z_e)[1].argmax(1).view(B, H, W)

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        check_z_e(z_e, self.code_dim)
        with torch.autocast(z_e.device.type, enabled=False):  # the softmax and the losses in float32
            B, D, H, W = z_e.shape
            flat, logits = self.flat_logits(z_e)
            p = logits.softmax(1)
            indices = logits.detach().argmax(1)
            e = self.codebook.index_select(0, indices)  # (N, D), the chosen codes; gradient to those rows alone
            q = e + (p - p.detach()) @ self.codebook  # value e; gradient through p to z and every code
            codebook_loss = F.mse_loss(e, flat.detach())
            commitment_loss = F.mse_loss(flat, e.detach())
            index_loss = F.mse_loss(q, flat)
            counts = torch.bincount(indices, minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage, as VectorQuantizer's
            loss = index_loss + codebook_loss + self.beta * commitment_loss
            z_q = q.view(B, H, W, D).permute(0, 3, 1, 2)
        return VQOutput(z_q.to(z_e.dtype), indices.view(B, H, W), codebook_loss, commitment_loss, loss,
                        perplexity_from_counts(counts), {"index_loss": index_loss})
