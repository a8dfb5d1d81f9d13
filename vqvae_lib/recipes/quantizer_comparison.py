"""Chapters 9 and 11's comparison: one quantizer of :data:`~vqvae_lib.quantizers.ALL_MATCHED` in the preset's VQ-VAE.

Every quantizer gets the same encoder and decoder (the preset's; only the 1x1 projections' widths follow the
quantizer's channels), the same number of codes, steps, seed and batches, and a PixelCNN prior of the same
size fitted to its codes. :func:`compare_quantizer` returns one row of the chapter's table. Beside the prior's bits
per code it reports the unigram's (each code at its training frequency, no context): a short-trained prior that
has learnt little more than the frequencies scores close to it.
"""
from __future__ import annotations

import math

from torch.utils.data import TensorDataset

from ..device import resolve_device
from ..evaluation.bound import unigram_nats_per_image
from ..evaluation.metrics import encode_dataset, evaluate_vqvae
from ..training.train import evaluate, ms_per_step, train
from . import build_prior, build_vqvae, matched_preset, train_settings


def compare_quantizer(name: str, preset: dict, train_set, test_set, seed: int, device, cache=None,
                      progress: bool = True) -> dict:
    """Train the VQ-VAE with quantizer ``name`` and a prior on its codes; their test figures and step time.

    Returns {"nmse", "perplexity", "codes_used", "num_codes", "prior_bits_per_code", "unigram_bits_per_code",
    "ms_per_step", "model"}.
    """
    p, device = matched_preset(preset, name), resolve_device(device)
    budget = preset["quantizer_comparison"]
    settings = train_settings(p, "vqvae", budget["steps"])
    model = build_vqvae(p, train_set, seed)
    step_ms = ms_per_step(model, train_set, settings["batch_size"], device, budget["timed_steps"])
    train(model, train_set, **settings, seed=seed, device=device, cache=cache, progress=progress)
    figures = evaluate_vqvae(model, test_set, device=device)
    codes = {split: TensorDataset(encode_dataset(model, data, device=device), data.labels)
             for split, data in (("train", train_set), ("test", test_set))}
    prior = build_prior(p, model.quantizer.num_codes, num_classes=None, seed=seed)
    train(prior, codes["train"], **train_settings(p, "prior", budget["prior_steps"]), seed=seed, device=device,
          cache=cache, progress=progress)
    bits = evaluate(prior, codes["test"], device=device)["bits_per_code"]
    grids = {split: data.tensors[0].cpu() for split, data in codes.items()}
    unigram = unigram_nats_per_image(grids["train"], grids["test"], model.quantizer.num_codes)
    unigram_bits = float(unigram.mean()) / (grids["test"][0].numel() * math.log(2))
    return {"nmse": figures["nmse"], "perplexity": figures["perplexity"], "codes_used": figures["codes_used"],
            "num_codes": model.quantizer.num_codes, "prior_bits_per_code": bits,
            "unigram_bits_per_code": unigram_bits, "ms_per_step": step_ms,
            "model": model.eval()}
