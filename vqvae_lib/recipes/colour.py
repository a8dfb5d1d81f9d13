"""Chapter 10's runs on colour images: one VQ-VAE, then two ways to go on training it.

:func:`compare_vqgan` trains the preset's colour VQ-VAE for ``shared_steps`` (the same run for both arms), then
goes on from those weights for ``steps`` more with the same optimiser and batches in two ways: as a VQ-VAE (the
adversarial and perceptual terms off) and as a VQGAN (both on). The arms differ only in the two added terms, so
a difference in their test figures is the terms' effect at this budget (taming switches its perceptual term on
from the start and its discriminator later; here both switch on together, after the shared run).
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from ..data import ImageDataset, load_images
from ..device import resolve_device
from ..evaluation.metrics import encode_dataset, evaluate_vqvae
from ..evaluation.sample_quality import DigitClassifier, frechet_to_data
from ..evaluation.spectrum import high_frequency_energy_ratio
from ..models.vqgan import VQGAN, train_vqgan
from ..seeding import generator, seeded
from ..training.train import train
from . import build_vqvae

ARMS = ("vqvae", "vqgan")
NOISE_CONTROL = "vqvae+noise"
NOISE_STREAM = 10  # generator(seed, NOISE_STREAM): the control's noise, a stream of its own


def colour_preset(preset: dict) -> dict:
    """The preset with its colour section's VQ-VAE in place of the digits' (for :func:`build_vqvae` and friends)."""
    return {**preset, "vqvae": preset["colour"]["vqvae"]}


def load_colour(preset: dict, split: str) -> ImageDataset:
    """The preset's colour images (``preset["colour"]["data"]``, at its ``image_size``): an ImageDataset."""
    c = preset["colour"]
    return load_images(c["data"], split, image_size=c["image_size"], limit=c.get("limit", {}).get(split))


def train_colour_classifier(preset: dict, train_set: Dataset, role: str, seed: int, device=None, cache=None,
                            progress: bool = False) -> DigitClassifier:
    """A DigitClassifier on the colour images' labels, sized by ``preset["colour"]["classifiers"][role]``.

    role: "perceptual" (the VQGAN's feature network) or "evaluation" (the Fréchet distance's). Two networks,
    of different widths and seeds, so that the VQGAN is not scored in the very features it was trained on.
    """
    settings = preset["colour"]["classifiers"][role]
    with seeded(seed):
        model = DigitClassifier(in_channels=train_set.shape[0], num_classes=train_set.num_classes,
                                **settings["model"])
    train(model, train_set, **settings["train"], seed=seed, device=device, cache=cache, progress=progress)
    return model.eval()


def reconstructions(model, dataset: Dataset, device=None) -> torch.Tensor:
    """Every image of ``dataset`` through ``model`` (a VQ-VAE or a VQGAN), clamped to [0, 1]: (N, C, H, W)."""
    device = resolve_device(device)
    codes = encode_dataset(model, dataset, device=device)
    return model.decode_indices(codes.to(device)).clamp(0, 1).cpu()


def image_figures(images: torch.Tensor, test_set: ImageDataset, evaluator: DigitClassifier, device=None) -> dict:
    """images: (N, C, H, W) in [0, 1], one per test image -> their NMSE against the test images, the Fréchet
    distance to them in ``evaluator``'s features, and the high-frequency energy ratio
    (:mod:`vqvae_lib.evaluation.spectrum`)."""
    originals = test_set.images.float() / 255
    return {"nmse": float(((images - originals) ** 2).mean()) / test_set.variance(),
            "frechet": frechet_to_data(evaluator, images, originals, device=device),
            "hf_ratio": high_frequency_energy_ratio(images, originals)}


def arm_figures(model, test_set: ImageDataset, evaluator: DigitClassifier, device=None) -> dict:
    """The test figures of a VQ-VAE or VQGAN: :func:`image_figures` of its reconstructions (clamped to [0, 1], as
    displayed, for all three measures), its perplexity and codes used."""
    usage = evaluate_vqvae(model, test_set, device=device)
    return {**image_figures(reconstructions(model, test_set, device), test_set, evaluator, device),
            "perplexity": usage["perplexity"], "codes_used": usage["codes_used"]}


