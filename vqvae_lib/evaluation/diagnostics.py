"""Measurements of a VQ-VAE that training curves do not show: where each loss term's gradient goes,
and how large things are in the latent space.

* :func:`grads_reached` backpropagates one loss and says, per named group of parameters, whether any
  gradient entry is non-zero. It knows nothing about VQ-VAEs: any loss, any groups.
* :func:`gradient_routing` applies it to each loss term of a VQ-VAE, giving the table
  {term: {group: bool}} that chapter 3 reads off the paper's loss.
* :func:`latent_stats` measures the sizes of encoder outputs, codes and quantisation errors.

Every function works on :class:`~vqvae_lib.models.vqvae.VQVAE` and on anything with its attributes
(``encoder``, ``quantizer.codebook``, ``decoder``) and its :class:`~vqvae_lib.models.vqvae.VQVAEOutput`,
for instance the deliberately wrong models of :mod:`vqvae_lib.bugs`.
"""
from __future__ import annotations

import torch

from ..data import iter_batches
from ..device import resolve_device


def parameter_groups(model) -> dict:
    """{"encoder": [...], "codebook": [...], "decoder": [...]}: the model's parameters by part."""
    return {"encoder": list(model.encoder.parameters()),
            "codebook": [model.quantizer.codebook],
            "decoder": list(model.decoder.parameters())}


def grads_reached(loss: torch.Tensor, groups: dict) -> dict:
    """Backpropagate ``loss`` (a scalar) and say, per group, whether some gradient entry is non-zero.

    groups: {name: [parameters]}. Returns {name: bool}. A parameter that does not require a gradient
    (an EMA codebook) or that the loss does not depend on counts as not reached; so does a gradient
    that autograd computes but that is exactly zero everywhere. The graph is kept (``retain_graph``),
    so several terms of one forward pass can be asked in turn.
    """
    params = list({id(p): p for ps in groups.values() for p in ps if p.requires_grad}.values())
    if loss.requires_grad and params:
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    else:  # a loss outside the graph (computed under no_grad, or of frozen parameters) reaches nothing
        grads = [None] * len(params)
    nonzero = {id(p): g is not None and bool(g.ne(0).any()) for p, g in zip(params, grads)}
    return {name: any(nonzero.get(id(p), False) for p in ps) for name, ps in groups.items()}


def loss_terms(out) -> dict:
    """The separately backpropagated terms of a VQ-VAE's output: {name: scalar tensor}."""
    return {"recon_loss": out.recon_loss, "codebook_loss": out.vq.codebook_loss,
            "commitment_loss": out.vq.commitment_loss}


def gradient_routing(model, x: torch.Tensor, groups: dict | None = None) -> dict:
    """Which parameter groups each loss term reaches, one term backpropagated at a time.

    x: (B, C, H, W) -> {term: {group: bool}} for the terms recon_loss, codebook_loss, commitment_loss
    (the names of the model's output fields, whatever their code computes) and the groups of
    :func:`parameter_groups` unless ``groups`` is given.
    """
    groups = parameter_groups(model) if groups is None else groups
    terms = loss_terms(model(x))
    return {name: grads_reached(term, groups) for name, term in terms.items()}


@torch.no_grad()
def latent_stats(model, dataset, batch_size: int = 256, device=None) -> dict:
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
