"""Chapter 5 (Training a VQ-VAE): check a reader's training step.

``check_training_step(fn)`` runs ``fn(model, x, opt)`` for two steps on a tiny VQ-VAE beside the
reference step (loss = NMSE + codebook + beta * commitment; zero_grad, backward, step) and says
which part of the model ended up different, which usually names the mistake.
"""
from __future__ import annotations

import copy
import math

import torch

from ..models.vqvae import VQVAE
from ..seeding import seeded
from . import Incorrect, correct, require


def reference_training_step(model: VQVAE, x: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
    """One optimiser step on x: (B, C, H, W). Returns the loss before the step (a scalar tensor)."""
    out = model(x)
    loss = out.recon_loss + out.vq.loss  # NMSE + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _tiny_model() -> VQVAE:
    # No k-means init and no restarts: the step is then deterministic, so two copies stay comparable.
    return VQVAE(in_channels=1, num_codes=8, code_dim=4, hidden_channels=8, res_channels=4,
                 num_res_layers=1, beta=0.25)


def _weights(model) -> dict:
    # parameters only: buffers (the quantizer's update counter) change in any forward pass
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _moved(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def _same(a: dict, b: dict, prefix: str) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a if k.startswith(prefix))


def check_training_step(fn, verbose: bool = True) -> bool:
    """Check ``fn(model, x, opt) -> loss``: one VQ-VAE training step. Raises :class:`Incorrect` with a hint."""
    g = torch.Generator().manual_seed(0)
    with seeded(0):
        ref = _tiny_model()
    yours = copy.deepcopy(ref)
    # Plain SGD: the update is then proportional to the gradient, so any missing term shows.
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05)
    opt_yours = torch.optim.SGD(yours.parameters(), lr=0.05)
    start = _weights(yours)
    for step in range(2):
        x = torch.rand(4, 1, 8, 8, generator=g)
        expected = float(reference_training_step(ref, x, opt_ref).detach())
        got = fn(yours, x, opt_yours)
        require(got is not None, "your function returned None: return the loss tensor you backpropagated")
        got = float(got.detach() if torch.is_tensor(got) else got)
        w_ref, w_yours = _weights(ref), _weights(yours)
        require(step == 0 or _same(w_ref, w_yours, ""),
                "the first step matched but the second did not: call opt.zero_grad() "
                "before loss.backward(), otherwise the gradients of both steps add up")
        require(step > 0 or _moved(start, w_yours, ""),
                "no parameter changed: call loss.backward() and then opt.step()")
        require(step > 0 or math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-6),
                f"your loss is {got:.5f} but the VQ-VAE loss is {expected:.5f}: use "
                "out.recon_loss + out.vq.loss (NMSE + codebook + beta * commitment)")
        if not _same(w_ref, w_yours, "quantizer.codebook"):
            require(_moved(start, w_yours, "quantizer.codebook"),
                    "the codebook did not move: only the codebook term ||sg[z_e] - e||^2 "
                    "(inside out.vq.loss) gives it a gradient")
            raise Incorrect("the codebook moved differently from the reference step: is the "
                            "codebook term ||sg[z_e] - e||^2 counted exactly once?")
        require(_same(w_ref, w_yours, "decoder"), "the decoder moved differently: the reconstruction term "
                "out.recon_loss is the decoder's only training signal")
        require(_same(w_ref, w_yours, "encoder"), "the encoder moved differently: it needs the reconstruction "
                "gradient (straight through z_q) plus beta * commitment")
    return correct(verbose, "Correct! Two steps match the reference update.")
