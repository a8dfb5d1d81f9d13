"""Checks for chapter 7 (exploring the codebook): classroom exercises with the visualizers.

Each check follows the convention of :mod:`vqvae_lib.exercises`: ``check_<name>(answer, ..., verbose=True)``
compares the reader's answer with what the library measures on the models in front of them, prints
"Correct!" and returns True, or raises :class:`~vqvae_lib.exercises.Incorrect` with a hint. An answer
is the reader's function; a prediction (a number, a set of names, a word) is a function of no
arguments that returns it, so that every stub of the chapter is the same ``raise NotImplementedError``.

``check_dead_codes(fn, vqvae, images)``: ``fn(vqvae, images)`` -> the codes no image uses.
``check_edit_reach(fn, vqvae)``: ``fn(num_res_layers)`` -> how far an edit of one cell reaches, in pixels.
``check_remedies(fn)``: ``fn()`` -> the playground's toggles that, alone, revive a collapsed codebook.
``check_kl_from_distance(fn)``: ``fn(distance, s)`` -> KL(N(z_e, s^2) || N(e, s^2)) for ||z_e - e|| = distance.
``check_temperature(fn, vqvae, prior, grid_shape)``: ``fn()`` -> "fewer" or "more" distinct codes at a low T.
"""
from __future__ import annotations

import functools
import math
import numbers

import torch

from ..models.vqvae import VQVAE
from ..seeding import seeded
from ..widgets.atlas import CodebookAtlasState
from ..widgets.base import single_threaded
from ..widgets.editor import measured_reach
from ..widgets.kl import kl_quadrature
from ..widgets.playground import REMEDIES, PlaygroundState
from ..widgets.sampler import PriorSamplerState
from . import correct, require

REMEDY_NAMES = tuple(REMEDIES)  # ("ema", "kmeans_init", "restart_after"): the VectorQuantizer options
LOW_T, HIGH_T = 0.3, 1.5  # the temperatures the sampler exercise compares
REACH_DEPTHS = (0, 1, 2, 3)  # residual layers of the decoders the reach formula is tried on
# (distance, s) pairs for the KL: zero distance, s below, at and above 1, distances below and above s
KL_CASES = ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (2.0, 0.5), (0.3, 0.2), (2.5, 1.5))


def prediction(answer):
    """A prediction given as a function of no arguments (the notebook's stubs) or as the value itself."""
    return answer() if callable(answer) else answer


@single_threaded
def check_dead_codes(answer, vqvae, images: torch.Tensor, verbose: bool = True) -> bool:
    """answer(vqvae, images: (N, C, H, W)) -> the codes that occur in no cell of any image (any iterable of ints)."""
    out = answer(vqvae, images)
    require(out is not None, "your function returns None: return the list of unused code numbers")
    got = sorted(int(c) for c in (out.flatten().tolist() if torch.is_tensor(out) else out))
    state = CodebookAtlasState(vqvae, images)
    want = torch.nonzero(state.counts == 0).flatten().tolist()
    used = torch.nonzero(state.counts > 0).flatten().tolist()
    require(not (got == used and want != used), "those are the codes that ARE used; return the ones that never occur")
    require(len(got) == len(set(got)), "list each dead code once")
    require(got == want, f"expected {len(want)} dead code(s), got {len(got)}. Encode all images with "
                         f"vqvae.encode(images) -> (N, h, w) and count with torch.bincount(..., minlength=K); "
                         f"the dead codes have count 0")
    return correct(verbose, f"Correct! {len(want)} of {state.num_codes} codes never occur in these "
                            f"{len(images)} images.")


def decoder_like(vqvae, num_res_layers: int, seed: int = 0) -> VQVAE:
    """A small VQ-VAE with ``vqvae``'s downsampling and ``num_res_layers`` residual layers: the reach
    depends on the layers' kernels, strides and paddings only, not on the widths or the weights."""
    with seeded(seed):
        return VQVAE(num_codes=2, code_dim=2, hidden_channels=8, res_channels=4, num_res_layers=num_res_layers,
                     downsample=vqvae.downsample).eval()


