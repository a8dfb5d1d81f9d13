"""Chapter 8 (Priors after the PixelCNN): check a reader's mask schedule, causal attention mask and whole-model bound.

``check_masked_after_round(answer)``: ``answer(step, steps, total) -> int``, how many of ``total`` codes are still
masked after round ``step`` of ``steps`` under MaskGIT's cosine schedule
(:func:`~vqvae_lib.priors.maskgit.mask_schedule`).
``check_causal_mask(answer)``: ``answer(T) -> (T, T)`` mask, True (or 1) where query slot t may attend to key slot s.
``check_whole_model_bound(answer)``: ``answer(recon_nats, prior_bits_per_code, codes_per_image, num_dims) -> float``,
the VQ-VAE's bound -log2 p(x) <= -log2 p(x | z_q) - log2 p(z_q) in bits per dimension.

Each check prints "Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint.
"""
from __future__ import annotations

import math

import torch

from ..priors.maskgit import mask_schedule
from . import correct, require

# the rounds in between first: their hints tell the common mistakes apart; then the first and last rounds
SCHEDULE_CASES = [(steps, total) for steps in (4, 8, 12, 2, 1) for total in (49, 64, 256)]
MASK_SIZES = (5, 2, 49, 1)  # T = 1 last: there a strictly lower mask and an inverted one are both all False
# (reconstruction nats per image, prior bits per code, codes per image, values per image): the digits' shapes
BOUND_CASES = [(600.0, 3.5, 49, 784), (1200.0, 6.0, 49, 784), (2500.0, 8.0, 1024, 3072)]
REL_TOL = 1e-6


def reference_masked_after_round(step: int, steps: int, total: int) -> int:
    """Codes still masked after round ``step`` of ``steps``: floor(total * cos(pi/2 * step / steps))."""
    return mask_schedule(step, steps, total)


def check_masked_after_round(answer, verbose: bool = True) -> bool:
    """Check ``answer(step, steps, total) -> int`` for every round of several schedules."""
    for steps, total in SCHEDULE_CASES:
        for step in [*range(1, steps), 0, steps]:
            got = answer(step, steps, total)
            require(got is not None, "your function returned None: return the number of codes still masked")
            want = reference_masked_after_round(step, steps, total)
            where = f"after round {step} of {steps} with {total} codes"
            got = float(got)
            if got == want:
                continue
            hint = f"{where}: expected {want} codes still masked, got {got:g}"
            if 0 < step < steps and got == math.ceil(total * math.cos(math.pi / 2 * step / steps)):
                hint += ": round down (floor), as MaskGIT does, not up"
            elif 0 < step < steps and math.isclose(got, math.cos(math.pi / 2 * step / steps), rel_tol=1e-6):
                hint += ": that is the masked fraction; multiply by the number of codes"
            elif got != math.floor(got):
                hint += ": return a whole number of codes: round total * cos(...) down (floor)"
            elif got == total - want:
                hint += ": that is the number already decoded; the schedule counts the codes still masked"
            elif 0 < step < steps and got == math.floor(total * (1 - step / steps)):
                hint += ": MaskGIT's schedule is a cosine, cos(pi/2 * step / steps), not linear"
            elif step == 0:
                hint += ": before the first round every code is masked"
            elif step == steps:
                hint += ": after the last round no code is left masked"
            else:
                hint += ": use floor(total * cos(pi/2 * step / steps))"
            require(False, hint)
    return correct(verbose, "Correct! Your schedule matches mask_schedule for every round.")


def reference_causal_mask(T: int) -> torch.Tensor:
    """(T, T) bool: row t (the query) is True at the key slots s <= t it may attend to."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def check_causal_mask(answer, verbose: bool = True) -> bool:
    """Check ``answer(T) -> (T, T)`` (bool, or 0/1) for several sequence lengths."""
    for T in MASK_SIZES:
        got = answer(T)
        require(got is not None, "your function returned None: return the (T, T) mask")
        got = torch.as_tensor(got)
        require(got.shape == (T, T), f"for T = {T} the mask must have shape ({T}, {T}), got {tuple(got.shape)}")
        require(bool(torch.isin(got.float(), torch.tensor([0.0, 1.0])).all()),
                f"T = {T}: a mask holds only True/1 (may attend) and False/0 (hidden)")
        got = got.bool()
        want = reference_causal_mask(T)
        if torch.equal(got, want):
            continue
        if torch.equal(got, want.T):
            hint = (f"T = {T}: your mask lets slot t attend to the slots AFTER it: row t (the query) may see "
                    "the columns s <= t, a lower triangle")
        elif torch.equal(got, want & ~torch.eye(T, dtype=torch.bool)):
            hint = (f"T = {T}: slot t may attend to itself: it holds the code before t (and the position of "
                    "code t), not code t, so keep the diagonal")
        elif torch.equal(got, ~want):
            hint = f"T = {T}: True means 'may attend': you marked the hidden slots instead"
        elif bool(got.all()):
            hint = f"T = {T}: every slot sees every other: that is MaskGIT's bidirectional attention, not causal"
        else:
            hint = f"T = {T}: row t must be True exactly at the columns s <= t (torch.tril)"
        require(False, hint)
    return correct(verbose, "Correct! Your mask is causal: each slot sees itself and the slots before it.")


def reference_whole_model_bound(recon_nats: float, prior_bits_per_code: float, codes_per_image: int,
                                num_dims: int) -> float:
    """(-log p(x | z_q) in nats + -log2 p(z_q) in bits) per image, in bits per dimension."""
    return (recon_nats / math.log(2) + prior_bits_per_code * codes_per_image) / num_dims


def check_whole_model_bound(answer, verbose: bool = True) -> bool:
    """Check ``answer(recon_nats, prior_bits_per_code, codes_per_image, num_dims) -> bits per dimension``."""
    for recon, prior_bits, codes, dims in BOUND_CASES:
        got = answer(recon, prior_bits, codes, dims)
        require(got is not None, "your function returned None: return the bound in bits per dimension")
        got = float(got)
        want = reference_whole_model_bound(recon, prior_bits, codes, dims)

        def near(x, got=got):
            return math.isclose(got, x, rel_tol=REL_TOL)

        hint = (f"{recon:g} nats of reconstruction, {prior_bits:g} bits per code, {codes} codes, {dims} values: "
                f"expected {want:.4f} bits per dimension, got {got:.4f}")
        if near((recon + prior_bits * codes) / dims):
            hint += ": the reconstruction is in nats; convert it to bits (divide by ln 2) before adding"
        elif near((recon / math.log(2) + prior_bits) / dims):
            hint += ": the prior's figure is per code; an image has codes_per_image of them"
        elif near(recon / math.log(2) + prior_bits * codes):
            hint += ": that is bits per image; divide by the values per image"
        elif near(recon / math.log(2) / dims):
            hint += ": the prior's bits are part of the bound: -log p(z_q) is the KL term"
        elif near((recon / math.log(2) - prior_bits * codes) / dims):
            hint += ": both terms are costs; add the prior's bits"
        else:
            hint += ": (nats / ln 2 + bits per code * codes per image) / values per image"
        require(near(want), hint)
    return correct(verbose, "Correct! Decoder bits plus prior bits, per dimension: the whole model's bound.")
