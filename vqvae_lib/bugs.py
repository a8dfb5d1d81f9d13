"""Three deliberately wrong VQ-VAEs for chapter 3's bug hunt. The measurements that expose them
(which loss reaches which parameters, sizes in latent space) are in :mod:`vqvae_lib.evaluation.diagnostics`.

All three mistakes appear in public code:

* :class:`NoStraightThroughVQVAE` feeds the decoder the looked-up codes ``e = codebook[indices]``
  instead of the straight-through ``z_e + sg[e - z_e]``. The reconstruction gradient then stops at
  the codebook: the encoder learns only from the commitment loss.
* :class:`SwappedBetaVQVAE` weights the wrong term: ``beta * codebook_loss + commitment_loss``
  instead of ``codebook_loss + beta * commitment_loss``.
* :class:`SeedArticleVQVAE` is the training step of the online article this book grew from: no
  straight-through, and the two stop-gradients swapped between the codebook and commitment terms.

Each takes :class:`~vqvae_lib.models.vqvae.VQVAE`'s arguments, draws the same initial weights from the
same seed, and returns its :class:`VQVAEOutput` with the same values in the forward pass; only the
gradients differ. The library's ``train`` and ``evaluate_vqvae`` work on them unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from .models.vqvae import VQVAE, VQVAEOutput


class NoStraightThroughVQVAE(VQVAE):
    """Bug (a): ``x_recon = decoder(codebook[indices])``, no straight-through step.

    x: (B, C, H, W) -> ``VQVAEOutput`` whose ``vq.z_q`` (B, D, h, w) is the raw lookup, differentiable
    with respect to the codebook only; ``argmin`` has no gradient, so nothing reaches the encoder from
    the reconstruction loss.
    """

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        vq = self.quantizer(self.encode_continuous(x))
        e = self.quantizer.lookup(vq.indices)  # the bug: the codes themselves, gradient to the codebook
        x_recon = self.decode(e)
        recon_loss = F.mse_loss(x_recon.float(), x.float()) / self.data_variance
        return VQVAEOutput(x_recon, recon_loss, recon_loss + vq.loss, replace(vq, z_q=e))


class SwappedBetaVQVAE(VQVAE):
    """Bug (b): ``loss = recon + beta * codebook_loss + commitment_loss`` (beta on the wrong term).

    x: (B, C, H, W) -> ``VQVAEOutput`` with ``vq.loss`` rebuilt with the weights swapped. With an EMA
    codebook (no codebook gradient) the codebook term still carries no gradient; the encoder's
    commitment weight becomes 1.
    """

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        out = super().forward(x)
        vq = out.vq
        wrong = self.quantizer.beta * vq.codebook_loss + vq.commitment_loss  # the bug
        vq = replace(vq, loss=wrong)
        return VQVAEOutput(out.x_recon, out.recon_loss, out.recon_loss + wrong, vq)


class SeedArticleVQVAE(VQVAE):
    """Bug (c): the training step of the online article this book grew from, in substance::

        z_q = codebook[indices]                      # the plain lookup
        x_recon = decoder(z_q)                       # no straight-through
        codebook_loss = mse(z_q.detach(), z_e)       # its name says codebook; it moves the encoder
        commitment_loss = mse(z_q, z_e.detach())     # its name says encoder; it moves the codebook
        loss = recon_loss + codebook_loss + beta * commitment_loss

    So the encoder learns only to move towards its codes, with weight 1, and never hears about the
    reconstruction; the codebook learns from the reconstruction plus beta x the pull towards the
    encoder outputs. The output fields keep the article's names (``vq.codebook_loss`` is its
    ``codebook_loss``), so :func:`vqvae_lib.evaluation.diagnostics.gradient_routing` shows the swap; their values
    equal the correct model's (both are the mean ||z_e - e||^2).

    x: (B, C, H, W) -> ``VQVAEOutput`` with ``vq.z_q`` the raw lookup (B, D, h, w).
    """

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        z_e = self.encode_continuous(x)
        vq = self.quantizer(z_e)  # the nearest codes, perplexity and the quantiser's own updates
        z = z_e.float()
        z_q = self.quantizer.lookup(vq.indices)
        x_recon = self.decode(z_q)  # bug 1: no straight-through
        codebook_loss = F.mse_loss(z_q.detach(), z)  # bug 2: the two detach calls swapped ...
        commitment_loss = F.mse_loss(z_q, z.detach())  # ... between these two lines
        vq_loss = codebook_loss + self.quantizer.beta * commitment_loss
        recon_loss = F.mse_loss(x_recon.float(), x.float()) / self.data_variance
        vq = replace(vq, z_q=z_q, codebook_loss=codebook_loss, commitment_loss=commitment_loss, loss=vq_loss)
        return VQVAEOutput(x_recon, recon_loss, recon_loss + vq_loss, vq)
