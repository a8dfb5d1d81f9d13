"""Chapter 6 (A discrete prior and sampling): check a reader's causal mask and bits per code.

``check_mask(fn)``: ``fn(kernel_size, mask_type) -> (k, k)`` mask, against :class:`MaskedConv2d`'s.
``check_bits_per_code(fn)``: ``fn(logits (B, K, H, W), codes (B, H, W)) -> float``, the mean negative
log2-likelihood per code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..pixelcnn import MaskedConv2d


def reference_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """(k, k) float: 1 where position (k//2, k//2) may look. Type A hides the centre, type B keeps it."""
    return MaskedConv2d(mask_type, 1, 1, kernel_size).mask.clone()


def check_mask(fn, verbose: bool = True) -> bool:
    """Check ``fn(kernel_size, mask_type) -> (k, k) tensor`` for k = 3, 5, 7 and types "A", "B"."""
    for k in (3, 5, 7):
        c = k // 2
        for t in ("A", "B"):
            got = fn(k, t)
            if got is None:
                raise AssertionError("your function returned None: return the (k, k) mask")
            got = torch.as_tensor(got).float()
            want = reference_mask(k, t)
            if got.shape != want.shape:
                raise AssertionError(f"for kernel_size={k} the mask must have shape ({k}, {k}), "
                                     f"got {tuple(got.shape)}")
            if torch.equal(got, want):
                continue
            where = f"(kernel_size={k}, type {t})"
            if not torch.isin(got, torch.tensor([0.0, 1.0])).all():
                raise AssertionError(f"{where}: a mask holds only 0 (hidden) and 1 (visible)")
            if got[c + 1:].any():
                raise AssertionError(f"{where}: the rows below the centre are the future (later in "
                                     "raster order): set them to 0")
            if not got[:c].all():
                raise AssertionError(f"{where}: every position in the rows above the centre comes "
                                     "earlier in raster order: keep them at 1")
            if got[c, c] != want[c, c]:
                raise AssertionError(f"{where}: type A must hide the centre (a code may not see itself), "
                                     "type B keeps it (after the first layer the centre holds only the past)")
            raise AssertionError(f"{where}: in the centre row, positions left of the centre are visible "
                                 "and positions right of it are hidden")
    if verbose:
        print("Correct! Both mask types match for kernel sizes 3, 5 and 7.")
    return True


def reference_bits_per_code(logits: torch.Tensor, codes: torch.Tensor) -> float:
    """logits: (B, K, H, W), codes: (B, H, W) long -> mean -log2 p(code) over all B*H*W codes."""
    return float(F.cross_entropy(logits.float(), codes) / math.log(2))


def check_bits_per_code(fn, verbose: bool = True) -> bool:
    """Check ``fn(logits (B, K, H, W), codes (B, H, W)) -> bits`` on random and uniform logits."""
    g = torch.Generator().manual_seed(0)
    B, K, H, W = 3, 16, 4, 5
    cases = [(torch.randn(B, K, H, W, generator=g) * 3, "random logits"),
             (torch.zeros(B, K, H, W), "uniform logits (the answer is log2 K = 4 bits)")]
    codes = torch.randint(K, (B, H, W), generator=g)
    for logits, what in cases:
        got = fn(logits.clone(), codes.clone())
        if got is None:
            raise AssertionError("your function returned None: return the bits per code as a number")
        got = float(got)
        want = reference_bits_per_code(logits, codes)
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5):
            continue
        hint = f"{what}: expected {want:.4f} bits per code, got {got:.4f}"
        if math.isclose(got, want * math.log(2), rel_tol=1e-4):
            hint += ": that is in nats; divide by log 2 (or use log2)"
        elif math.isclose(got, want * B * H * W, rel_tol=1e-4) or math.isclose(got, want * H * W, rel_tol=1e-4):
            hint += ": average over all codes, do not sum"
        elif math.isclose(got, -want, rel_tol=1e-4):
            hint += ": bits are the NEGATIVE log-likelihood"
        else:
            hint += (": take log_softmax over the K codes (dim 1), pick each true code's entry, "
                     "negate, average, convert nats to bits")
        raise AssertionError(hint)
    if verbose:
        print("Correct! Your bits per code match, and uniform logits give log2 K.")
    return True
