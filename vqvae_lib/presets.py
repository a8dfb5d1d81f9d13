"""Run-size presets: one switch sets model sizes, steps and batch sizes for every chapter.

``ci``: what CI runs (seconds on 2 CPU cores); ``cpu``: a laptop in class (minutes);
``gpu``: Colab / a CUDA machine. Pick with ``get_preset("cpu")`` or the ``VQVAE_PRESET``
environment variable; the default is ``gpu`` when CUDA is available, else ``cpu``.

``VQVAE_SMOKE=1`` keeps every size of the chosen preset and cuts every step budget and sample count to a
few (:func:`smoke`): ``VQVAE_PRESET=gpu VQVAE_SMOKE=1`` runs a chapter with the ``gpu`` sizes on a CPU in
seconds to minutes, which catches the shape, memory-layout and dtype errors of the Colab path (`make smoke`).
"""
from __future__ import annotations

import copy
import os

import torch

# The ci and cpu presets share one VQ-VAE (cpu trains it twice as long: wider networks at this step
# budget trained worse). A checkpoint every CHECKPOINT_EVERY steps lets a long run resume.
SMALL_VQVAE = dict(num_codes=64, code_dim=16, hidden_channels=32, res_channels=16, num_res_layers=1,
                   quantizer=dict(kmeans_init=True, restart_after=20))
CHECKPOINT_EVERY = 500
# The digit classifier whose features the Fréchet distance of chapter 8 uses: the same network in every
# preset, so its features mean the same thing; ci's budget trains it in about 10 s on one CPU thread.
CLASSIFIER = dict(channels=16, feature_dim=64)

# The priors after the PixelCNN (``train-prior --kind``): each at about the PixelCNN's parameter count in
# its preset (K=64 codes and 10 classes for ci and cpu, K=512 for gpu; ci's transformers: about 4/5 of it,
# see CI_TRANSFORMER), with the PixelCNN's training budget. The PixelCNN's own settings are "prior"'s
# "model" and "train". Every prior's learning rate falls linearly over the last PRIOR_LR_DECAY of its steps:
# at ci's budget that took the Fréchet ratio of chapter 8's 500 samples (to uniform codes) from 0.26-0.32 to
# 0.23-0.25 for the transformer (seeds 0-2) and from 0.27-0.32 to 0.26 for the PixelCNN (seeds 0-1), at no
# extra cost; the test bits per code moved by at most 0.04.
PRIOR_LR_DECAY = 0.3
# chapters 8 and 9's time per training step: the median of this many steps (training.train.ms_per_step)
TIMED_STEPS = 5
# ci's transformer and MaskGIT, sized for 2 CPU threads, each choice measured side by side at ci's budget:
# - 2 heads of 32 channels, not 4 of 16 (the same parameters): PyTorch's fused CPU attention kernel ran no
#   faster on 2 threads than on one, and fewer, wider heads took a training step from 55 to 48 ms (transformer)
#   and 58 to 45 ms (MaskGIT); the transformer's Fréchet ratio over seeds 0-2, 3 draws each, was 0.242 either way.
# - 2 blocks, not 3 (109k parameters, not 159k): the third did not help in 300 steps (transformer, seeds 0-2:
#   test bits per code 2.628 / 2.622 / 2.590 against 2.624 / 2.622 / 2.629, Fréchet ratio mean 0.244 against
#   0.248; MaskGIT seed 0: 0.62 against 0.65) and cost a third of the training time (9.0 against 12.9 s).
CI_TRANSFORMER = dict(embed_dim=64, num_layers=2, num_heads=2)

