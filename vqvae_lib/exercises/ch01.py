"""Checks for chapter 1 (the VAE and its ELBO).

Each check calls the reader's function on fixed inputs, compares it with the library, prints
"Correct!" and returns True, or raises AssertionError with a hint.
"""
from __future__ import annotations

import torch

from ..vae import gaussian_kl


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)  # mu, logvar: (B, L)


def check_gaussian_kl(fn) -> bool:
    """fn(mu, logvar) -> KL(N(mu, diag(exp(logvar))) || N(0, I)), mu, logvar: (B, L) -> (B,)."""
    mu, logvar = _inputs()
    out = fn(mu.clone(), logvar.clone())
    assert torch.is_tensor(out), f"return a tensor, got {type(out).__name__}"
    assert out.shape == (6,), (f"expected shape (B,) = (6,) for inputs of shape (6, 5), got {tuple(out.shape)}: "
                               "sum the per-dimension KLs over the last dimension (and nothing else)")
    want = gaussian_kl(mu, logvar)
    if torch.allclose(out.float(), 2 * want, rtol=1e-4, atol=1e-5):
        raise AssertionError("your values are twice the KL: the closed form has a factor 1/2 in front")
    sigma_not_var = 0.5 * (mu.pow(2) + logvar.pow(2) - 1 - torch.log(logvar.pow(2))).sum(-1)
    if torch.allclose(out.float(), sigma_not_var, rtol=1e-4, atol=1e-5):
        raise AssertionError("logvar is log(sigma^2): the variance is exp(logvar), not logvar squared")
    zero = fn(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(zero, torch.zeros(2), atol=1e-6), (
        "KL(N(0, I) || N(0, I)) must be 0 (mu = 0, logvar = 0); check the '- 1' term")
    assert torch.allclose(out.float(), want, rtol=1e-4, atol=1e-5), (
        "values differ from KL = 1/2 * sum(mu^2 + sigma^2 - 1 - log sigma^2) with sigma^2 = exp(logvar); "
        f"for the first row expected {float(want[0]):.4f}, got {float(out[0]):.4f}")
    print("Correct!")
    return True


def check_reparameterize(fn) -> bool:
    """fn(mu, logvar) -> a sample z ~ N(mu, diag(exp(logvar))) of the same shape, differentiable in both."""
    torch.manual_seed(0)
    mu = torch.tensor([[0.5, -2.0, 3.0]]).repeat(20000, 1).requires_grad_(True)
    logvar = torch.tensor([[0.0, 1.0, -2.0]]).repeat(20000, 1).requires_grad_(True)
    z = fn(mu, logvar)
    assert torch.is_tensor(z) and z.shape == mu.shape, (
        f"return one sample per row, shape {tuple(mu.shape)}, got "
        f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    assert z.requires_grad, ("the sample carries no gradient: build it as mu + sigma * eps with eps ~ N(0, I) "
                             "drawn separately (torch.randn_like), not with a sampler that detaches")
    mean, std = z.detach().mean(0), z.detach().std(0)
    want_std = torch.exp(0.5 * logvar[0].detach())
    assert torch.allclose(mean, mu[0].detach(), atol=0.05), (
        f"sample means {mean.tolist()} should be near mu = {mu[0].tolist()}")
    if torch.allclose(std, torch.exp(logvar[0].detach()), rtol=0.05):
        raise AssertionError("the spread is exp(logvar) = sigma^2: scale eps by sigma = exp(logvar / 2)")
    assert torch.allclose(std, want_std, rtol=0.05), (
        f"sample standard deviations {[round(s, 3) for s in std.tolist()]} should be near "
        f"sigma = exp(logvar / 2) = {[round(s, 3) for s in want_std.tolist()]}")
    g_mu, g_logvar = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True)
    assert g_mu is not None and g_logvar is not None, "the gradient must reach both mu and logvar"
    assert torch.allclose(g_mu, torch.ones_like(g_mu)), "dz/dmu should be 1: add mu, do not scale it"
    # dz/dlogvar = sigma * eps / 2 = (z - mu) / 2
    assert torch.allclose(g_logvar, (z.detach() - mu.detach()) / 2, atol=1e-4), (
        "dz/dlogvar should be (z - mu) / 2, which holds for z = mu + exp(logvar / 2) * eps")
    print("Correct!")
    return True
