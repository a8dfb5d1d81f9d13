"""A small convolutional Gaussian VAE (Kingma and Welling 2014) for the first chapter.

q(z|x) = N(mu(x), diag(exp(logvar(x)))), p(z) = N(0, I), and p(x|z) a discretised logistic over the 256
levels of each pixel of the 8-bit image (:mod:`vqvae_lib.models.likelihood`), the decoder predicting its mean and
log-scale per pixel. The likelihood is a normalised distribution over the discrete images, so
ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x) holds for the 8-bit data itself; the loss is its
negative in nats per image, the two terms returned separately.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoint import PretrainedMixin, register_to_config
from .inputs import check_images
from .likelihood import discretized_logistic_mean, discretized_logistic_nll

LOG_SCALE_INIT = math.log(0.1)  # the decoder's logistic scale before training: a tenth of the [0, 1] range


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, summed over the last dim.

    mu, logvar: (B, L) -> (B,).  KL = 1/2 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The reparameterisation trick (British spelling; the code says reparameterize):
    z = mu + sigma * eps, eps ~ N(0, I), a sample whose gradient reaches mu and logvar.

    mu, logvar: (B, L) -> z: (B, L); sigma = exp(logvar / 2). eps comes from torch's global RNG.
    """
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


@dataclass
class VAEOutput:
    """recon_loss: -log p(x|z) for the sampled z, averaged over the batch (nats per image); kl: KL(q||p)
    averaged over the batch (nats per image); loss: recon_loss + beta * kl (the negative ELBO when
    beta = 1); mean, log_scale: p(x|z)'s parameters (B, C, H, W); mu, logvar, z: (B, latent_dim).
    x_recon: (B, C, H, W) in [0, 1], the mean image of p(x|z), computed when asked for."""

    recon_loss: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor
    mean: torch.Tensor
    log_scale: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor

    @property
    def x_recon(self) -> torch.Tensor:
        return discretized_logistic_mean(self.mean.detach(), self.log_scale.detach())


class VAE(nn.Module, PretrainedMixin):
    """x: (B, C, S, S) 8-bit images / 255, S divisible by 4 -> z: (B, latent_dim) -> p(x|z) per pixel."""

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
        # two output channels per image channel: the logistic's mean and its log-scale
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * h * s * s), nn.ReLU(), nn.Unflatten(1, (2 * h, s, s)),
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(h, 2 * in_channels, 4, 2, 1))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a non-empty (B, in_channels, S, S) batch of finite floats of the
        weights' dtype (see :func:`vqvae_lib.models.inputs.check_images`), S the image_size the model was built for."""
        check_images(x, self.in_channels, next(self.parameters()).dtype)
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, S, S) -> mu, logvar: (B, latent_dim)."""
        self.check_input(x)
        mu, logvar = self.to_stats(self.encoder(x)).float().chunk(2, dim=1)  # float: bf16 under autocast
        return mu, logvar

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, latent_dim) -> p(x|z)'s mean and log-scale, each (B, C, S, S), any real values."""
        mean, log_scale = self.decoder(z).float().chunk(2, dim=1)
        return mean, log_scale + LOG_SCALE_INIT

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) -> (B, C, S, S) in [0, 1], the mean image of p(x|z)."""
        return discretized_logistic_mean(*self.decode(z))

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        mean, log_scale = self.decode(z)
        recon = discretized_logistic_nll(x, mean, log_scale).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return VAEOutput(recon, kl, recon + self.beta * kl, mean, log_scale, mu, logvar, z)

    @torch.no_grad()
    def importance_nll(self, x: torch.Tensor, num_samples: int = 100, max_decode: int = 8192) -> torch.Tensor:
        """An importance-sampled estimate of -log p(x) in nats per image, with q(z|x) as the proposal.

        x: (B, C, S, S) -> (B,). -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), K = num_samples.
        Its expectation is at most the -ELBO and falls towards -log p(x) as K grows (Burda et al. 2016).
        max_decode: images decoded at once (memory). Noise from torch's global RNG.
        """
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        per_chunk = max(1, max_decode // len(x))  # samples of z per image decoded at once
        log_w = []
        for start in range(0, num_samples, per_chunk):
            k = min(per_chunk, num_samples - start)
            eps = torch.randn(k, *mu.shape, device=mu.device)
            z = mu + std * eps                                              # (k, B, L)
            log_q = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(-1)
            log_p = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            mean, log_scale = self.decode(z.flatten(0, 1))
            nll = discretized_logistic_nll(x.repeat(k, 1, 1, 1), mean, log_scale).view(k, -1)
            log_w.append(-nll + log_p - log_q)
        return -(torch.logsumexp(torch.cat(log_w), 0) - math.log(num_samples))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior N(0, I): (n, C, S, S) in [0, 1], the mean image of p(x|z)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode_image(z)

    def training_step(self, batch) -> dict:
        out = self(batch[0])
        return {"loss": out.loss, "recon_loss": out.recon_loss, "kl": out.kl}
