"""Chapter 3 (Stop-gradient and the straight-through estimator): check a reader's code.

``check_straight_through(fn)``: ``fn(z_e, z_q)`` must return a tensor whose value is ``z_q`` and whose
gradient goes to ``z_e`` unchanged and not to ``z_q``.
``check_vq_losses(fn)``: ``fn(z_e, e)`` must return ``(codebook_loss, commitment_loss)`` with the
stop-gradients in the right places.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    return list(torch.autograd.grad((out * upstream).sum(), inputs, allow_unused=True))


def _is_zero(g) -> bool:
    return g is None or bool((g == 0).all())


def check_straight_through(fn, verbose: bool = True) -> bool:
    """Check ``fn(z_e, z_q) -> z_st`` (all (B, D, H, W)). Raises AssertionError with a hint."""
    g = torch.Generator().manual_seed(3)
    z_e = torch.randn(2, 4, 3, 3, generator=g).requires_grad_()
    z_q = torch.randn(2, 4, 3, 3, generator=g).requires_grad_()  # stands in for the looked-up codes
    out = fn(z_e, z_q)
    if not torch.is_tensor(out):
        raise AssertionError(f"return a tensor, got {type(out).__name__}")
    if out.shape != z_e.shape:
        raise AssertionError(f"the output must have z_e's shape {tuple(z_e.shape)}, got {tuple(out.shape)}")
    if torch.allclose(out, z_e) and not torch.allclose(out, z_q):
        raise AssertionError("the output's value is z_e: the forward pass must give the decoder the code z_q")
    if not torch.allclose(out, z_q, atol=1e-6):
        raise AssertionError("the output's value must equal z_q (the decoder sees the codes); "
                             f"max |out - z_q| = {float((out - z_q).abs().max()):.3g}")
    upstream = torch.randn(z_e.shape, generator=g)
    g_ze, g_zq = _grads(out, [z_e, z_q], upstream)
    if _is_zero(g_ze):
        raise AssertionError("no gradient reaches z_e: detach only the difference (z_q - z_e), "
                             "not the whole expression, and do not detach z_e itself")
    if not torch.allclose(g_ze, upstream, atol=1e-6):
        raise AssertionError("the gradient at z_e must equal the gradient arriving at the output "
                             "(an identity Jacobian); yours scales or mixes it")
    if not _is_zero(g_zq):
        raise AssertionError("gradient also flows into z_q, i.e. into the codebook: the codebook should "
                             "learn only from its own loss; put the whole difference (z_q - z_e) inside .detach()")
    if verbose:
        print("Correct! The value is z_q, and the gradient reaches z_e unchanged and z_q not at all.")
    return True


def check_vq_losses(fn, verbose: bool = True) -> bool:
    """Check ``fn(z_e, e) -> (codebook_loss, commitment_loss)``, z_e and e (N, D), each loss a scalar mean.

    Raises AssertionError with a hint.
    """
    g = torch.Generator().manual_seed(4)
    z_e = torch.randn(10, 3, generator=g).requires_grad_()
    e = torch.randn(10, 3, generator=g).requires_grad_()
    result = fn(z_e, e)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError("return two losses: (codebook_loss, commitment_loss)")
    codebook_loss, commitment_loss = result
    expected = float(((z_e - e) ** 2).mean().detach())
    for name, loss in (("codebook_loss", codebook_loss), ("commitment_loss", commitment_loss)):
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise AssertionError(f"{name} must be a scalar tensor (the mean over all N x D entries)")
        value = float(loss.detach())
        if abs(value - expected) > 1e-5 * max(1.0, expected):
            hint = " (a sum instead of a mean?)" if abs(value - expected * z_e.numel()) < 1e-3 else ""
            raise AssertionError(f"{name} = {value:.5f}, expected the mean squared distance "
                                 f"{expected:.5f}{hint}")
    ones = torch.ones(())
    g_ze, g_e = _grads(codebook_loss, [z_e, e], ones)
    if _is_zero(g_e):
        raise AssertionError("codebook_loss sends no gradient to e: it is the codebook's loss, "
                             "so detach z_e, not e")
    if not _is_zero(g_ze):
        raise AssertionError("codebook_loss also moves the encoder output z_e: use z_e.detach() in it")
    g_ze, g_e = _grads(commitment_loss, [z_e, e], ones)
    if _is_zero(g_ze):
        raise AssertionError("commitment_loss sends no gradient to z_e: it is the encoder's loss, "
                             "so detach e, not z_e")
    if not _is_zero(g_e):
        raise AssertionError("commitment_loss also moves the codes e: use e.detach() in it")
    if verbose:
        print("Correct! Same value, two different gradients: the codebook loss moves only e, "
              "the commitment loss only z_e.")
    return True
