"""Checks for chapter 2 (vector quantisation): the nearest code and the perplexity.

``check_nearest_code(answer)``: ``answer(flat (N, D), codebook (K, D)) -> (N,) long``, the nearest code per row.
``check_perplexity(answer)``: ``answer(counts (K,)) -> float``, exp(entropy) of the usage distribution.

Each check calls the reader's function on fixed inputs, compares it with the library, prints
"Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import math

import torch

from ..quantizers.vq import nearest_code, perplexity_from_counts
from . import correct, require

NUM_ROWS, CODE_DIM, NUM_CODES = 500, 8, 32  # the random problem check_nearest_code poses
SEED = 0
# A reader's float32 (or float64) perplexity agrees with the reference to a few float32 roundings per
# code; 2**10 roundings is still far closer than any wrong answer the hints name (off by percents).
REL_TOL = 2**10 * torch.finfo(torch.float32).eps
PERPLEXITY_CASES = ([5, 5, 5, 5], [7, 0, 0, 0], [1, 2, 3, 0, 10, 0, 4])  # uniform, one code, some unused


def check_nearest_code(answer, verbose: bool = True) -> bool:
    """answer(flat: (N, D), codebook: (K, D)) -> (N,) long, the index of the nearest code for each row."""
    g = torch.Generator().manual_seed(SEED)
    flat, codebook = torch.randn(NUM_ROWS, CODE_DIM, generator=g), torch.randn(NUM_CODES, CODE_DIM, generator=g)
    out = answer(flat.clone(), codebook.clone())
    require(torch.is_tensor(out), f"return a tensor of indices, got {type(out).__name__}")
    require(tuple(out.shape) == (NUM_ROWS,),
            f"expected one index per row, shape (N,) = ({NUM_ROWS},), got {tuple(out.shape)}: "
            "take the argmin over the codes (dim=1 of the (N, K) distance matrix)")
    require(out.dtype == torch.long, f"indices should be int64 (torch.long), got {out.dtype}")
    want = nearest_code(flat, codebook)
    farthest = torch.cdist(flat, codebook).argmax(1)
    require(not torch.equal(out, farthest), "you picked the farthest code: use argmin of the distance, not argmax "
                                            "(or argmax of 2 a.b - ||b||^2)")
    dot_only = (flat @ codebook.t()).argmax(1)
    require(not (torch.equal(out, dot_only) and not torch.equal(want, dot_only)),
            "the largest dot product is not the nearest code when codes have different norms: "
            "keep the ||b||^2 term of ||a||^2 + ||b||^2 - 2 a.b")
    require(torch.equal(out, want),
            f"{int((out != want).sum())} of {NUM_ROWS} rows pick a code that is not the nearest; "
            "distance^2 = ||a||^2 + ||b||^2 - 2 a.b, with a a row of flat and b a code")
    return correct(verbose)


def check_perplexity(answer, verbose: bool = True) -> bool:
    """answer(counts: (K,)) -> exp(entropy) of the usage distribution counts / counts.sum(), a float or 0-d tensor."""
    for case in PERPLEXITY_CASES:
        counts = torch.tensor(case)
        got = answer(counts.clone())
        require(got is not None, "your function returned None: return the perplexity as a number")
        got = float(got)
        want = float(perplexity_from_counts(counts))
        require(not math.isnan(got), f"got NaN for counts {case}: unused codes have p = 0, "
                                     "and 0 * log 0 counts as 0 (clamp p before the log, or drop zeros)")
        entropy = math.log(want)
        returned_entropy = math.isclose(got, entropy, rel_tol=REL_TOL) and not math.isclose(
            want, 1.0, rel_tol=REL_TOL)
        require(not returned_entropy, f"for counts {case} you returned the entropy {got:.4f}; "
                                      "perplexity is exp(entropy)")
        require(math.isclose(got, want, rel_tol=REL_TOL),
                f"for counts {case} expected {want:.4f}, got {got:.4f}; "
                "perplexity = exp(-sum_k p_k log p_k) with p = counts / counts.sum()")
    return correct(verbose)
