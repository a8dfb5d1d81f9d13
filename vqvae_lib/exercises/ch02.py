"""Checks for chapter 2 (vector quantisation).

Each check calls the reader's function on fixed inputs, compares it with the library, prints
"Correct!" and returns True, or raises AssertionError with a hint.
"""
from __future__ import annotations

import math

import torch

from ..quantize import nearest_code, perplexity_from_counts


def check_nearest_code(fn) -> bool:
    """fn(flat: (N, D), codebook: (K, D)) -> (N,) long, the index of the nearest code for each row."""
    g = torch.Generator().manual_seed(0)
    flat, codebook = torch.randn(500, 8, generator=g), torch.randn(32, 8, generator=g)
    out = fn(flat.clone(), codebook.clone())
    assert torch.is_tensor(out), f"return a tensor of indices, got {type(out).__name__}"
    assert out.shape == (500,), (f"expected one index per row, shape (N,) = (500,), got {tuple(out.shape)}: "
                                 "take the argmin over the codes (dim=1 of the (N, K) distance matrix)")
    assert out.dtype == torch.long, f"indices should be int64 (torch.long), got {out.dtype}"
    want = nearest_code(flat, codebook)
    farthest = torch.cdist(flat, codebook).argmax(1)
    if torch.equal(out, farthest):
        raise AssertionError("you picked the farthest code: use argmin of the distance, not argmax "
                             "(or argmax of 2 a.b - ||b||^2)")
    dot_only = (flat @ codebook.t()).argmax(1)
    if torch.equal(out, dot_only) and not torch.equal(want, dot_only):
        raise AssertionError("the largest dot product is not the nearest code when codes have different norms: "
                             "keep the ||b||^2 term of ||a||^2 + ||b||^2 - 2 a.b")
    assert torch.equal(out, want), (f"{int((out != want).sum())} of 500 rows pick a code that is not the nearest; "
                                    "distance^2 = ||a||^2 + ||b||^2 - 2 a.b, with a a row of flat and b a code")
    print("Correct!")
    return True


def check_perplexity(fn) -> bool:
    """fn(counts: (K,)) -> exp(entropy) of the usage distribution counts / counts.sum(), as a float or 0-d tensor."""
    cases = [torch.tensor([5, 5, 5, 5]), torch.tensor([7, 0, 0, 0]), torch.tensor([1, 2, 3, 0, 10, 0, 4])]
    for counts in cases:
        got = fn(counts.clone())
        got = float(got)
        want = float(perplexity_from_counts(counts))
        assert not math.isnan(got), (f"got NaN for counts {counts.tolist()}: unused codes have p = 0, "
                                     "and 0 * log 0 counts as 0 (clamp p before the log, or drop zeros)")
        entropy = math.log(want)
        if abs(got - entropy) < 1e-4 and abs(want - 1) > 1e-4:
            raise AssertionError(f"for counts {counts.tolist()} you returned the entropy {got:.4f}; "
                                 "perplexity is exp(entropy)")
        assert abs(got - want) < 1e-4, (f"for counts {counts.tolist()} expected {want:.4f}, got {got:.4f}; "
                                        "perplexity = exp(-sum_k p_k log p_k) with p = counts / counts.sum()")
    print("Correct!")
    return True
