"""Chapter 11's measurement: codebook usage against codebook size.

One VQ-VAE per (quantizer, K, seed): chapter 9's model, trained for ``preset["codebook_usage"]["steps"]`` steps with
one of the codebook quantizers of :data:`USAGE_QUANTIZERS` at K codes, and on the test split the fraction of the
K codes used, the perplexity and the NMSE. Beside them, a reference: the fraction that N positions drawn
independently and uniformly over the K codes would be expected to cover, 1 - (1 - 1/K)^N. It is not a bound (an
encoder is no random draw, and identical positions, blank background, must share a code), but it says how far
below full usage a count over N positions falls even for evenly spread draws.
"""
from __future__ import annotations

import math

from ..device import resolve_device
from ..evaluation.metrics import evaluate_vqvae
from ..training.train import train
from . import build_vqvae, matched_preset, train_settings

# the quantizers whose codes are free vectors (FSQ, LFQ and BSQ fix K by their levels or bits)
USAGE_QUANTIZERS = ("vq", "vq-remedies", "vq-cosine", "simvq", "ibq")


def uniform_coverage(num_codes: int, positions: int) -> float:
    """Expected fraction of ``num_codes`` codes used by ``positions`` draws uniform over them."""
    return 1 - math.exp(positions * math.log1p(-1 / num_codes)) if num_codes > 1 else 1.0


def usage_at(name: str, num_codes: int, preset: dict, train_set, test_set, seed: int, device=None, cache=None,
             progress: bool = False) -> dict:
    """Train the VQ-VAE with quantizer ``name`` (of :data:`USAGE_QUANTIZERS`) at ``num_codes`` codes.

    Returns {"fraction_used", "codes_used", "perplexity", "nmse", "uniform_coverage"} on the test split.
    """
    if name not in USAGE_QUANTIZERS:
        raise ValueError(f"usage is measured for {', '.join(USAGE_QUANTIZERS)}; got {name!r}")
    p = matched_preset(preset, name)
    p["vqvae"]["model"]["num_codes"] = num_codes
    model = build_vqvae(p, train_set, seed)
    settings = train_settings(p, "vqvae", preset["codebook_usage"]["steps"])
    train(model, train_set, **settings, seed=seed, device=resolve_device(device), cache=cache, progress=progress)
    figures = evaluate_vqvae(model, test_set, device=device)
    _, height, width = test_set.shape
    positions = len(test_set) * (height // model.config["downsample"]) * (width // model.config["downsample"])
    return {"fraction_used": figures["codes_used"] / num_codes, "codes_used": figures["codes_used"],
            "perplexity": figures["perplexity"], "nmse": figures["nmse"],
            "uniform_coverage": uniform_coverage(num_codes, positions)}
