"""Chapter 3 (Stop-gradient and the straight-through estimator): check a reader's code.

``check_straight_through(fn)``: ``fn(z_e, z_q)`` must return a tensor whose value is ``z_q`` and whose
gradient goes to ``z_e`` unchanged and not to ``z_q``.
``check_vq_losses(fn)``: ``fn(z_e, e)`` must return ``(codebook_loss, commitment_loss)`` with the
stop-gradients in the right places.

Both follow the convention of :mod:`vqvae_lib.exercises`: a wrong answer raises :class:`Incorrect`
with a hint, a right one prints "Correct!" and returns True.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Incorrect, correct, require

__all__ = ["Incorrect", "check_straight_through", "check_vq_losses", "reference_straight_through",
           "reference_vq_losses"]

TOLERANCE = 1e-6  # float32 rounding: z_e + (z_q - z_e) need not reproduce z_q to the last bit


def reference_straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """z_e, z_q: (B, D, H, W) -> (B, D, H, W): value z_q, gradient passed to z_e as it is."""
    return z_e + (z_q - z_e).detach()


def reference_vq_losses(z_e: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_e, e: (N, D) -> (mean ||sg[z_e] - e||^2, mean ||z_e - sg[e]||^2), each a scalar."""
    return F.mse_loss(e, z_e.detach()), F.mse_loss(z_e, e.detach())


def _grads(out: torch.Tensor, inputs: list, upstream: torch.Tensor) -> list:
    """Gradients of sum(out * upstream) with respect to inputs; None where none flows."""
    if not out.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad((out * upstream).sum(), inputs, allow_unused=True, retain_graph=True))


def _is_zero(g) -> bool:
    return g is None or bool((g == 0).all())


def check_straight_through(fn, verbose: bool = True) -> bool:
    """Check ``fn(z_e, z_q) -> z_st`` (all (B, D, H, W)). Raises :class:`Incorrect` with a hint."""
    g = torch.Generator().manual_seed(3)
    z_e = torch.randn(2, 4, 3, 3, generator=g).requires_grad_()
    z_q = torch.randn(2, 4, 3, 3, generator=g).requires_grad_()  # stands in for the looked-up codes
    out = fn(z_e, z_q)
    require(torch.is_tensor(out), f"return a tensor, got {type(out).__name__}")
    require(out.shape == z_e.shape, f"the output must have z_e's shape {tuple(z_e.shape)}, got {tuple(out.shape)}")
    value_is_z_e = torch.allclose(out, z_e) and not torch.allclose(out, z_q)
    require(not value_is_z_e, "the output's value is z_e: the forward pass must give the decoder the code z_q")
    require(torch.allclose(out, z_q, atol=TOLERANCE),
            "the output's value must equal z_q (the decoder sees the codes); "
            f"max |out - z_q| = {float((out - z_q).detach().abs().max()):.3g}")
    upstream = torch.randn(z_e.shape, generator=g)
    g_ze, g_zq = _grads(out, [z_e, z_q], upstream)
    require(not _is_zero(g_ze), "no gradient reaches z_e: detach only the difference (z_q - z_e), "
                                "not the whole expression, and do not detach z_e itself")
    require(torch.allclose(g_ze, upstream, atol=TOLERANCE),
            "the gradient at z_e must equal the gradient arriving at the output "
            "(an identity Jacobian); yours scales or mixes it")
    require(_is_zero(g_zq), "gradient also flows into z_q, i.e. into the codebook: the codebook should learn "
                            "only from its own loss; put the whole difference (z_q - z_e) inside .detach()")
    return correct(verbose, "Correct! The value is z_q, and the gradient reaches z_e unchanged and z_q not at all.")


LABELS = {"z_e": "the encoder output z_e", "e": "the codes e"}


def _require_moves_only(loss: torch.Tensor, name: str, inputs: dict, moves: str, owner: str) -> None:
    """One quantiser loss's routing: its gradient reaches ``inputs[moves]`` and not the other input.

    inputs: {"z_e": tensor, "e": tensor}; owner: the part of the model the loss trains. The codebook
    and commitment losses differ only in which input they move, so both are checked by this one rule.
    """
    (other,) = set(inputs) - {moves}
    grads = dict(zip(inputs, _grads(loss, list(inputs.values()), torch.ones(()))))
    require(not _is_zero(grads[moves]), f"{name} sends no gradient to {moves}: it is the {owner}'s loss, "
                                        f"so detach {other}, not {moves}")
    require(_is_zero(grads[other]), f"{name} also moves {LABELS[other]}: use {other}.detach() in it")


def check_vq_losses(fn, verbose: bool = True) -> bool:
    """Check ``fn(z_e, e) -> (codebook_loss, commitment_loss)``, z_e and e (N, D), each loss a scalar mean.

    Raises :class:`Incorrect` with a hint.
    """
    g = torch.Generator().manual_seed(4)
    z_e = torch.randn(10, 3, generator=g).requires_grad_()
    e = torch.randn(10, 3, generator=g).requires_grad_()
    result = fn(z_e, e)
    require(isinstance(result, (tuple, list)) and len(result) == 2,
            "return two losses: (codebook_loss, commitment_loss)")
    codebook_loss, commitment_loss = result
    expected = float(((z_e - e) ** 2).mean().detach())
    for name, loss in (("codebook_loss", codebook_loss), ("commitment_loss", commitment_loss)):
        require(torch.is_tensor(loss) and loss.numel() == 1,
                f"{name} must be a scalar tensor (the mean over all N x D entries)")
        value = float(loss.detach())
        summed = abs(value - expected * z_e.numel()) < 1e-3
        require(abs(value - expected) <= 1e-5 * max(1.0, expected),
                f"{name} = {value:.5f}, expected the mean squared distance {expected:.5f}"
                + (" (a sum instead of a mean?)" if summed else ""))
    inputs = {"z_e": z_e, "e": e}
    _require_moves_only(codebook_loss, "codebook_loss", inputs, moves="e", owner="codebook")
    _require_moves_only(commitment_loss, "commitment_loss", inputs, moves="z_e", owner="encoder")
    return correct(verbose, "Correct! Same value, two different gradients: the codebook loss moves only e, "
                            "the commitment loss only z_e.")
