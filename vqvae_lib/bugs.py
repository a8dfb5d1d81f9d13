"""Two deliberately wrong VQ-VAEs for chapter 3's bug hunt, and the measurements that expose them.

Both mistakes appear in public tutorial code:

* :class:`NoStraightThroughVQVAE` feeds the decoder the looked-up codes ``e = codebook[indices]``
  instead of the straight-through ``z_e + sg[e - z_e]``. The reconstruction gradient then stops at
  the codebook: the encoder learns only from the commitment loss.
* :class:`SwappedBetaVQVAE` weights the wrong term: ``beta * codebook_loss + commitment_loss``
  instead of ``codebook_loss + beta * commitment_loss``.

Both take :class:`~vqvae_lib.vqvae.VQVAE`'s arguments and return its :class:`VQVAEOutput`, so the
library's ``train`` and ``evaluate_vqvae`` work on them unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from .data import iter_batches
from .device import resolve_device
from .vqvae import VQVAE, VQVAEOutput


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


def parameter_groups(model: VQVAE) -> dict:
    """{"encoder": [...], "codebook": [...], "decoder": [...]} lists of the model's parameters."""
    return {"encoder": list(model.encoder.parameters()),
            "codebook": [model.quantizer.codebook],
            "decoder": list(model.decoder.parameters())}


def gradient_routing(model: VQVAE, x: torch.Tensor) -> dict:
    """Which parameter groups each loss term reaches, by backpropagating each term on its own.

    x: (B, C, H, W) -> {term: {group: bool}} for the terms recon_loss, codebook_loss, commitment_loss
    and the groups encoder, codebook, decoder; True where some gradient entry is non-zero.
    """
    out = model(x)
    terms = {"recon_loss": out.recon_loss, "codebook_loss": out.vq.codebook_loss,
             "commitment_loss": out.vq.commitment_loss}
    groups = parameter_groups(model)
    params = [p for ps in groups.values() for p in ps if p.requires_grad]
    table = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, params, allow_unused=True, retain_graph=True)
        nonzero = {id(p): g is not None and bool(g.abs().sum() > 0) for p, g in zip(params, grads)}
        table[name] = {group: any(nonzero.get(id(p), False) for p in ps) for group, ps in groups.items()}
    return table


@torch.no_grad()
def latent_stats(model: VQVAE, dataset, batch_size: int = 256, device=None) -> dict:
    """Sizes in the latent space over a whole data set, in eval mode.

    Returns z_e_norm (mean ||z_e|| per position), code_norm (mean ||e_k|| over the K codes),
    quant_error (mean ||z_e - e||^2 per position, i.e. D x the commitment loss).
    """
    device = resolve_device(device)
    model.to(device).eval()
    norm_sum, err_sum, n = 0.0, 0.0, 0
    codebook = model.quantizer.codebook.float()
    for x, _ in iter_batches(dataset, batch_size, device):
        z_e = model.encode_continuous(x).float()
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # (B*h*w, D)
        e = codebook[model.encode(x).flatten()]
        norm_sum += float(flat.norm(dim=1).sum())
        err_sum += float(((flat - e) ** 2).sum())
        n += flat.shape[0]
    return {"z_e_norm": norm_sum / n, "code_norm": float(codebook.norm(dim=1).mean()), "quant_error": err_sum / n}
