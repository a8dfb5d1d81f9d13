"""Chapter 9's comparison: one quantizer of :data:`~vqvae_lib.quantizers.MATCHED_BITS` in the preset's VQ-VAE.

Every quantizer gets the same encoder and decoder (the preset's; only the 1x1 projections' widths follow the
quantizer's channels), the same number of codes, steps, seed and batches, and a PixelCNN prior of the same
size fitted to its codes. :func:`compare_quantizer` returns one row of the chapter's table.
"""
from __future__ import annotations

import copy
import time

import torch
from torch.utils.data import TensorDataset

from .data import get_batch
from .device import resolve_device
from .metrics import encode_dataset, evaluate_vqvae
from .recipes import build_prior, build_vqvae, matched_preset, train_settings
from .train import evaluate, train

TIMED_STEPS, WARMUP_STEPS = 10, 3  # training steps timed per quantizer, after the warm-up (first-call costs)


def ms_per_step(model, train_set, batch_size: int, device, steps: int = TIMED_STEPS) -> float:
    """Median wall time of one optimiser step (forward, backward, Adam) of a copy of ``model``, in ms."""
    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    idx = torch.arange(batch_size) % len(train_set)
    batch = get_batch(train_set, idx, device)
    times = []
    for _ in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        loss = model.training_step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times[WARMUP_STEPS:])[steps // 2]


def compare_quantizer(name: str, preset: dict, train_set, test_set, seed: int, device, cache=None,
                      progress: bool = True) -> dict:
    """Train the VQ-VAE with quantizer ``name`` and a prior on its codes; their test figures and step time.

    Returns {"nmse", "perplexity", "codes_used", "num_codes", "prior_bits_per_code", "ms_per_step", "model"}.
    """
    p, device = matched_preset(preset, name), resolve_device(device)
    budget = preset["quantizer_comparison"]
    settings = train_settings(p, "vqvae", budget["steps"])
    model = build_vqvae(p, train_set, seed)
    step_ms = ms_per_step(model, train_set, settings["batch_size"], device)
    train(model, train_set, **settings, seed=seed, device=device, cache=cache, progress=progress)
    figures = evaluate_vqvae(model, test_set, device=device)
    codes = {split: TensorDataset(encode_dataset(model, data, device=device), data.labels)
             for split, data in (("train", train_set), ("test", test_set))}
    prior = build_prior(p, model.quantizer.num_codes, num_classes=None, seed=seed)
    train(prior, codes["train"], **train_settings(p, "prior", budget["prior_steps"]), seed=seed, device=device,
          cache=cache, progress=progress)
    bits = evaluate(prior, codes["test"], device=device)["bits_per_code"]
    return {"nmse": figures["nmse"], "perplexity": figures["perplexity"], "codes_used": figures["codes_used"],
            "num_codes": model.quantizer.num_codes, "prior_bits_per_code": bits, "ms_per_step": step_ms,
            "model": model.eval()}