# Chapter 10's colour images: the VQ-VAE trained alone for shared_steps, then on for vqgan["steps"] as a VQ-VAE and
# as a VQGAN (vqvae_lib/recipes/colour.py); two small classifiers on the images' labels, one for the VQGAN's
# perceptual term, one (wider, another seed) for the Fréchet distance. ci's discriminator is 16 channels wide: at
# 64 (taming's) one VQGAN step cost 20 VQ-VAE steps on a CPU core.
COLOUR_CLASSIFIERS = {"perceptual": {"model": dict(channels=8, feature_dim=32),
                                     "train": dict(steps=300, batch_size=64, lr=2e-3)},
                      "evaluation": {"model": dict(channels=16, feature_dim=64),
                                     "train": dict(steps=400, batch_size=64, lr=2e-3)}}
CI_COLOUR = {
    "data": "emoji", "image_size": 32, "seeds": [0, 1],
    "vqvae": {"model": dict(num_codes=128, code_dim=16, hidden_channels=32, res_channels=16, num_res_layers=1,
                            quantizer=dict(kmeans_init=True, restart_after=20)),
              "train": dict(batch_size=64, lr=2e-3)},
    "shared_steps": 600,
    "vqgan": dict(steps=200, batch_size=64, lr=5e-4, disc_weight=0.8, perceptual_weight=1.0,
                  discriminator=dict(channels=16, num_layers=2)),
    "classifiers": COLOUR_CLASSIFIERS,
    "prior": {"model": dict(CI_TRANSFORMER, max_height=8, max_width=8),
              "train": dict(steps=300, batch_size=64, lr=3e-3, lr_decay=PRIOR_LR_DECAY)},
    "samples": 64,
}

# cpu keeps ci's prior: the cpu digits' transformer (96 wide, 6 blocks, 1,500 steps) reached 6.34 test bits per
# code on these codes (uniform: 7), against 2.81 for ci's on ci's: 1,703 training grids are too few for it.
CPU_COLOUR = {**CI_COLOUR, "seeds": [0, 1, 2], "shared_steps": 2000, "vqgan": {**CI_COLOUR["vqgan"], "steps": 600}}
# gpu: CIFAR-10 (the Hub) with Sonnet's example VQ-VAE (after the paper's, with 128 rather than 256 hidden channels:
# K = 512, D = 64, EMA codebook, 8 x 8 codes; its notebook trains 10,000 steps at batch 32 and lr 3e-4) and
# taming's 64-wide discriminator.
GPU_COLOUR = {
    "data": "cifar10", "image_size": 32, "seeds": [0, 1, 2],
    "vqvae": {"model": dict(num_codes=512, code_dim=64, hidden_channels=128, res_channels=32, num_res_layers=2,
                            quantizer=dict(ema=True)),
              "train": dict(batch_size=128, lr=3e-4)},
    "shared_steps": 20000,
    "vqgan": dict(steps=5000, batch_size=128, lr=1e-4, disc_weight=0.8, perceptual_weight=1.0,
                  discriminator=dict(channels=64, num_layers=2)),
    "classifiers": {role: {"model": c["model"], "train": {**c["train"], "steps": 3000}}
                    for role, c in COLOUR_CLASSIFIERS.items()},
    "prior": {"model": dict(embed_dim=192, num_layers=9, num_heads=6, max_height=8, max_width=8),
              "train": dict(steps=10000, batch_size=128, lr=5e-4, lr_decay=PRIOR_LR_DECAY)},
    "samples": 64,
}

