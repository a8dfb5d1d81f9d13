"""Chapter 11 (Codebooks that stay in use): check a reader's cosine lookup and BSQ's error bound.

``check_cosine_nearest(answer)``: ``answer(z, codes) -> (N,)`` long, for ``z: (N, d)`` and ``codes: (K, d)`` the
index of the code of highest cosine similarity with each row of z (what ``VectorQuantizer(l2_normalize=True)``
looks up), on codes of unequal lengths, where the nearest code by distance is often another.
``check_bsq_max_error(answer)``: ``answer(L) -> float``, the largest squared distance |u - c|^2 between a unit
vector u of L coordinates and its BSQ code c = sign(u) / sqrt(L).

Each check prints "Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import correct, require

BITS = (1, 2, 3, 6, 16, 64)
ATOL = 1e-9  # the bound is a closed form; float64 arithmetic is exact to ~1e-15, a wrong formula off by O(1 / L)


def cosine_cases(seed: int = 0):
    """(z (N, d), codes (K, d)) pairs whose codes have lengths from 0.1 to 10."""
    g = torch.Generator().manual_seed(seed)
    for n, k, d in ((50, 8, 2), (200, 64, 8), (100, 512, 16)):
        lengths = torch.logspace(-1, 1, k, dtype=torch.float64)[torch.randperm(k, generator=g)]
        codes = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1) * lengths[:, None]
        yield torch.randn(n, d, generator=g, dtype=torch.float64) * 3, codes


def reference_cosine_nearest(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return (F.normalize(z, dim=1) @ F.normalize(codes, dim=1).t()).argmax(1)


def check_cosine_nearest(answer, verbose: bool = True) -> bool:
    """Check ``answer(z, codes)`` on three sizes, codes of lengths 0.1-10."""
    for z, codes in cosine_cases():
        got = answer(z.clone(), codes.clone())
        require(got is not None, "your function returned None: return one code index per row of z")
        got = torch.as_tensor(got)
        require(got.shape == (len(z),), f"expected {len(z)} indices, one per row of z, got shape {tuple(got.shape)}")
        want = reference_cosine_nearest(z, codes)
        if torch.equal(got.long(), want):
            continue
        by_distance = torch.cdist(z, codes).argmin(1)
        require(not torch.equal(got.long(), by_distance),
                "these are the nearest codes by distance; the lookup compares directions only: scale z and every "
                "code to unit length first (or divide each dot product by both lengths)")
        require(False, f"{int((got.long() != want).sum())} of {len(z)} rows get another code than the one of "
                       "highest cosine similarity")
    return correct(verbose)


def reference_bsq_max_error(num_bits: int) -> float:
    """2 - 2 / sqrt(L): |u - c|^2 = 2 - 2 u.c and u.c = sum_l |u_l| / sqrt(L) >= |u| / sqrt(L) = 1 / sqrt(L),
    with equality when u lies on one axis."""
    return 2 - 2 / math.sqrt(num_bits)


def check_bsq_max_error(answer, verbose: bool = True) -> bool:
    """Check ``answer(L)`` for several L against the bound and against a point that reaches it."""
    for num_bits in BITS:
        got = answer(num_bits)
        require(got is not None, "your function returned None: return the largest |u - c|^2 as a number")
        got = float(got)
        axis = torch.zeros(num_bits, dtype=torch.float64)
        axis[0] = 1.0
        reached = float(((axis - torch.where(axis > 0, 1.0, -1.0) / math.sqrt(num_bits)) ** 2).sum())
        require(got >= reached - ATOL, f"L = {num_bits}: a unit vector on one axis is {reached:.4f} from its code, "
                                       f"more than your {got:.4f}")
        require(abs(got - reference_bsq_max_error(num_bits)) <= ATOL,
                f"L = {num_bits}: {got:.6f} is not the largest distance; write |u - c|^2 with |u| = |c| = 1 and "
                "bound u.c from below")
    return correct(verbose)
