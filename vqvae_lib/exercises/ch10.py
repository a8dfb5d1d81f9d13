"""Chapter 10 (Colour images and VQGAN): check a reader's hinge loss and adaptive weight.

``check_hinge_d_loss(answer)``: ``answer(logits_real, logits_fake) -> ()``, the discriminator's hinge loss
0.5 (mean relu(1 - logits_real) + mean relu(1 + logits_fake)), on logit maps of any shape.
``check_adaptive_weight(answer)``: ``answer(rec_loss, g_loss, last_layer) -> ()``, VQGAN's weight
||grad rec_loss|| / (||grad g_loss|| + 1e-4) at ``last_layer``, clamped to [0, 1e4] and detached.

Each check prints "Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import torch

from ..models.vqgan import adaptive_weight, hinge_d_loss
from . import correct, require

RTOL = 1e-9  # float64 throughout: a right answer agrees to rounding, a wrong one by O(1)


def hinge_cases():
    """(logits_real, logits_fake) pairs, float64: relu active and inactive on both sides, two map shapes."""
    g = torch.Generator().manual_seed(0)
    yield torch.tensor([[2.0, 0.5], [-1.0, 1.0]], dtype=torch.float64), torch.tensor([[-2.0, 0.5], [3.0, -1.0]],
                                                                                      dtype=torch.float64)
    yield 2 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(5, 1, 4, 4, generator=g,
                                                                                     dtype=torch.float64)


def check_hinge_d_loss(answer, verbose: bool = True) -> bool:
    """Check ``answer(logits_real, logits_fake)`` against the hinge loss on two pairs of logit maps."""
    for real, fake in hinge_cases():
        got = answer(real.clone(), fake.clone())
        require(got is not None, "your function returned None: return the loss, a number")
        got = torch.as_tensor(got, dtype=torch.float64)
        require(got.numel() == 1, f"expected one number, got shape {tuple(got.shape)}: take the means")
        want = hinge_d_loss(real, fake)
        if torch.isclose(got.reshape(()), want, rtol=RTOL, atol=RTOL):
            continue
        relu = torch.relu
        hint = f"expected {float(want):.6f}, got {float(got):.6f}"
        if torch.isclose(got.reshape(()), 0.5 * (relu(1 + real).mean() + relu(1 - fake).mean())):
            hint += ": real and fake are swapped; real logits should be pushed above +1, fake below -1"
        elif torch.isclose(got.reshape(()), relu(1 - real).mean() + relu(1 + fake).mean()):
            hint += ": the sum of the two means is halved"
        elif torch.isclose(got.reshape(()), 0.5 * ((1 - real).mean() + (1 + fake).mean())):
            hint += ": without the relu a logit already beyond its margin still counts; clip at zero"
        else:
            hint += ": 0.5 * (mean of relu(1 - logits_real) + mean of relu(1 + logits_fake))"
        require(False, hint)
    return correct(verbose, "Correct! Logits beyond the margin cost nothing: the hinge stops pushing them.")


def adaptive_cases():
    """(rec_loss, g_loss, last_layer) from a tiny linear 'decoder' in float64, and the clamp at the top."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    out = x @ weight.T
    yield (out ** 2).mean(), -out.sum() * 0.3, weight
    yield (out ** 2).mean() * 1e3, out.mean() * 1e-9, weight  # a vanishing adversarial gradient: the clamp at 1e4


def check_adaptive_weight(answer, verbose: bool = True) -> bool:
    """Check ``answer(rec_loss, g_loss, last_layer)``: the value, the clamp, and that it is detached."""
    for rec, adv, layer in adaptive_cases():
        got = answer(rec, adv, layer)
        require(got is not None, "your function returned None: return the weight, a tensor")
        require(torch.is_tensor(got), f"expected a tensor, got {type(got).__name__}")
        require(got.grad_fn is None and not got.requires_grad,
                "the weight still carries a graph: detach it, or the generator would be trained to change it")
        want = adaptive_weight(rec, adv, layer)
        if torch.isclose(got.double().reshape(()), want, rtol=RTOL, atol=RTOL):
            continue
        (g_rec,) = torch.autograd.grad(rec, layer, retain_graph=True)
        (g_adv,) = torch.autograd.grad(adv, layer, retain_graph=True)
        hint = f"expected {float(want):.6g}, got {float(got):.6g}"
        if torch.isclose(got.double().reshape(()), g_adv.norm() / (g_rec.norm() + 1e-4)):
            hint += ": the ratio is upside down; the reconstruction's gradient norm goes on top"
        elif float(want) == 1e4:
            hint += ": clamp the ratio to at most 1e4 (here the adversarial gradient is tiny)"
        else:
            hint += ": the norms of the two losses' gradients at last_layer (torch.autograd.grad, retain_graph=True)"
        require(False, hint)
    return correct(verbose, "Correct! The weight sets the adversarial gradient at the decoder's last layer to the "
                            "reconstruction's size.")