PRESETS = {
    "ci": {
        "data": "mnist-5k",
        "vqvae": {"model": SMALL_VQVAE,
                  "train": dict(steps=1500, batch_size=64, lr=2e-3, checkpoint_every=CHECKPOINT_EVERY)},
        "prior": {"model": dict(hidden_channels=32, num_layers=6),
                  "train": dict(steps=300, batch_size=64, lr=3e-3, lr_decay=PRIOR_LR_DECAY),
                  "transformer": {"model": CI_TRANSFORMER,
                                  "train": dict(steps=300, batch_size=64, lr=3e-3, lr_decay=PRIOR_LR_DECAY)},
                  "maskgit": {"model": CI_TRANSFORMER,
                              "train": dict(steps=300, batch_size=64, lr=3e-3, lr_decay=PRIOR_LR_DECAY)}},
        "vae": {"model": dict(latent_dim=16, hidden_channels=16), "train": dict(steps=300, batch_size=64, lr=2e-3)},
        # the chapters' side-by-side VQ-VAE runs: chapter 2's collapse remedies, chapters 3-4's comparisons
        "experiments": dict(remedy_steps=400, comparison_steps=600),
        # chapter 8: samples per prior for the Fréchet distances and for the naive-against-cached timing, and
        # the test grids of MaskGIT's exact raster-order likelihood (T passes per grid; the split has 500)
        "prior_comparison": dict(samples=500, timing_samples=32, likelihood_grids=128, random_order_draws=4,
                                 timed_steps=TIMED_STEPS),
        "classifier": {"model": CLASSIFIER, "train": dict(steps=300, batch_size=64, lr=2e-3)},
        # chapter 9: every quantizer's VQ-VAE and the prior on its codes, per seed
        "quantizer_comparison": dict(steps=250, prior_steps=50, seeds=[0, 1, 2], timed_steps=TIMED_STEPS),
        # chapter 11: codes used against codebook size, in chapter 9's model (the test split has 24,500 code
        # positions: at K = 4,096, independent uniform draws would cover 99.75 % of the codes). 60 steps, not
        # chapter 9's 250: at K = 4,096 one IBQ step costs about 4 VQ steps, and `make test` runs the chapter
        "codebook_usage": dict(steps=60, num_codes=[64, 512, 4096], seeds=[0, 1]),
        "colour": CI_COLOUR,
    },
    "cpu": {
        "data": "mnist-5k",
        "vqvae": {"model": SMALL_VQVAE,
                  "train": dict(steps=3000, batch_size=64, lr=2e-3, checkpoint_every=CHECKPOINT_EVERY)},
        "prior": {"model": dict(hidden_channels=64, num_layers=8),
                  "train": dict(steps=1500, batch_size=64, lr=2e-3, lr_decay=PRIOR_LR_DECAY),
                  "transformer": {"model": dict(embed_dim=96, num_layers=6, num_heads=4),
                                  "train": dict(steps=1500, batch_size=64, lr=1e-3, lr_decay=PRIOR_LR_DECAY)},
                  "maskgit": {"model": dict(embed_dim=96, num_layers=6, num_heads=4),
                              "train": dict(steps=1500, batch_size=64, lr=1e-3, lr_decay=PRIOR_LR_DECAY)}},
        "vae": {"model": dict(latent_dim=16, hidden_channels=32), "train": dict(steps=1500, batch_size=64, lr=2e-3)},
        "experiments": dict(remedy_steps=1500, comparison_steps=1500),
        "prior_comparison": dict(samples=500, timing_samples=64, likelihood_grids=500, random_order_draws=16,
                                 timed_steps=TIMED_STEPS),
        "classifier": {"model": CLASSIFIER, "train": dict(steps=600, batch_size=64, lr=2e-3)},
        # 600 + 300 steps: at 1,500 + 600 chapter 9 ran past 30 minutes on 2 cores (benchmarks/chapter_times.py)
        "quantizer_comparison": dict(steps=600, prior_steps=300, seeds=[0, 1, 2], timed_steps=TIMED_STEPS),
        "codebook_usage": dict(steps=200, num_codes=[64, 512, 4096, 8192], seeds=[0, 1, 2]),
        "colour": CPU_COLOUR,
    },
    "gpu": {
        "data": "mnist-5k",
        "vqvae": {"model": dict(num_codes=512, code_dim=64, hidden_channels=128, res_channels=32, num_res_layers=2,
                                quantizer=dict(ema=True, kmeans_init=True, restart_after=100)),
                  "train": dict(steps=10000, batch_size=128, lr=3e-4, checkpoint_every=CHECKPOINT_EVERY)},
        "prior": {"model": dict(hidden_channels=128, num_layers=12),
                  "train": dict(steps=10000, batch_size=128, lr=1e-3, lr_decay=PRIOR_LR_DECAY),
                  "transformer": {"model": dict(embed_dim=192, num_layers=9, num_heads=6),
                                  "train": dict(steps=10000, batch_size=128, lr=5e-4, lr_decay=PRIOR_LR_DECAY)},
                  "maskgit": {"model": dict(embed_dim=192, num_layers=9, num_heads=6),
                              "train": dict(steps=10000, batch_size=128, lr=5e-4, lr_decay=PRIOR_LR_DECAY)}},
        "vae": {"model": dict(latent_dim=32, hidden_channels=64), "train": dict(steps=5000, batch_size=128, lr=1e-3)},
        "experiments": dict(remedy_steps=3000, comparison_steps=5000),
        "prior_comparison": dict(samples=500, timing_samples=64, likelihood_grids=500, random_order_draws=16,
                                 timed_steps=TIMED_STEPS),
        "classifier": {"model": CLASSIFIER, "train": dict(steps=600, batch_size=64, lr=2e-3)},
        "quantizer_comparison": dict(steps=5000, prior_steps=3000, seeds=[0, 1, 2], timed_steps=TIMED_STEPS),
        "codebook_usage": dict(steps=2000, num_codes=[64, 1024, 4096, 16384], seeds=[0, 1, 2]),
        "colour": GPU_COLOUR,
    },
}