def noise_control(model, test_set: ImageDataset, target_nmse: float, evaluator: DigitClassifier, seed: int,
                  device=None) -> dict:
    """:func:`image_figures` of ``model``'s reconstructions plus Gaussian noise whose variance, target_nmse minus
    their own NMSE times the data's variance, brings their NMSE to about ``target_nmse`` (clamping to [0, 1] then
    takes a little off). A control: what noise alone, at the VQGAN's NMSE, does to the other two measures."""
    recon = reconstructions(model, test_set, device)
    extra = max(target_nmse - image_figures(recon, test_set, evaluator, device)["nmse"], 0.0)
    noise = torch.randn(recon.shape, generator=generator(seed, NOISE_STREAM)) * math.sqrt(extra * test_set.variance())
    return image_figures((recon + noise).clamp(0, 1), test_set, evaluator, device)


def compare_vqgan(preset: dict, train_set: ImageDataset, test_set: ImageDataset, seed: int,
                  perceptual, evaluator: DigitClassifier, device=None, cache=None, progress: bool = True) -> dict:
    """Both arms of the chapter's comparison from one seed, and the noise control.

    Returns {"vqvae": figures, "vqgan": figures, "vqvae+noise": figures, "models": {arm: model},
    "histories": {arm: History}}: :func:`arm_figures` of each arm after ``shared_steps + steps`` steps in all, and
    :func:`noise_control` of the VQ-VAE arm at the VQGAN arm's NMSE. perceptual: a :class:`PerceptualLoss`, or
    ``lpips_loss()`` from :mod:`vqvae_lib.models.vqgan` (LPIPS runs are trained, not cached).
    """
    c, device = preset["colour"], resolve_device(device)
    shared = build_vqvae(colour_preset(preset), train_set, seed)
    train(shared, train_set, **{**c["vqvae"]["train"], "steps": c["shared_steps"]}, seed=seed, device=device,
          cache=cache, progress=progress)
    g = c["vqgan"]
    models, histories = {}, {}
    for arm in ARMS:
        gan = arm == "vqgan"
        with seeded(seed):  # the discriminator's initial weights
            models[arm] = VQGAN.from_vqvae(shared, discriminator=g["discriminator"], disc_weight=g["disc_weight"],
                                           perceptual_weight=g["perceptual_weight"] if gan else 0.0,
                                           disc_start=0 if gan else g["steps"])
        # seed + 1: batches other than the shared run's first ones
        histories[arm] = train_vqgan(models[arm], train_set, steps=g["steps"], batch_size=g["batch_size"],
                                     lr=g["lr"], perceptual=perceptual if gan else None, seed=seed + 1,
                                     device=device, cache=cache, progress=progress)
    figures = {arm: arm_figures(models[arm], test_set, evaluator, device) for arm in ARMS}
    figures[NOISE_CONTROL] = noise_control(models["vqvae"], test_set, figures["vqgan"]["nmse"], evaluator, seed,
                                           device)
    return {**figures, "models": models, "histories": histories}


SPREAD_COLUMNS = ("nmse", "frechet", "hf_ratio")
TABLE_COLUMNS = ("nmse", "frechet", "hf_ratio", "perplexity")


def summarise(runs: dict, labels: dict):
    """{seed: :func:`compare_vqgan` result} -> (table, summary), pandas DataFrames: one row per (label, seed),
    and per label the mean over seeds with the spread (largest minus smallest) beside each of SPREAD_COLUMNS.

    labels: {row key ("vqvae", "vqgan", NOISE_CONTROL): the name the tables show}; a row's missing figure
    (the control has no perplexity) is NaN.
    """
    import pandas as pd

    table = pd.DataFrame({(labels[row], seed): {c: run[row].get(c, math.nan) for c in TABLE_COLUMNS}
                          for seed, run in runs.items() for row in labels}).T
    table.index.names = ["", "seed"]
    by_row = table.groupby(level=0, sort=False)
    summary = by_row.mean()
    for c in SPREAD_COLUMNS:
        summary.insert(summary.columns.get_loc(c) + 1, f"{c}_spread", by_row[c].agg(lambda s: s.max() - s.min()))
    return table, summary
