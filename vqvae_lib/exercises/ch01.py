"""Checks for chapter 1 (the VAE and its ELBO).

``check_gaussian_kl(answer)``: ``answer(mu, logvar) -> (B,)``, the closed-form KL to N(0, I).
``check_reparameterize(answer)``: ``answer(mu, logvar) -> z``, a differentiable sample of N(mu, diag(exp(logvar))).

Each check calls the reader's function on fixed inputs, compares it with the library, prints "Correct!" and
returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import torch

from ..models.vae import gaussian_kl
from ..seeding import seeded
from . import correct, require

SEED = 0
BATCH, LATENT = 6, 5                 # the (B, L) problem check_gaussian_kl poses
KL_RTOL, KL_ATOL = 1e-4, 1e-5        # float32 closed forms agree far closer; every wrong answer is further off
NUM_SAMPLES = 20_000                 # draws per coordinate in check_reparameterize
# With 20,000 draws the sample mean's standard error is sigma / 141 (at most 0.012 here) and the sample
# standard deviation's relative error 1 / 200: the tolerances below are over four standard errors.
MEAN_ATOL, STD_RTOL = 0.05, 0.05
GRAD_ATOL = 1e-4


def _inputs(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, LATENT, generator=g), torch.randn(BATCH, LATENT, generator=g)  # mu, logvar


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.float(), b.float(), rtol=KL_RTOL, atol=KL_ATOL))


def check_gaussian_kl(answer, verbose: bool = True) -> bool:
    """answer(mu, logvar) -> KL(N(mu, diag(exp(logvar))) || N(0, I)), mu, logvar: (B, L) -> (B,)."""
    mu, logvar = _inputs()
    out = answer(mu.clone(), logvar.clone())
    require(torch.is_tensor(out), f"return a tensor, got {type(out).__name__}")
    require(tuple(out.shape) == (BATCH,),
            f"expected shape (B,) = ({BATCH},) for inputs of shape ({BATCH}, {LATENT}), got {tuple(out.shape)}: "
            "sum the per-dimension KLs over the last dimension (and nothing else)")
    want = gaussian_kl(mu, logvar)
    require(not _close(out, 2 * want), "your values are twice the KL: the closed form has a factor 1/2 in front")
    sigma_not_var = 0.5 * (mu.pow(2) + logvar.pow(2) - 1 - torch.log(logvar.pow(2))).sum(-1)
    require(not _close(out, sigma_not_var),
            "logvar is log(sigma^2): the variance is exp(logvar), not logvar squared")
    zero = answer(torch.zeros(2, 3), torch.zeros(2, 3))
    require(torch.is_tensor(zero) and zero.shape == (2,) and bool(torch.allclose(zero.float(), torch.zeros(2),
                                                                                  atol=KL_ATOL)),
            "KL(N(0, I) || N(0, I)) must be 0 (mu = 0, logvar = 0); check the '- 1' term")
    require(_close(out, want),
            "values differ from KL = 1/2 * sum(mu^2 + sigma^2 - 1 - log sigma^2) with sigma^2 = exp(logvar); "
            f"for the first row expected {float(want[0]):.4f}, got {float(out[0]):.4f}")
    return correct(verbose)


def check_reparameterize(answer, verbose: bool = True) -> bool:
    """answer(mu, logvar) -> a sample z ~ N(mu, diag(exp(logvar))) of the same shape, differentiable in both.

    The answer draws its noise from torch's global RNG; the check seeds it inside
    :func:`~vqvae_lib.seeding.seeded`, which restores the reader's RNG state afterwards.
    """
    mu = torch.tensor([[0.5, -2.0, 3.0]]).repeat(NUM_SAMPLES, 1).requires_grad_(True)
    logvar = torch.tensor([[0.0, 1.0, -2.0]]).repeat(NUM_SAMPLES, 1).requires_grad_(True)
    with seeded(SEED):
        z = answer(mu, logvar)
    require(torch.is_tensor(z) and z.shape == mu.shape,
            f"return one sample per row, shape {tuple(mu.shape)}, got "
            f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    require(z.requires_grad, "the sample carries no gradient: build it as mu + sigma * eps with eps ~ N(0, I) "
                             "drawn separately (torch.randn_like), not with a sampler that detaches")
    mean, std = z.detach().mean(0), z.detach().std(0)
    want_std = torch.exp(0.5 * logvar[0].detach())
    require(torch.allclose(mean, mu[0].detach(), atol=MEAN_ATOL),
            f"sample means {[round(m, 3) for m in mean.tolist()]} should be near mu = {mu[0].tolist()}")
    require(not torch.allclose(std, torch.exp(logvar[0].detach()), rtol=STD_RTOL),
            "the spread is exp(logvar) = sigma^2: scale eps by sigma = exp(logvar / 2)")
    require(torch.allclose(std, want_std, rtol=STD_RTOL),
            f"sample standard deviations {[round(s, 3) for s in std.tolist()]} should be near "
            f"sigma = exp(logvar / 2) = {[round(s, 3) for s in want_std.tolist()]}")
    g_mu, g_logvar = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True)
    require(g_mu is not None and g_logvar is not None, "the gradient must reach both mu and logvar")
    require(torch.allclose(g_mu, torch.ones_like(g_mu)), "dz/dmu should be 1: add mu, do not scale it")
    # dz/dlogvar = sigma * eps / 2 = (z - mu) / 2
    require(torch.allclose(g_logvar, (z.detach() - mu.detach()) / 2, atol=GRAD_ATOL),
            "dz/dlogvar should be (z - mu) / 2, which holds for z = mu + exp(logvar / 2) * eps")
    return correct(verbose)