def check_edit_reach(answer, vqvae, depths=REACH_DEPTHS, verbose: bool = True) -> bool:
    """answer(num_res_layers) -> how many pixels beyond an edited cell's own block the decoded image can
    change, for a decoder like ``vqvae``'s with that many residual layers. Compared with the reach
    *measured* (:func:`~vqvae_lib.widgets.editor.measured_reach`: change a latent cell, see which pixels
    move) on ``vqvae`` itself and on decoders of each depth in ``depths``."""
    layers = int(vqvae.config["num_res_layers"])
    models = {layers: vqvae, **{L: decoder_like(vqvae, L) for L in depths if L != layers}}
    hint = ("Count cells first: the decoder's 3x3 convolution and each residual layer's 3x3 convolution "
            "widen a change by one latent cell per side; then each 4x4 transposed convolution with stride 2 "
            "doubles the extent and adds a pixel or two (output o = 2i - 1 + t, t = 0..3).")
    for L in sorted(models):
        got = answer(L)
        require(got is not None, "your function returns None: return a whole number of pixels")
        require(isinstance(got, numbers.Real) and float(got).is_integer(),
                f"a reach is a whole number of pixels, got {got!r} for L = {L}")
        want = measured_reach(models[L])
        require(int(got) >= want, f"{int(got)} for L = {L} is too small: pixels farther away than that change "
                                  f"too (measured: {want}). {hint}")
        require(int(got) <= want, f"{int(got)} for L = {L} is too large: no pixel that far away changes "
                                  f"(measured: {want}). {hint}")
    block = vqvae.downsample
    return correct(verbose, f"Correct! With this model's L = {layers}, an edit can reach {answer(layers)} pixels "
                            f"beyond the cell's own {block}x{block} block in every direction, as measured.")


@functools.lru_cache(maxsize=4)  # seeded, so the same every time: compute once per session
@single_threaded
def remedy_history(checkpoints: tuple = (100,), num_points: int = 400, num_codes: int = 16) -> dict:
    """{steps: {remedy: codes used}} after each of the increasing step counts ``checkpoints``, from the
    bad init, with no remedy ("none") and with each of :data:`REMEDY_NAMES` alone: one run per remedy."""
    out = {steps: {} for steps in checkpoints}
    for name in ("none", *REMEDY_NAMES):
        state = PlaygroundState(num_points, num_codes, **REMEDIES.get(name, {}))
        for steps in checkpoints:
            state.step(steps - state.steps)  # each step's draws are seeded by its number: chunks change nothing
            out[steps][name] = state.codes_used
    return out


def remedy_outcomes(steps: int = 100, num_points: int = 400, num_codes: int = 16) -> dict:
    """Codes used after ``steps`` from the bad init, with no remedy and with each remedy alone."""
    return remedy_history((steps,), num_points, num_codes)[steps]


def working_remedies(steps: int = 100, num_points: int = 400, num_codes: int = 16, fraction: float = 0.75) -> set:
    """The remedies that, alone, have at least ``fraction`` of the ``num_codes`` codes in use after ``steps``."""
    outcome = remedy_outcomes(steps, num_points, num_codes)
    return {name for name in REMEDY_NAMES if outcome[name] >= math.ceil(fraction * num_codes)}