# What a smoke run keeps of each budget (VQVAE_SMOKE=1): enough steps for an evaluation and a learning-rate
# decay to happen, enough samples for a batch statistic (a Fréchet distance needs a covariance).
SMOKE_STEPS = 4
SMOKE_SAMPLES = 16
SMOKE_REPEATS = 1  # a timing's steps, the random-order bound's draws per grid: one shows the code runs
STEP_BUDGETS = ("steps", "remedy_steps", "comparison_steps", "prior_steps", "shared_steps")
SAMPLE_COUNTS = ("samples", "timing_samples", "likelihood_grids")
REPEATS = ("timed_steps", "random_order_draws")


def smoke(preset: dict) -> dict:
    """``preset`` with every step budget cut to SMOKE_STEPS, every sample count to SMOKE_SAMPLES, every repeat to
    SMOKE_REPEATS, the seeds to the first and a list of codebook sizes to its largest (the one whose memory a GPU
    must hold); model sizes and batch sizes unchanged."""
    def cut(node):
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key in STEP_BUDGETS:
                value = min(value, SMOKE_STEPS)
            elif key in SAMPLE_COUNTS:
                value = min(value, SMOKE_SAMPLES)
            elif key in REPEATS:
                value = min(value, SMOKE_REPEATS)
            elif key == "seeds":
                value = value[:1]
            elif key == "num_codes" and isinstance(value, list):  # chapter 11's sweep
                value = value[-1:]
            out[key] = cut(value)
        return out

    return {**cut(preset), "smoke": True}


def smoke_requested() -> bool:
    value = os.environ.get("VQVAE_SMOKE", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"VQVAE_SMOKE is 1 (a smoke run) or 0 / unset; got {value!r}")
    return value == "1"


def default_preset_name() -> str:
    name = os.environ.get("VQVAE_PRESET") or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (from VQVAE_PRESET); choose one of {sorted(PRESETS)}")
    return name


def get_preset(name: str | None = None) -> dict:
    """A copy of the named preset (default: ``VQVAE_PRESET``, else gpu/cpu by hardware), with its name;
    cut to a smoke run's budgets when ``VQVAE_SMOKE=1``."""
    name = name or default_preset_name()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = {"name": name, **copy.deepcopy(PRESETS[name])}
    return smoke(preset) if smoke_requested() else preset
