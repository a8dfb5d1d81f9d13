"""Finite scalar quantisation (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the D channels of ``z_e: (B, D, H, W)`` is squashed into a bounded range and rounded to one of
``levels[d]`` integers; the code is the vector of the D rounded values, so the codebook is the fixed grid
of prod(levels) points and nothing is learned in the quantiser: no codebook loss, no commitment to a code, no
codebook to collapse. A drop-in for :class:`~vqvae_lib.quantizers.vq.VectorQuantizer` (``VQVAE(quantizer={"kind": "fsq",
"levels": [4, 4, 4]}, num_codes=64, code_dim=3)``).

One addition to the paper: a range loss that pulls an encoder output back once it is well past the outer level,
where tanh passes no gradient (see :class:`FSQ`); ``range_weight=0`` is the paper's FSQ.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from .vq import ImplicitCodebook, VQOutput, check_z_e, perplexity_from_counts

# A margin on the bound's half-range: the paper's appendix A.1 has (L - 1)(1 - eps) / 2; this library, like
# vector-quantize-pytorch, (1 + eps). Either way the outer levels are reached at finite z, since rounding
# switches at half-integers; the shift below makes bound(0) = 0 exactly.
BOUND_EPS = 1e-3
# With the margin, (L - 1) eps / 2 >= 1/2 would let the bound round to one level past either end.
MAX_LEVEL = round(1 / BOUND_EPS)
MIN_LEVEL = 2
# Why FSQ here has a range loss: at initialisation every position rounds to the centre code, so the decoder sees a
# constant and the straight-through gradient it sends back points largely the same way at every position; rounding makes
# the loss flat along it, so it persists, and Adam turns it into full steps in every encoder layer until the outputs
# reach tanh's flat tails, where nothing brings them back. Chapter 9's run (ci VQ-VAE, levels (4, 4, 4), 250 steps at lr
# 2e-3), seed 0: mean |z_e| 0.07 at step 0 (not large), 1.6 at step 10, 27 at step 30, 40 at the end, 1 code used, test
# NMSE 0.72; seeds 6 and 9 saturated one channel (16 codes); a lower learning rate or a warm-up did not stop it (lr
# 5e-4: 4 of seeds 0, 1, 2, 6, 9 at 16 codes or fewer). With the range loss at weight 1, seeds 0-9 all use 59-64 codes,
# NMSE 0.107-0.140 (the seven seeds that trained without it: 0.123 on average without, 0.122 with); weights 0.1 and 10
# also trained seeds 0, 4, 6, 8 and 9. At the end of a healthy run it is below 1e-3.
# It starts RANGE_MARGIN past the outer level's threshold (for L = 4 at |z + shift| = 1.80, where tanh's slope is 0.10):
# beyond that threshold moving z changes no code, so pulling it back costs no reconstruction.
RANGE_MARGIN = 1.0
DEFAULT_RANGE_WEIGHT = 1.0


class _RoundBound(torch.autograd.Function):
    """round(bound(z)) / half_width with the gradient of bound(z) / half_width (rounding straight through),
    in one node: bound(z) = tanh(z + shift) half_l - offset, so d/dz = (1 - tanh^2) half_l / half_width.

    z: (B, D, H, W) float32; shift, half_l, offset, half_width: (1, D, 1, 1)
    -> codes (B, D, H, W) in [-1, 1], rounded (B, D, H, W) the integers round(bound(z)).
    """

    @staticmethod
    def forward(ctx, z, shift, half_l, offset, half_width):
        t = torch.tanh(z + shift)
        rounded = torch.round(t * half_l - offset)
        ctx.save_for_backward(t, half_l / half_width)
        ctx.mark_non_differentiable(rounded)
        return rounded / half_width, rounded

    @staticmethod
    def backward(ctx, grad_codes, grad_rounded):
        t, slope = ctx.saved_tensors
        return grad_codes * (1 - t * t) * slope, None, None, None, None


class FSQ(ImplicitCodebook, nn.Module):
    """Finite scalar quantisation of ``z_e: (B, D, H, W)``, D = len(levels) (Mentzer et al. 2023, sec. 3).

    Per channel with L = levels[d] (the paper's ``bound``, appendix A.1, up to BOUND_EPS's sign; its offset
    making even L work):
        half_l = (L - 1)(1 + eps) / 2,  offset = 1/2 if L is even else 0,  shift = atanh(offset / half_l)
        bound(z) = tanh(z + shift) half_l - offset
        code = round(bound(z)) / (L // 2)          # rounding straight-through; codes in [-1, 1]
    The rounded values are the integers -(L // 2) .. (L - 1) - L // 2 (odd L: symmetric about 0; even L:
    one more below zero). The index of a code is its mixed-radix number: with level digits
    k_d = round(bound(z_d)) + L_d // 2 in [0, L_d), index = sum_d k_d basis_d, basis_d = prod_{d' < d} L_d'
    (:meth:`codes_to_indices`; :meth:`indices_to_codes` is the inverse).

    (The paper's pseudocode writes ``tan`` for the shift; its author confirmed ``atanh``, used here.)

    levels: the number of values of each channel, each >= 2 (L = 2 gives the two codes -1 and 0, and a
    vanishing gradient at z = 0 because the shift sits far out on tanh; the paper's choices are 5 to 8).
    num_codes = prod(levels), code_dim = len(levels). FSQ has nothing to learn: no codebook loss.

    The range loss (not in the paper): far out along tanh the bound is flat, so an encoder output pushed there
    gets no gradient to come back with, and in a small model trained fast the first steps can push every
    output there (RANGE_MARGIN's comment has the figures). Per channel, with u = z + shift and
    edge = atanh((L - 2) / ((L - 1)(1 + eps))) + RANGE_MARGIN (the outer level is reached at |u| =
    atanh((L - 2) / ((L - 1)(1 + eps))), for odd and even L alike),
        range_loss = mean over (B, D, H, W) of relu(|u| - edge)^2,   loss = range_weight * range_loss,
    the squared distance of u from [-edge, edge]: zero wherever a code can still change, so it never trades
    reconstruction for range; it is reported as ``commitment_loss`` (it moves only the encoder).
    range_weight: >= 0; 0 gives the paper's FSQ, whose loss is zero.
    """

    @register_to_config
    def __init__(self, levels: list[int], range_weight: float = DEFAULT_RANGE_WEIGHT):
        super().__init__()
        levels = list(levels) if isinstance(levels, (list, tuple)) else levels
        if not isinstance(levels, list) or not levels:
            raise ValueError(f"levels must be a non-empty list of integers, got {levels!r}")
        if any(isinstance(L, bool) or not isinstance(L, int) or not MIN_LEVEL <= L <= MAX_LEVEL for L in levels):
            raise ValueError(f"every level must be an integer in [{MIN_LEVEL}, {MAX_LEVEL}], got {levels}")
        if (isinstance(range_weight, bool) or not isinstance(range_weight, (int, float))
                or not 0 <= range_weight < math.inf):
            raise ValueError(f"range_weight must be a finite number >= 0, got {range_weight!r}")
        self.levels, self.range_weight = levels, float(range_weight)
        self.num_codes, self.code_dim = math.prod(levels), len(levels)

        def channel_buffer(name, values, dtype=torch.float32):
            self.register_buffer(name, torch.tensor(values, dtype=dtype).view(1, -1, 1, 1), persistent=False)

        half_l = [(L - 1) * (1 + BOUND_EPS) / 2 for L in levels]
        offset = [0.5 if L % 2 == 0 else 0.0 for L in levels]
        channel_buffer("half_l", half_l)
        channel_buffer("offset", offset)
        channel_buffer("shift", [math.atanh(o / h) for o, h in zip(offset, half_l)])  # in float64, then stored
        channel_buffer("range_edge", [math.atanh((L - 2) / (2 * h)) + RANGE_MARGIN for L, h in zip(levels, half_l)])
        channel_buffer("half_width", [L // 2 for L in levels])
        channel_buffer("half_width_int", [L // 2 for L in levels], torch.long)
        channel_buffer("level_count", levels, torch.long)
        channel_buffer("basis", [math.prod(levels[:d]) for d in range(len(levels))], torch.long)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """The paper's bound before rounding: z: (B, D, H, W) -> tanh(z + shift) half_l - offset, same shape."""
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D, H, W) float32 -> (codes (B, D, H, W) in [-1, 1] with the straight-through gradient of the
        bound, the rounded integers (B, D, H, W))."""
        return _RoundBound.apply(z, self.shift, self.half_l, self.offset, self.half_width)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, D, H, W) on the grid (values k / (L // 2)) -> indices (B, H, W) long, the mixed-radix
        number sum_d (code_d (L_d // 2) + L_d // 2) basis_d."""
        digits = torch.round(codes.float() * self.half_width).long() + self.half_width_int
        return (digits * self.basis).sum(1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> codes (B, D, H, W): digit_d = (index // basis_d) mod L_d, code_d =
        (digit_d - L_d // 2) / (L_d // 2). No checks (see :meth:`lookup`)."""
        digits = torch.div(indices.unsqueeze(1), self.basis, rounding_mode="floor") % self.level_count
        return (digits - self.half_width_int).float() / self.half_width

    def implicit_codebook(self) -> torch.Tensor:
        """Every code, (num_codes, D), row i the code of index i: the fixed grid FSQ quantises to."""
        indices = torch.arange(self.num_codes, device=self.basis.device).view(1, -1, 1)
        return self.indices_to_codes(indices)[0, :, :, 0].t()

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long (no state: FSQ has none)."""
        check_z_e(z_e, self.code_dim)
        rounded = torch.round(self.bound(z_e.float()))
        return ((rounded.long() + self.half_width_int) * self.basis).sum(1)

    def range_loss(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D, H, W) float32 -> the range loss, a scalar: the mean over every element of
        relu(|z + shift| - range_edge)^2 (see the class docstring)."""
        return torch.relu((z + self.shift).abs() - self.range_edge).square().mean()

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        check_z_e(z_e, self.code_dim)
        with torch.autocast(z_e.device.type, enabled=False):  # rounding of bf16 values would shift codes
            z = z_e.float()
            codes, rounded = self.quantize(z)
            indices = ((rounded.long() + self.half_width_int) * self.basis).sum(1)
            counts = torch.bincount(indices.view(-1), minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage
            range_loss = self.range_loss(z)
        return VQOutput(codes.to(z_e.dtype), indices, range_loss.new_zeros(()), range_loss,
                        self.range_weight * range_loss, perplexity_from_counts(counts))
