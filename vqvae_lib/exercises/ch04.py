"""Chapter 4 (The commitment loss as a Gaussian KL): check a reader's KL formulas.

``check_gaussian_commitment_kl(fn)``: ``fn(z_e, e, s)`` must return KL(N(z_e, s^2 I) || N(e, s^2 I)) per row.
(Chapter 7 has its own ``check_commitment_kl``, for a scalar distance; this one takes the vectors.)
``check_isotropic_kl(fn)``: ``fn(mu_q, s_q, mu_p, s_p)`` must return KL(N(mu_q, s_q^2 I) || N(mu_p, s_p^2 I))
per row, for different scales.
Both are compared with ``torch.distributions.kl_divergence``. A wrong answer raises
:class:`~vqvae_lib.exercises.Incorrect` with a hint, also under ``python -O``.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence

from . import correct, require

# The test cases: (D, s) for the equal-scale KL, (D, s_q, s_p) for the general one. They cover D = 1 (where
# a mean over coordinates equals the sum), s = 1 (where s and s^2 coincide), scales below and above 1, and
# a tiny posterior scale (where the log term dominates).
EQUAL_SCALE_CASES = ((1, 1.0), (4, 0.3), (16, 3.0), (3, 0.1))
ISOTROPIC_CASES = ((3, 1.0, 1.0), (3, 0.5, 0.5), (5, 0.3, 1.0), (2, 2.0, 0.7), (8, 0.01, 1.0))
ROWS = 6  # rows per case: enough to tell a per-row answer from a batch total


def reference_commitment_kl(z_e: torch.Tensor, e: torch.Tensor, s: float) -> torch.Tensor:
    """z_e, e: (N, D), s > 0 -> (N,): ||z_e - e||^2 / (2 s^2), the KL between equal-variance Gaussians."""
    return ((z_e - e) ** 2).sum(-1) / (2 * s ** 2)


def reference_isotropic_kl(mu_q: torch.Tensor, s_q: float, mu_p: torch.Tensor, s_p: float) -> torch.Tensor:
    """mu_q, mu_p: (N, D), scales s_q, s_p > 0 -> (N,) KL(N(mu_q, s_q^2 I) || N(mu_p, s_p^2 I)).

    = D/2 (r - 1 - log r) + ||mu_q - mu_p||^2 / (2 s_p^2), with r = s_q^2 / s_p^2.
    """
    D = mu_q.shape[-1]
    r = s_q ** 2 / s_p ** 2
    return D / 2 * (r - 1 - math.log(r)) + ((mu_q - mu_p) ** 2).sum(-1) / (2 * s_p ** 2)


def _torch_kl(mu_q, s_q, mu_p, s_p) -> torch.Tensor:
    q = Independent(Normal(mu_q, torch.full_like(mu_q, s_q)), 1)
    p = Independent(Normal(mu_p, torch.full_like(mu_p, s_p)), 1)
    return kl_divergence(q, p)


def rtol_for(dtype: torch.dtype) -> float:
    """The relative tolerance for a closed form computed in ``dtype``: half its significant digits.

    A right formula agrees with torch to within a few ulps; a wrong one is off by a factor or a term.
    sqrt(eps) sits far from both (1.5e-8 in float64, 3.5e-4 in float32), so it also accepts a right
    answer that was computed in single precision.
    """
    return math.sqrt(torch.finfo(dtype).eps)


def _as_rows(out, n: int, name: str) -> torch.Tensor:
    """The answer as n float64 KLs, after checking it is a tensor of one finite KL per row."""
    require(torch.is_tensor(out), f"{name} must return a tensor, got {type(out).__name__}")
    require(tuple(out.shape) == (n,), f"return one KL per row, shape ({n},), got {tuple(out.shape)}: "
                                      "sum over the D coordinates, not over the rows")
    require(out.is_floating_point() and bool(torch.isfinite(out).all()),
            f"{name} returned non-finite or non-float values: {out}")
    return out.detach().double()


def check_gaussian_commitment_kl(fn, verbose: bool = True) -> bool:
    """Check ``fn(z_e, e, s) -> (N,)``, z_e and e (N, D) float64. Raises Incorrect with a hint."""
    g = torch.Generator().manual_seed(5)
    for D, s in EQUAL_SCALE_CASES:
        z_e = torch.randn(ROWS, D, generator=g, dtype=torch.float64)
        e = torch.randn(ROWS, D, generator=g, dtype=torch.float64)
        out = fn(z_e, e, s)
        got = _as_rows(out, ROWS, "fn")
        want = _torch_kl(z_e, s, e, s)
        rtol = rtol_for(out.dtype)
        if torch.allclose(got, want, rtol=rtol):
            continue
        ratio = float((got / want).median())
        if math.isclose(ratio, 2.0, rel_tol=rtol):
            hint = "twice the KL: the squared distance is divided by 2 s^2, not s^2"
        elif math.isclose(ratio, 0.5, rel_tol=rtol):
            hint = "half the KL: divide the squared distance by 2 s^2, not 4 s^2"
        elif math.isclose(ratio, s, rel_tol=rtol) or math.isclose(ratio, 1 / s, rel_tol=rtol):
            hint = "the scale enters squared: divide by 2 s^2 (the variance), not 2 s"
        elif math.isclose(ratio, 1 / D, rel_tol=rtol):
            hint = "a mean over the D coordinates: the KL of independent coordinates is their sum"
        else:
            hint = "expected ||z_e - e||^2 / (2 s^2) per row"
        require(False, f"wrong for D={D}, s={s}: {hint}")
    return correct(verbose, "Correct! Your KL matches torch.distributions for every D and s tried.")


def check_isotropic_kl(fn, verbose: bool = True) -> bool:
    """Check ``fn(mu_q, s_q, mu_p, s_p) -> (N,)``, mu_q and mu_p (N, D) float64. Raises Incorrect with a hint."""
    g = torch.Generator().manual_seed(6)
    for D, s_q, s_p in ISOTROPIC_CASES:
        mu_q = torch.randn(ROWS, D, generator=g, dtype=torch.float64)
        mu_p = torch.randn(ROWS, D, generator=g, dtype=torch.float64)
        out = fn(mu_q, s_q, mu_p, s_p)
        got = _as_rows(out, ROWS, "fn")
        want = _torch_kl(mu_q, s_q, mu_p, s_p)
        rtol = rtol_for(out.dtype)
        if torch.allclose(got, want, rtol=rtol):
            continue
        if s_q == s_p:
            hint = "with equal scales the KL is ||mu_q - mu_p||^2 / (2 s^2) per row"
        elif torch.allclose(got, _torch_kl(mu_p, s_p, mu_q, s_q), rtol=rtol):
            hint = "this is KL(p || q): the expectation is under q = N(mu_q, s_q^2 I)"
        else:
            hint = ("the scales do not cancel: add D/2 (r - 1 - log r) with r = s_q^2 / s_p^2, and divide "
                    "the squared distance by 2 s_p^2")
        require(False, f"wrong for D={D}, s_q={s_q}, s_p={s_p}: {hint}")
    return correct(verbose, "Correct! Your KL matches torch.distributions for equal and unequal scales.")
