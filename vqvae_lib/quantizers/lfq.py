"""Lookup-free quantisation (Yu et al. 2023, MAGVIT-v2, "Language Model Beats Diffusion: Tokenizer is Key
to Visual Generation", sec. 3.1).

Each of the D channels of ``z_e: (B, D, H, W)`` is quantised to its sign, so the codebook is the 2^D corners
{-1, +1}^D of a cube and finding the nearest code needs no lookup: the code's index is the number whose
bits are the signs. An entropy penalty keeps the codes in use. A drop-in for
:class:`~vqvae_lib.quantizers.vq.VectorQuantizer` (``VQVAE(quantizer={"kind": "lfq"}, num_codes=64, code_dim=6)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from .vq import ImplicitCodebook, VQOutput, check_z_e, perplexity_from_counts

# The codebook entropy needs each position's distribution over all 2^D codes: beyond this it would not fit.
MAX_CODE_DIM = 24
LOG_FLOOR = 1e-30  # log(p) for p = 0: p log p -> 0 and its gradient stays finite
# -(z_d - 1)^2 and -(z_d + 1)^2, a channel's terms of -||z - c||^2 for c_d = +1 and c_d = -1, differ by 4 z_d:
# the logit of q(c_d = +1) is 4 z_d / temperature (see LFQ).
LOGIT_PER_UNIT = 4.0


class _SignStraightThrough(torch.autograd.Function):
    """z_q = sign(z) (+1 where z > 0, else -1) with the gradient passed to z unchanged, and the commitment
    loss mean (z - sg[z_q])^2, in one node (one difference serves both, as in
    :class:`~vqvae_lib.quantizers.vq.StraightThrough`). z: (B, D, H, W) float32 -> z_q (B, D, H, W), loss ()."""

    @staticmethod
    def forward(ctx, z):
        z_q = torch.where(z > 0, 1.0, -1.0)
        diff = z - z_q
        ctx.save_for_backward(diff)
        ctx.set_materialize_grads(False)
        return z_q, diff.square().mean()

    @staticmethod
    def backward(ctx, grad_zq, grad_commitment):
        (diff,) = ctx.saved_tensors
        grad = grad_zq
        if grad_commitment is not None:
            step = grad_commitment * (2.0 / diff.numel())  # d/dx mean(x^2) = 2x / n
            grad = diff * step if grad is None else torch.addcmul(grad, diff, step)
        return grad


def pattern_bits(code_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The selectors of the factorised assignment: [log q(+1), log q(-1)] (N, 2 D) @ selector = log q of every bit
    pattern of the low channels (d < low = ceil(D / 2); (2 D, 2^low), column j: the bits of j) and of the high
    channels ((2 D, 2^(D - low))). Row d picks channel d's log q(+1) where the pattern's bit is 1, row D + d its
    log q(-1) where it is 0; the other group's rows are zero."""
    low = (code_dim + 1) // 2
    selectors = []
    for first, count in ((0, low), (low, code_dim - low)):
        bits = ((torch.arange(2 ** count)[None, :] >> torch.arange(count)[:, None]) & 1).float()  # (count, 2^count)
        selector = torch.zeros(2 * code_dim, 2 ** count)
        selector[first:first + count] = bits
        selector[code_dim + first:code_dim + first + count] = 1 - bits
        selectors.append(selector)
    return selectors[0], selectors[1]


