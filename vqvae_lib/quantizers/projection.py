"""The 1x1 projections of a low-dimensional lookup (Yu et al. 2022, ViT-VQGAN, sec. 3.2): the encoder's D channels
down to the d channels a quantizer looks codes up in, and back up to D for the decoder.

Used by :class:`~vqvae_lib.quantizers.vq.VectorQuantizer` (``lookup_dim``) and :class:`~vqvae_lib.quantizers.bsq.BSQ`.
The weights are drawn from the quantizer's generator, never from torch's global RNG.
"""
from __future__ import annotations

import torch
from torch import nn


def projection(in_channels: int, out_channels: int, generator: torch.Generator) -> nn.Module:
    """A 1x1 convolution (B, in_channels, H, W) -> (B, out_channels, H, W), or the identity when the two are
    equal. Weights and bias uniform in +-1/sqrt(in_channels), PyTorch's default range, drawn from ``generator``."""
    if in_channels == out_channels:
        return nn.Identity()
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, 1)  # no draw from the global RNG
    bound = in_channels ** -0.5
    with torch.no_grad():
        for p in (conv.weight, conv.bias):
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
    return conv
