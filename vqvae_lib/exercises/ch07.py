"""Checks for chapter 7 (exploring the codebook): classroom exercises with the visualizers.

Each check compares the reader's function or prediction with what the library measures, prints
"Correct!" and returns True, or raises AssertionError with a hint.
"""
from __future__ import annotations

import functools
import math

import torch

from ..widgets.atlas import CodebookAtlasState
from ..widgets.base import single_threaded
from ..widgets.editor import decoder_reach
from ..widgets.kl import kl_quadrature
from ..widgets.playground import PlaygroundState
from ..widgets.sampler import PriorSamplerState

REMEDIES = ("ema", "kmeans_init", "restart")


@single_threaded
def check_dead_codes(fn, vqvae, images: torch.Tensor) -> bool:
    """fn(vqvae, images: (N, C, H, W)) -> the codes that occur in no cell of any image (any iterable of ints)."""
    out = fn(vqvae, images)
    assert out is not None, "your function returns None: return the list of unused code numbers"
    got = sorted(int(c) for c in (out.flatten().tolist() if torch.is_tensor(out) else out))
    state = CodebookAtlasState(vqvae, images)
    want = torch.nonzero(state.counts == 0).flatten().tolist()
    used = torch.nonzero(state.counts > 0).flatten().tolist()
    if got == used and want != used:
        raise AssertionError("those are the codes that ARE used; return the ones that never occur")
    assert len(got) == len(set(got)), "list each dead code once"
    assert got == want, (f"expected {len(want)} dead code(s), got {len(got)}. Encode all images with "
                         f"vqvae.encode(images) -> (N, h, w) and count with torch.bincount(..., minlength=K); "
                         f"the dead codes have count 0")
    print(f"Correct! {len(want)} of {state.num_codes} codes never occur in these {len(images)} images.")
    return True


def check_edit_reach(answer, vqvae) -> bool:
    """answer: how many pixels beyond an edited cell's own block the decoded image can change."""
    assert answer is not None, "set my_reach to a whole number of pixels"
    want = decoder_reach(vqvae)
    layers = vqvae.config["num_res_layers"]
    hint = (f"Count cells first: the decoder's 3x3 convolution and its {layers} residual 3x3 convolution(s) "
            f"each widen a change by one latent cell per side; then each 4x4 transposed convolution with "
            f"stride 2 doubles the extent and adds a pixel or two (output o = 2i - 1 + t, t = 0..3).")
    if int(answer) < want:
        raise AssertionError(f"{answer} is too small: pixels farther away than that change too. {hint}")
    if int(answer) > want:
        raise AssertionError(f"{answer} is too large: no pixel that far away can change. {hint}")
    print(f"Correct! An edit can reach {want} pixels beyond the cell's own "
          f"{vqvae.downsample}x{vqvae.downsample} block, in every direction.")
    return True


@functools.lru_cache(maxsize=4)  # seeded, so the same every time: compute once per session
@single_threaded
def remedy_history(checkpoints: tuple = (100,), num_points: int = 400, num_codes: int = 16) -> dict:
    """{steps: {toggle: codes used}} after each of the increasing step counts ``checkpoints``, from the
    bad init, with no remedy ("none") and with each remedy alone: one training run per toggle."""
    out = {steps: {} for steps in checkpoints}
    for name in ("none", *REMEDIES):
        state = PlaygroundState(num_points, num_codes, **({} if name == "none" else {name: True}))
        for steps in checkpoints:
            state.step(steps - state.steps)  # each step is seeded by its number: chunks change nothing
            out[steps][name] = state.codes_used
    return out


def remedy_outcomes(steps: int = 100, num_points: int = 400, num_codes: int = 16) -> dict:
    """Codes used after ``steps`` from the bad init, with no remedy and with each remedy alone."""
    return remedy_history((steps,), num_points, num_codes)[steps]


def check_remedies(answer) -> bool:
    """answer: the set of toggles ("ema", "kmeans_init", "restart") that, alone, bring the playground's
    codebook back from the bad init (at least 3/4 of the codes in use after 100 steps)."""
    assert answer is not None, f"set my_remedies to a set of names from {REMEDIES}"
    answer = {answer} if isinstance(answer, str) else set(answer)
    unknown = answer - set(REMEDIES)
    assert not unknown, f"unknown name(s) {sorted(unknown)}: choose from {REMEDIES}"
    outcome = dict(remedy_outcomes())
    works = {name for name in REMEDIES if outcome[name] >= 12}
    table = ", ".join(f"{name}: {outcome[name]}" for name in ("none", *REMEDIES))
    if answer != works:
        missing, extra = sorted(works - answer), sorted(answer - works)
        raise AssertionError(f"not quite. Codes used of 16 after 100 steps: {table}. "
                             + (f"Also a remedy: {missing}. " if missing else "")
                             + (f"Not a remedy on its own: {extra}. " if extra else "")
                             + "Ask of each toggle: does it move, within 100 steps, a code that no point chose?")
    print(f"Correct! Codes used of 16 after 100 steps: {table}.")
    return True


def check_commitment_kl(fn) -> bool:
    """fn(distance, s) -> KL(N(z_e, s^2) || N(e, s^2)) for ||z_e - e|| = distance (a float)."""
    cases = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (2.0, 0.5), (0.3, 0.2), (2.5, 1.5)]
    for d, s in cases:
        got = fn(d, s)
        assert got is not None, "your function returns None: return the KL as a number"
        want = kl_quadrature(d, s, 0.0, s)
        if math.isclose(float(got), d * d / s / s, rel_tol=1e-6) and d > 0:
            raise AssertionError("twice the KL: the Gaussian's exponent is -||x - mu||^2 / (2 s^2)")
        if math.isclose(float(got), d * d / (2 * s), rel_tol=1e-6) and d > 0 and s != 1:
            raise AssertionError("divide by the variance s^2, not by s")
        assert math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-9), (
            f"for distance {d} and s = {s} the KL (by numerical integration) is {want:.4f}, got {float(got):.4f}")
    print("Correct! KL = ||z_e - e||^2 / (2 s^2): the commitment loss is a KL divergence, scaled by 2 s^2.")
    return True


def distinct_codes(grids: torch.Tensor) -> float:
    """Mean number of different codes in a grid. grids: (n, h, w)."""
    return float(sum(len(g.unique()) for g in grids) / len(grids))


@single_threaded
def check_temperature(answer, vqvae, prior, grid_shape, num_samples: int = 16) -> bool:
    """answer: "fewer" or "more": does a LOW temperature (0.3) give fewer or more distinct codes
    per sample than a high one (1.5)?"""
    assert answer in ("fewer", "more"), 'set my_answer to "fewer" or "more"'
    state = PriorSamplerState(vqvae, prior, grid_shape, num_samples)
    low = distinct_codes(state.sample(0.3, seed=0)[1])
    high = distinct_codes(state.sample(1.5, seed=0)[1])
    truth = "fewer" if low < high else "more"
    numbers = f"distinct codes per sample: {low:.1f} at temperature 0.3, {high:.1f} at 1.5"
    assert answer == truth, (f"measured the other way: {numbers}. Dividing the logits by a small "
                             f"temperature sharpens each softmax towards its most likely code.")
    print(f"Correct! {numbers}.")
    return True
