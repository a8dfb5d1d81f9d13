"""Binary spherical quantization, BSQ (Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
Quantization", sec. 3).

z_e is projected to L channels and scaled to unit length, u = P z_e / |P z_e|; each coordinate is quantised to
its sign, scaled so that the code is on the unit sphere too:

    z_q = sign(u) / sqrt(L)  (straight-through from u),   index = sum_l [u_l > 0] 2^l,   K = 2^L codes

and projected back to D channels for the decoder. It is LFQ (chapter 9) on the sphere: every code and every input
has length 1, so |u - c| is at most 2 and the quantisation error is bounded, whatever the encoder's scale.

The entropy terms are LFQ's, computed exactly and factorised as :class:`~vqvae_lib.quantizers.lfq.LFQ` computes
them: the soft assignment q(c | u) = softmax_c(-L |u - c|^2 / temperature) factorises over the L coordinates, with
logit 4 sqrt(L) u_l / temperature for c_l > 0, which is LFQ's own logit of the cube's point sqrt(L) u. So BSQ runs
LFQ's entropies on sqrt(L) u: temperature 1 means what it means for LFQ. vector_quantize_pytorch's
``LFQ(spherical=True)`` scales its softmax by ``inv_temperature`` = L / temperature in these terms.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from ..seeding import generator as seeded_generator
from .lfq import LFQ, MAX_CODE_DIM
from .projection import projection
from .vq import VQOutput, check_indices, check_z_e, perplexity_from_counts


class BSQ(nn.Module):
    """z_e: (B, D, H, W) -> codes on the unit sphere of L = num_bits dimensions; a drop-in for ``VectorQuantizer``
    (kind "bsq", num_codes = 2^L). With num_bits = code_dim (the default) there are no projections: the encoder's
    last 1x1 convolution is P.

    loss = beta * commitment + entropy_weight * (H_position - diversity_weight * H_codebook), with
    commitment = mean |u - sg[z_q]|^2 per coordinate and the entropies (nats) in ``terms`` as LFQ's.
    """

    @register_to_config
    def __init__(self, code_dim: int, num_bits: int | None = None, entropy_weight: float = 0.1,
                 diversity_weight: float = 1.0, beta: float = 0.25, temperature: float = 1.0, seed: int = 0):
        super().__init__()
        num_bits = code_dim if num_bits is None else num_bits
        for name, value, most in (("code_dim", code_dim, None), ("num_bits", num_bits, MAX_CODE_DIM)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most and value > most):
                raise ValueError(f"{name} must be a positive integer{f' up to {most}' if most else ''}, "
                                 f"got {value!r}")
        # LFQ checks the temperature and the weights
        self.bits = LFQ(num_bits, entropy_weight=entropy_weight, diversity_weight=diversity_weight, beta=beta,
                        temperature=temperature)
        self.code_dim, self.num_bits, self.num_codes = code_dim, num_bits, 2 ** num_bits
        self.entropy_weight, self.diversity_weight, self.beta = entropy_weight, diversity_weight, beta
        draws = seeded_generator(seed)
        self.project_in = projection(code_dim, num_bits, draws)
        self.project_out = projection(num_bits, code_dim, draws)

    def to_sphere(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> u (B, L, H, W) float32, of unit length at every position."""
        return F.normalize(self.project_in(z_e.float()), dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> code vectors (B, D, H, W) (projected back to D channels)."""
        check_indices(indices, self.num_codes)
        return self.project_out(self.bits.indices_to_codes(indices) / math.sqrt(self.num_bits))

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long."""
        check_z_e(z_e, self.code_dim)
        return self.bits.codes_to_indices(self.project_in(z_e.float()))  # the signs do not need the scaling

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        check_z_e(z_e, self.code_dim)
        with torch.autocast(z_e.device.type, enabled=False):  # entropies and signs in float32
            u = self.to_sphere(z_e)
            code = torch.where(u > 0, 1.0, -1.0) / math.sqrt(self.num_bits)
            z_q = code + (u - u.detach())  # value: the code exactly; gradient: passed to u unchanged
            commitment = F.mse_loss(u, code)
            indices = self.bits.codes_to_indices(u)
            counts = torch.bincount(indices.view(-1), minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage
            h_position, h_codebook = self.bits.entropies(u * math.sqrt(self.num_bits))
            penalty = h_position - self.diversity_weight * h_codebook
            loss = self.beta * commitment + self.entropy_weight * penalty
            z_q = self.project_out(z_q)
        terms = {"entropy_per_position": h_position, "codebook_entropy": h_codebook, "entropy_penalty": penalty}
        return VQOutput(z_q.to(z_e.dtype), indices, commitment.new_zeros(()), commitment, loss,
                        perplexity_from_counts(counts), terms)
