"""Chapter 9 (Quantizers after VQ): check a reader's FSQ index, FSQ code count and rotation-trick rotation.

``check_fsq_index(answer)``: ``answer(digits, levels) -> (N,)`` long, the index of each row of ``digits: (N, C)``
(digit c in [0, levels[c])) as FSQ numbers its codes: mixed radix, channel 0 the least significant digit.
``check_fsq_num_codes(answer)``: ``answer(levels) -> int``, how many codes FSQ with these levels has.
``check_rotation(answer)``: ``answer(a, b) -> (D, D)`` the rotation the rotation trick applies: it turns the
direction of ``a`` into that of ``b`` and leaves every direction orthogonal to both unchanged.

Each check prints "Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import itertools
import math

import torch

from . import correct, require

# small level tuples with odd, even, repeated and unequal levels; every code of each is tried
INDEX_LEVELS = ([3, 4, 5], [8, 5, 5, 5], [2, 2, 2], [7], [4, 4, 4])
COUNT_LEVELS = ([4, 4, 4], [8, 5, 5, 5], [8, 8, 8, 6, 5], [7, 5, 5, 5, 5], [2] * 10, [3])
ROTATION_DIMS = (2, 3, 8)
ATOL = 1e-9  # float64 rotations are exact to ~1e-15; a wrong matrix is off by O(1)


def all_digits(levels) -> torch.Tensor:
    """Every digit combination of ``levels``: (prod(levels), C) long."""
    return torch.tensor(list(itertools.product(*(range(n) for n in levels))), dtype=torch.long)


def reference_fsq_index(digits: torch.Tensor, levels) -> torch.Tensor:
    """sum_c digits[:, c] * prod(levels[:c]): channel 0 is the least significant digit."""
    basis = torch.tensor([math.prod(levels[:c]) for c in range(len(levels))], dtype=torch.long)
    return (digits * basis).sum(-1)


def check_fsq_index(answer, verbose: bool = True) -> bool:
    """Check ``answer(digits, levels)`` on every code of several level tuples."""
    for levels in INDEX_LEVELS:
        digits = all_digits(levels)
        got = answer(digits.clone(), list(levels))
        require(got is not None, "your function returned None: return one index per row of digits")
        got = torch.as_tensor(got)
        require(got.shape == (len(digits),), f"levels {levels}: expected {len(digits)} indices, one per row of "
                                             f"digits, got shape {tuple(got.shape)}")
        want = reference_fsq_index(digits, levels)
        if torch.equal(got.long(), want):
            continue
        hint = f"levels {levels}: the digits {digits[0].tolist()} ... get wrong indices"
        reversed_basis = reference_fsq_index(digits.flip(-1), list(reversed(levels)))
        if torch.equal(got.long(), reversed_basis):
            hint += ": you made channel 0 the most significant digit; FSQ makes it the least significant"
        elif torch.equal(got.long(), digits.sum(-1)):
            hint += ": summing the digits maps many codes to one index; weight digit c by prod(levels[:c])"
        elif torch.equal(got.long(), (digits * torch.tensor(levels)).sum(-1)):
            hint += ": weight digit c by the product of the levels BEFORE it, not by its own level"
        elif len(torch.unique(got)) < len(digits):
            hint += ": two codes share an index; each of the prod(levels) codes needs its own"
        else:
            hint += ": index = sum over c of digits[:, c] * prod(levels[:c])"
        require(False, hint)
    return correct(verbose, "Correct! Each code gets its own index, as FSQ numbers them.")


def check_fsq_num_codes(answer, verbose: bool = True) -> bool:
    """Check ``answer(levels) -> int`` for several level tuples, the paper's among them."""
    for levels in COUNT_LEVELS:
        got = answer(list(levels))
        require(got is not None, "your function returned None: return the number of codes")
        want = math.prod(levels)
        if got == want:
            continue
        hint = f"levels {levels}: expected {want} codes, got {got}"
        if got == sum(levels):
            hint += ": the channels' values combine, so the counts multiply, they do not add"
        elif got == 2 ** len(levels):
            hint += ": that counts two values per channel; channel c takes levels[c] values"
        else:
            hint += ": every combination of one value per channel is a code"
        require(False, hint)
    return correct(verbose, "Correct! FSQ's codebook is the product of the levels: no code to learn, none unused.")


def reference_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, D): with u = a/|a|, q = b/|b|, r = (u + q)/|u + q|: R = I - 2 r r^T + 2 q u^T (R u = q)."""
    u, q = a / a.norm(), b / b.norm()
    r = (u + q) / (u + q).norm()
    eye = torch.eye(len(a), dtype=a.dtype)
    return eye - 2 * torch.outer(r, r) + 2 * torch.outer(q, u)


def rotation_cases(dims=ROTATION_DIMS):
    g = torch.Generator().manual_seed(0)
    for d in dims:
        yield torch.randn(d, generator=g, dtype=torch.float64), 3 * torch.randn(d, generator=g, dtype=torch.float64)


def check_rotation(answer, verbose: bool = True) -> bool:
    """Check ``answer(a, b) -> (D, D)`` on random pairs in 2, 3 and 8 dimensions (float64)."""
    for a, b in rotation_cases():
        d = len(a)
        got = answer(a.clone(), b.clone())
        require(got is not None, "your function returned None: return the (D, D) rotation matrix")
        R = torch.as_tensor(got, dtype=torch.float64)
        require(R.shape == (d, d), f"D = {d}: expected a ({d}, {d}) matrix, got shape {tuple(R.shape)}")
        u, q = a / a.norm(), b / b.norm()
        where = f"D = {d}"
        require(torch.allclose(R.T @ R, torch.eye(d, dtype=R.dtype), atol=ATOL),
                f"{where}: R^T R is not the identity, so R changes lengths; a rotation must keep them "
                f"(the rescaling |b|/|a| is applied separately)")
        require(torch.allclose(R @ u, q, atol=ATOL),
                f"{where}: R does not turn a's direction a/|a| into b's direction b/|b|")
        require(float(torch.linalg.det(R)) > 0,
                f"{where}: det R = -1: that is a reflection (it also maps a/|a| to b/|b|, but mirrors space); "
                f"reflect twice, through r = (u + q)/|u + q| and then ...: R = I - 2 r r^T + 2 q u^T")
        require(torch.allclose(R, reference_rotation(a, b), atol=ATOL),
                f"{where}: R is a rotation taking a/|a| to b/|b|, but it also turns directions orthogonal to "
                f"both; the rotation trick turns only the plane of a and b")
    return correct(verbose, "Correct! R rotates a's direction onto b's within their plane and fixes the rest.")