class LFQ(ImplicitCodebook, nn.Module):
    """Lookup-free quantisation of ``z_e: (B, D, H, W)``, D = code_dim, K = 2^D codes (Yu et al. 2023).

        z_q = sign(z_e) in {-1, +1}^D  (straight-through),  index = sum_d b_d 2^d,  b_d = [z_e,d > 0]

    Training signal: loss = beta * commitment + entropy_weight * (H_position - diversity_weight * H_codebook),
      commitment = mean ||z_e - sg[z_q]||^2 (per element);
      q(c | z) = softmax_c(-||z - c||^2 / temperature), a position's soft assignment to the K codes;
      H_position = mean over positions of H(q(. | z)): low when each position is confidently one code;
      H_codebook = H(mean over positions of q(. | z)): high when the batch spreads over all codes.
    Both entropies are in nats and are reported in ``terms`` (``entropy_per_position``, ``codebook_entropy``,
    and ``entropy_penalty`` = H_position - diversity_weight H_codebook).

    Computed exactly but factorised: since ||z - c||^2 = sum_d (z_d - c_d)^2, q(c | z) = prod_d q_d(c_d | z_d)
    with q_d(+1 | z_d) = sigmoid(4 z_d / temperature), so H_position is the sum of D binary entropies, and the
    batch mean of q over all K codes is P_low^T P_high / N, the product distributions of the two halves of
    the channels (N x 2^(D/2) each) multiplied once: N K work instead of N K D, and no N x K softmax.
    (tests/test_lfq.py checks both against the softmax over every code.)

    Defaults: diversity_weight 1 (the paper's penalty E[H(q)] - H(E[q])), entropy_weight 0.1 (as
    vector_quantize_pytorch's LFQ), beta 0.25 (van den Oord et al.'s commitment), temperature 1: a channel's soft
    assignment at |z| = 1 is then 98% confident (vector_quantize_pytorch's inv_temperature=100 is temperature
    0.01 here). These train the ``ci`` VQ-VAE (tests/test_lfq.py).
    Data-parallel: the code counts and the batch-mean assignment are the global batch's (the gradient flows
    through this rank's part; the gradient averaging over the ranks completes it).
    """

    @register_to_config
    def __init__(self, code_dim: int, entropy_weight: float = 0.1, diversity_weight: float = 1.0,
                 beta: float = 0.25, temperature: float = 1.0):
        super().__init__()
        if isinstance(code_dim, bool) or not isinstance(code_dim, int) or not 1 <= code_dim <= MAX_CODE_DIM:
            raise ValueError(f"code_dim must be an integer in [1, {MAX_CODE_DIM}], got {code_dim!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if min(entropy_weight, diversity_weight, beta) < 0:
            raise ValueError(f"entropy_weight, diversity_weight and beta must be >= 0, got "
                             f"{entropy_weight}, {diversity_weight}, {beta}")
        self.code_dim, self.num_codes = code_dim, 2 ** code_dim
        self.entropy_weight, self.diversity_weight = entropy_weight, diversity_weight
        self.beta, self.temperature = beta, temperature
        self.register_buffer("basis", (2 ** torch.arange(code_dim)).view(1, -1, 1, 1), persistent=False)
        low_bits, high_bits = pattern_bits(code_dim)
        self.register_buffer("low_bits", low_bits, persistent=False)
        self.register_buffer("high_bits", high_bits, persistent=False)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (or any z): (B, D, H, W) -> indices (B, H, W) long, sum_d [codes_d > 0] 2^d."""
        return ((codes > 0).long() * self.basis).sum(1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> codes (B, D, H, W) in {-1, +1}: code_d = 2 bit_d - 1. No checks."""
        bits = torch.bitwise_and(torch.div(indices.unsqueeze(1), self.basis, rounding_mode="floor"), 1)
        return 2.0 * bits.float() - 1.0

    def mean_assignment(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D, H, W) -> (2^D,) the mean over the positions of q(c | z), entry i for the code of index i.
        Factorised: P_low^T P_high / N over the low and high halves of the channels (see the class docstring)."""
        return self._statistics(z)[1]

    def _statistics(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D, H, W) -> (H_position, mean assignment (2^D,)), both from the per-channel log-probabilities."""
        # a = log q(+1) - log q(-1) per channel, positions as rows
        logits = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim) * (LOGIT_PER_UNIT / self.temperature)
        log_one = F.logsigmoid(logits)
        log_minus = log_one - logits
        # binary entropy -q log q - (1 - q) log(1 - q) = a q(-1) - log q(+1): no log of an underflowing probability
        h_position = (logits * torch.exp(log_minus) - log_one).sum(1).mean()
        log_both = torch.cat([log_one, log_minus], 1)
        low, high = (torch.exp(log_both @ bits.to(z.dtype)) for bits in (self.low_bits, self.high_bits))
        mean_q = low.t() @ high / logits.shape[0]  # (2^low, 2^high): entry (c_low, c_high) is code c_low + 2^low c_high
        return h_position, mean_q.t().reshape(-1)

    def entropies(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D, H, W) -> (H_position, H_codebook), nats, differentiable (see the class docstring).
        Under data-parallel training H_codebook is that of the global batch's mean assignment."""
        h_position, mean_q = self._statistics(z)
        if self.training and distributed.is_distributed():
            # value: the global batch's mean; gradient: this rank's, scaled so that averaging completes it
            world = distributed.all_reduce_sum_(mean_q.detach().clone()) / distributed.world_size()
            mean_q = mean_q + (world - mean_q).detach()
        h_codebook = -(mean_q * torch.log(mean_q.clamp_min(LOG_FLOOR))).sum()
        return h_position, h_codebook

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long (no state: LFQ has none)."""
        check_z_e(z_e, self.code_dim)
        return self.codes_to_indices(z_e)

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        check_z_e(z_e, self.code_dim)
        with torch.autocast(z_e.device.type, enabled=False):  # entropies and signs in float32
            z = z_e.float()
            z_q, commitment = _SignStraightThrough.apply(z)
            indices = self.codes_to_indices(z)
            counts = torch.bincount(indices.view(-1), minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage
            h_position, h_codebook = self.entropies(z)
            penalty = h_position - self.diversity_weight * h_codebook
            loss = self.beta * commitment + self.entropy_weight * penalty
        terms = {"entropy_per_position": h_position, "codebook_entropy": h_codebook, "entropy_penalty": penalty}
        return VQOutput(z_q.to(z_e.dtype), indices, commitment.new_zeros(()), commitment, loss,
                        perplexity_from_counts(counts), terms)
