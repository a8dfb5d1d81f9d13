"""Chapter 6 (A discrete prior and sampling): check a reader's causal mask and bits per code.

``check_mask(answer)``: ``answer(kernel_size, mask_type) -> (k, k)`` mask, against :class:`MaskedConv2d`'s.
``check_bits_per_code(answer)``: ``answer(logits (B, K, H, W), codes (B, H, W)) -> float``, the mean negative
log2-likelihood per code.

Each check prints "Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..priors.pixelcnn import MaskedConv2d
from . import correct, require

KERNEL_SIZES = (3, 5, 7)
MASK_TYPES = ("A", "B")
SEED = 0
BATCH, NUM_CODES, HEIGHT, WIDTH = 3, 16, 4, 5  # the random problem check_bits_per_code poses
LOGIT_SCALE = 3.0  # random logits this large give confident, unequal probabilities
# float32 cross-entropies agree to a few roundings per code; 2**10 roundings is still far closer than
# any wrong answer the hints name (nats are 1/ln 2 = 1.44 times bits, a sum is B*H*W times the mean).
REL_TOL = 2**10 * torch.finfo(torch.float32).eps


def reference_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """(k, k) float: 1 where position (k//2, k//2) may look. Type A hides the centre, type B keeps it."""
    return MaskedConv2d(mask_type, 1, 1, kernel_size).mask.clone()


def check_mask(answer, verbose: bool = True) -> bool:
    """Check ``answer(kernel_size, mask_type) -> (k, k) tensor`` for every kernel size and mask type."""
    for k in KERNEL_SIZES:
        c = k // 2
        for t in MASK_TYPES:
            got = answer(k, t)
            require(got is not None, "your function returned None: return the (k, k) mask")
            got = torch.as_tensor(got).float()
            want = reference_mask(k, t)
            require(got.shape == want.shape, f"for kernel_size={k} the mask must have shape ({k}, {k}), "
                                             f"got {tuple(got.shape)}")
            where = f"(kernel_size={k}, type {t})"
            require(bool(torch.isin(got, torch.tensor([0.0, 1.0])).all()),
                    f"{where}: a mask holds only 0 (hidden) and 1 (visible)")
            require(not got[c + 1:].any(), f"{where}: the rows below the centre are the future (later in "
                                           "raster order): set them to 0")
            require(bool(got[:c].all()), f"{where}: every position in the rows above the centre comes "
                                         "earlier in raster order: keep them at 1")
            require(got[c, c] == want[c, c], f"{where}: type A must hide the centre (a code may not see itself), "
                                             "type B keeps it (after the first layer the centre holds only the past)")
            require(torch.equal(got, want), f"{where}: in the centre row, positions left of the centre are visible "
                                            "and positions right of it are hidden")
    sizes = ", ".join(map(str, KERNEL_SIZES))
    return correct(verbose, f"Correct! Both mask types match for kernel sizes {sizes}.")


def reference_bits_per_code(logits: torch.Tensor, codes: torch.Tensor) -> float:
    """logits: (B, K, H, W), codes: (B, H, W) long -> mean -log2 p(code) over all B*H*W codes."""
    return float(F.cross_entropy(logits.float(), codes) / math.log(2))


def check_bits_per_code(answer, verbose: bool = True) -> bool:
    """Check ``answer(logits (B, K, H, W), codes (B, H, W)) -> bits`` on random and uniform logits."""
    g = torch.Generator().manual_seed(SEED)
    shape = (BATCH, NUM_CODES, HEIGHT, WIDTH)
    cases = [(torch.randn(shape, generator=g) * LOGIT_SCALE, "random logits"),
             (torch.zeros(shape), f"uniform logits (the answer is log2 K = {math.log2(NUM_CODES):g} bits)")]
    codes = torch.randint(NUM_CODES, (BATCH, HEIGHT, WIDTH), generator=g)
    for logits, what in cases:
        got = answer(logits.clone(), codes.clone())
        require(got is not None, "your function returned None: return the bits per code as a number")
        got = float(got)
        want = reference_bits_per_code(logits, codes)

        def near(x, got=got):
            return math.isclose(got, x, rel_tol=REL_TOL)

        hint = f"{what}: expected {want:.4f} bits per code, got {got:.4f}"
        if near(want * math.log(2)):
            hint += ": that is in nats; divide by log 2 (or use log2)"
        elif near(want * BATCH * HEIGHT * WIDTH) or near(want * HEIGHT * WIDTH):
            hint += ": average over all codes, do not sum"
        elif near(-want):
            hint += ": bits are the NEGATIVE log-likelihood"
        else:
            hint += (": take log_softmax over the K codes (dim 1), pick each true code's entry, "
                     "negate, average, convert nats to bits")
        require(near(want), hint)
    return correct(verbose, "Correct! Your bits per code match, and uniform logits give log2 K.")