def check_remedies(answer, steps: int = 100, num_points: int = 400, num_codes: int = 16, fraction: float = 0.75,
                   verbose: bool = True) -> bool:
    """answer() -> the set of remedies (names from :data:`REMEDY_NAMES`) that, each alone, bring the
    playground's codebook back from the bad init: at least ``fraction`` of the ``num_codes`` codes in
    use after ``steps`` training steps."""
    names = prediction(answer)
    require(names is not None, f"return a set of names from {REMEDY_NAMES}")
    names = {names} if isinstance(names, str) else set(names)
    unknown = names - set(REMEDY_NAMES)
    require(not unknown, f"unknown name(s) {sorted(unknown)}: choose from {REMEDY_NAMES}")
    outcome = remedy_outcomes(steps, num_points, num_codes)
    works = working_remedies(steps, num_points, num_codes, fraction)
    table = ", ".join(f"{name}: {outcome[name]}" for name in ("none", *REMEDY_NAMES))
    missing, extra = sorted(works - names), sorted(names - works)
    require(names == works, f"not quite. Codes used of {num_codes} after {steps} steps: {table}. "
                            + (f"Also a remedy: {missing}. " if missing else "")
                            + (f"Not a remedy on its own: {extra}. " if extra else "")
                            + f"Ask of each toggle: does it move, within {steps} steps, a code that no point chose?")
    return correct(verbose, f"Correct! Codes used of {num_codes} after {steps} steps: {table}.")


def check_kl_from_distance(answer, cases=KL_CASES, rel_tol: float = 1e-6, verbose: bool = True) -> bool:
    """answer(distance, s) -> KL(N(z_e, s^2) || N(e, s^2)) for ||z_e - e|| = distance (a float), compared
    with the KL integrated numerically (:func:`~vqvae_lib.widgets.kl.kl_quadrature`) for each (distance, s)
    of ``cases``, to a relative tolerance ``rel_tol``."""
    for d, s in cases:
        got = answer(d, s)
        require(got is not None, "your function returns None: return the KL as a number")
        got, want = float(got), kl_quadrature(d, s, 0.0, s)
        require(not (d > 0 and math.isclose(got, 2 * want, rel_tol=rel_tol)),
                "twice the KL: the Gaussian's exponent is -||z - mu||^2 / (2 s^2)")
        require(not (d > 0 and s != 1 and math.isclose(got, want * s, rel_tol=rel_tol)),
                "divide by the variance s^2, not by s")
        require(math.isclose(got, want, rel_tol=rel_tol, abs_tol=rel_tol),  # abs_tol: for the KL of 0 at d = 0
                f"for distance {d} and s = {s} the KL (by numerical integration) is {want:.4f}, got {got:.4f}")
    return correct(verbose, "Correct! KL = ||z_e - e||^2 / (2 s^2): the commitment loss is a KL divergence, "
                            "scaled by 2 s^2.")


def distinct_codes(grids: torch.Tensor) -> float:
    """Mean number of different codes in a grid. grids: (n, h, w)."""
    return float(sum(len(g.unique()) for g in grids) / len(grids))


@single_threaded
def distinct_codes_at(vqvae, prior, grid_shape, temperatures=(LOW_T, HIGH_T), num_samples: int = 16,
                      seed: int = 0) -> dict:
    """{temperature: mean distinct codes per sampled grid}, the same ``seed`` at every temperature."""
    state = PriorSamplerState(vqvae, prior, grid_shape, num_samples)
    return {T: distinct_codes(state.sample(T, seed=seed)[1]) for T in temperatures}


def check_temperature(answer, vqvae, prior, grid_shape, low: float = LOW_T, high: float = HIGH_T,
                      num_samples: int = 16, verbose: bool = True) -> bool:
    """answer() -> "fewer" or "more": does the temperature ``low`` give fewer or more distinct codes per
    sample than ``high``? Measured on ``num_samples`` grids from ``prior`` at each."""
    word = prediction(answer)
    require(word in ("fewer", "more"), 'return "fewer" or "more"')
    counts = distinct_codes_at(vqvae, prior, grid_shape, (low, high), num_samples)
    truth = "fewer" if counts[low] < counts[high] else "more"
    numbers = f"distinct codes per sample: {counts[low]:.1f} at temperature {low}, {counts[high]:.1f} at {high}"
    require(word == truth, f"measured the other way: {numbers}. Dividing the logits by a small "
                           f"temperature sharpens each softmax towards its most likely code.")
    return correct(verbose, f"Correct! {numbers}.")
