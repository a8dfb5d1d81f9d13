"""SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear
Layer"): the codes are a frozen random codebook C times one learnt linear map W,

    codes = C W^T    (K, D),   C: (K, D) drawn once from N(0, 1/D) and never trained,   W: (D, D) learnt.

The lookup, the straight-through gradient and the losses are :class:`~vqvae_lib.quantizers.vq.VectorQuantizer`'s
(loss = codebook_loss + beta * commitment_loss); only where the codebook loss's gradient lands differs. In a plain
codebook it reaches the chosen rows alone (``code_sums``): a code no encoder output picks never moves. Here it
reaches W, and a step on W moves every row of C W^T at once, chosen or not (tests/test_codebook_fixes.py and
chapter 11 count the rows that move). The paper's formula and vector_quantize_pytorch's SimVQ have no bias; the
authors' code learns one as well.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import register_to_config
from .vq import VectorQuantizer


class SimVQ(VectorQuantizer):
    """z_e: (B, D, H, W) -> the nearest of the K codes C W^T; a drop-in for ``VectorQuantizer`` (kind "simvq").

    ``frozen_codebook`` (K, D) is a buffer (saved, never trained); ``code_transform`` is W, a bias-free linear
    map initialised uniform in +-1/sqrt(D) (PyTorch's default range), both drawn from ``seed``.
    No EMA, k-means or restarts: the codes are a function of W, not free rows to set.
    """

    @register_to_config
    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, seed: int = 0,
                 rotation_trick: bool = False):
        super().__init__(num_codes, code_dim, beta=beta, seed=seed, rotation_trick=rotation_trick)

    def init_codes(self, generator: torch.Generator) -> None:
        D = self.code_dim
        self.register_buffer("frozen_codebook", torch.randn(self.num_codes, D, generator=generator) * D ** -0.5)
        self.code_transform = nn.utils.skip_init(nn.Linear, D, D, bias=False)  # no draw from the global RNG
        with torch.no_grad():
            self.code_transform.weight.copy_(torch.empty(D, D).uniform_(-D ** -0.5, D ** -0.5, generator=generator))

    def codes(self) -> torch.Tensor:
        """(K, D): C W^T, a function of W: the codebook loss's gradient reaches W, hence every code."""
        return self.code_transform(self.frozen_codebook)
