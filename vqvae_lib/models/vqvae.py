"""The VQ-VAE of van den Oord et al. (2017), with the Sonnet example's encoder and decoder:
strided 4x4 convolutions, then a 3x3 convolution and a residual stack (distinct weights per layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import PretrainedMixin, register_to_config
from ..quantizers import build_quantizer
from ..quantizers.vq import VQOutput, check_indices
from .inputs import check_images


class ResidualStack(nn.Module):
    """num_layers x [ReLU, 3x3 conv -> res_channels, ReLU, 1x1 conv -> channels] + skip, then ReLU."""

    def __init__(self, channels: int, res_channels: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, res_channels, 3, padding=1),
            nn.ReLU(), nn.Conv2d(res_channels, channels, 1)) for _ in range(num_layers))

    def forward(self, h):
        for layer in self.layers:
            h = h + layer(h)
        return F.relu(h)


def encoder(in_channels, hidden, res_channels, num_res_layers, n_down):
    """(B, C, H, W) -> (B, hidden, H / 2^n_down, W / 2^n_down)."""
    layers, c = [], in_channels
    for i in range(n_down):
        out = hidden if i == n_down - 1 else hidden // 2
        layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
        c = out
    layers += [nn.Conv2d(c, hidden, 3, padding=1), ResidualStack(hidden, res_channels, num_res_layers)]
    return nn.Sequential(*layers)


def decoder(code_dim, hidden, res_channels, num_res_layers, n_down, out_channels):
    """(B, D, h, w) -> (B, out_channels, h * 2^n_down, w * 2^n_down)."""
    layers = [nn.Conv2d(code_dim, hidden, 3, padding=1), ResidualStack(hidden, res_channels, num_res_layers)]
    c = hidden
    for i in range(n_down):
        last = i == n_down - 1
        out = out_channels if last else hidden // 2
        layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
        c = out
    return nn.Sequential(*layers)


@dataclass
class VQVAEOutput:
    """x_recon: (B, C, H, W) in data units; recon_loss: MSE / data_variance; loss: recon_loss + vq.loss."""

    x_recon: torch.Tensor
    recon_loss: torch.Tensor
    loss: torch.Tensor
    vq: VQOutput


class VQVAE(nn.Module, PretrainedMixin):
    """x: (B, in_channels, H, W) in [0, 1] -> z_e: (B, code_dim, H/downsample, W/downsample) -> codes -> x_recon.

    The defaults suit 28x28 digits (7x7 latents). ``data_variance`` scales the reconstruction loss
    as in the Sonnet example, so that ``recon_loss`` is the normalised MSE (NMSE).
    ``quantizer`` picks the quantizer and its options (:mod:`vqvae_lib.quantizers`): by default the
    ``VectorQuantizer`` (ema, kmeans_init, restart_after, ...); ``{"kind": "fsq", "levels": [4, 4, 4]}`` etc.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1, num_codes: int = 64, code_dim: int = 16, hidden_channels: int = 64,
                 num_res_layers: int = 2, res_channels: int = 32, downsample: int = 4, beta: float = 0.25,
                 data_variance: float = 1.0, quantizer: dict | None = None):
        super().__init__()
        n_down = int(round(math.log2(downsample))) if downsample > 0 else -1
        if n_down < 1 or 2 ** n_down != downsample:
            raise ValueError(f"downsample must be a power of two >= 2, got {downsample}")
        self.in_channels, self.downsample, self.data_variance = in_channels, downsample, data_variance
        self.encoder = nn.Sequential(encoder(in_channels, hidden_channels, res_channels, num_res_layers, n_down),
                                     nn.Conv2d(hidden_channels, code_dim, 1))  # the pre-VQ 1x1 projection
        self.quantizer = build_quantizer(num_codes, code_dim, beta, quantizer)
        self.decoder = decoder(code_dim, hidden_channels, res_channels, num_res_layers, n_down, in_channels)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a non-empty (B, in_channels, H, W) batch of finite floats of the
        weights' dtype (float32 by default; see :func:`vqvae_lib.models.inputs.check_images`), H and W divisible by
        downsample."""
        check_images(x, self.in_channels, self.parameter_dtype())
        if x.shape[2] % self.downsample or x.shape[3] % self.downsample:
            raise ValueError(f"height and width must be divisible by downsample={self.downsample}, "
                             f"got {x.shape[2]}x{x.shape[3]}")

    def check_code_grid(self, indices: torch.Tensor) -> None:
        """Raise ValueError unless indices is a non-empty (B, h, w) int64 grid of codes in [0, num_codes)."""
        if indices.dim() != 3:
            hint = ": one grid? add the batch dimension with indices[None]" if indices.dim() == 2 else ""
            raise ValueError(f"expected code indices (B, h, w), got shape {tuple(indices.shape)}{hint}")
        if indices.shape[0] == 0:
            raise ValueError(f"the batch is empty (shape {tuple(indices.shape)}): pass at least one grid")
        if indices.dtype != torch.long:
            raise ValueError(f"code indices must be int64 (integers), got {indices.dtype}: "
                             f"convert them with indices.long()")
        check_indices(indices, self.quantizer.num_codes)

    def parameter_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> z_e: (B, D, h, w)."""
        self.check_input(x)
        return self.encoder(x - 0.5)  # centre the [0, 1] data, as Sonnet does

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, D, h, w) -> x_recon: (B, C, H, W)."""
        return self.decoder(z_q) + 0.5

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        vq = self.quantizer(self.encode_continuous(x))
        x_recon = self.decode(vq.z_q)
        recon_loss = F.mse_loss(x_recon.float(), x.float()) / self.data_variance
        return VQVAEOutput(x_recon, recon_loss, recon_loss + vq.loss, vq)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> indices (B, h, w) long."""
        return self.quantizer.encode(self.encode_continuous(x))

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, h, w) long in [0, num_codes) -> images (B, C, h * downsample, w * downsample).

        A single (h, w) grid is refused rather than given a batch dimension: the result's shape would then
        depend on the input's, so pass ``indices[None]`` and take ``[0]`` of the result.
        """
        self.check_code_grid(indices)
        return self.decode(self.quantizer.lookup(indices))

    def training_step(self, batch) -> dict:
        x = batch[0]
        out = self(x)
        return {"loss": out.loss, "recon_loss": out.recon_loss, "commitment_loss": out.vq.commitment_loss,
                "codebook_loss": out.vq.codebook_loss, "perplexity": out.vq.perplexity, **out.vq.terms}
