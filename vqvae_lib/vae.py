"""A small convolutional Gaussian VAE (Kingma and Welling 2014) for the first chapter.

q(z|x) = N(mu(x), diag(exp(logvar(x)))), p(z) = N(0, I), p(x|z) Bernoulli per pixel (logits from the decoder).
ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)); the loss is its negative, terms returned separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PretrainedMixin, register_to_config


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, summed over the last dim.

    mu, logvar: (B, L) -> (B,).  KL = 1/2 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a sample whose gradient reaches mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


@dataclass
class VAEOutput:
    """x_recon: (B, C, H, W) Bernoulli means; recon_loss: -E_q log p(x|z) per image (nats);
    kl: KL(q||p) per image (nats); loss: recon_loss + beta * kl (the negative ELBO when beta = 1)."""

    x_recon: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class VAE(nn.Module, PretrainedMixin):
    """x: (B, C, S, S) in [0, 1], S divisible by 4 -> z: (B, latent_dim) -> x_recon: (B, C, S, S)."""

    @register_to_config
    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 16,
                 hidden_channels: int = 32, beta: float = 1.0):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.in_channels, self.image_size, self.latent_dim, self.beta = in_channels, image_size, latent_dim, beta
        h, s = hidden_channels, image_size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, h, 4, 2, 1), nn.ReLU(), nn.Conv2d(h, 2 * h, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.to_stats = nn.Linear(2 * h * s * s, 2 * latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * h * s * s), nn.ReLU(), nn.Unflatten(1, (2 * h, s, s)),
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(h, in_channels, 4, 2, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, S, S) -> mu, logvar: (B, latent_dim)."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.to_stats(self.encoder(x)).chunk(2, dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) -> Bernoulli logits (B, C, S, S)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        logits = self.decode(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return VAEOutput(torch.sigmoid(logits), recon, kl, recon + self.beta * kl, mu, logvar, z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior N(0, I): (n, C, S, S)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return torch.sigmoid(self.decode(z))

    def training_step(self, batch) -> dict:
        out = self(batch[0])
        return {"loss": out.loss, "recon_loss": out.recon_loss, "kl": out.kl}
