"""Training recipes: (preset, data set, seed) -> a trained model, the same in every process.

Each recipe seeds before it builds anything (:func:`vqvae_lib.seeding.seeded`), so the same preset,
data and seed give bitwise-identical weights on the CPU (with the same torch version and number of CPU
threads: the threads split the convolutions' sums differently), whether a chapter trains the model, a
later chapter reuses it, or the command line trains it. ``trained_vqvae`` / ``trained_prior`` reuse a run
saved under ``root`` when its recipe (preset settings, data, seed) matches, and train it otherwise.
Under ``torchrun`` the recipes train data-parallel (:mod:`vqvae_lib.distributed`); only rank 0 writes.

A prior is one of :data:`PRIOR_KINDS` ("pixelcnn", the default, "transformer", "maskgit"); the preset's
PixelCNN settings are ``preset["prior"]``'s "model" and "train", another kind's are ``preset["prior"][kind]``.
Every prior's model settings include its ``label_dropout`` (the library's default unless the preset sets
one), so a class-conditional prior also learns the null class that ``sample`` without labels draws from.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from .. import distributed
from ..checkpoint import CONFIG_NAME, read_json
from ..data import iter_batches, load_images
from ..device import resolve_device
from ..evaluation.metrics import encode_dataset, evaluate_vqvae
from ..models.vqvae import VQVAE
from ..presets import get_preset
from ..priors.base import DEFAULT_LABEL_DROPOUT
from ..priors.maskgit import MaskedPrior
from ..priors.pixelcnn import GatedPixelCNN
from ..priors.transformer import TransformerPrior
from ..quantizers import with_quantizer
from ..seeding import seeded
from ..training.train import evaluate, train

DEFAULT_SEED = 0
DEFAULT_PRIOR = "pixelcnn"
EVAL_BATCH_SIZE = 256  # as train.evaluate's
PRIOR_KINDS = {"pixelcnn": GatedPixelCNN, "transformer": TransformerPrior, "maskgit": MaskedPrior}


def matched_preset(preset: dict, quantizer: str) -> dict:
    """``preset`` with chapter 9's or 11's 6-bit quantizer ``quantizer`` (:data:`~vqvae_lib.quantizers.ALL_MATCHED`)
    in its VQ-VAE."""
    return {**preset, "vqvae": {**preset["vqvae"], "model": with_quantizer(preset["vqvae"]["model"], quantizer)}}


def build_vqvae(preset: dict, train_set, seed: int = DEFAULT_SEED) -> VQVAE:
    """The preset's untrained VQ-VAE for ``train_set``'s images, its initial weights drawn from ``seed``."""
    cfg = preset["vqvae"]["model"]
    with seeded(seed):
        return VQVAE(in_channels=train_set.shape[0], data_variance=train_set.variance(),
                     **{**cfg, "quantizer": {**cfg.get("quantizer", {}), "seed": seed}})


def part_settings(preset: dict, part: str, kind: str = DEFAULT_PRIOR) -> dict:
    """The preset's {"model": ..., "train": ...} for ``part`` ("vqvae", "prior", "vae"); for the prior, of ``kind``,
    its model settings with ``label_dropout`` filled in (DEFAULT_LABEL_DROPOUT unless the preset sets it)."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior kind {kind!r}; choose one of {sorted(PRIOR_KINDS)}")
    if part != "prior":
        return preset[part]
    settings = preset["prior"][kind] if kind != DEFAULT_PRIOR else preset["prior"]
    # Recorded in the recipe too: a prior saved before the null class existed (trained on every label)
    # does not match it, and is trained again instead of being loaded.
    return {**settings, "model": {"label_dropout": DEFAULT_LABEL_DROPOUT, **settings["model"]}}


def build_prior(preset: dict, num_codes: int, num_classes: int | None, seed: int = DEFAULT_SEED,
                kind: str = DEFAULT_PRIOR):
    """The preset's untrained prior of ``kind`` over ``num_codes`` codes, its weights drawn from ``seed``."""
    settings = part_settings(preset, "prior", kind)["model"]
    with seeded(seed):
        return PRIOR_KINDS[kind](num_codes, num_classes=num_classes, **settings)


def train_settings(preset: dict, part: str, steps: int | None = None, batch_size: int | None = None,
                   kind: str = DEFAULT_PRIOR) -> dict:
    """The preset's ``train`` settings for ``part`` ("vqvae", "prior", "vae"; a prior of ``kind``), with
    ``steps`` and ``batch_size`` overridden where given."""
    overrides = {"steps": steps, "batch_size": batch_size}
    return {**part_settings(preset, part, kind)["train"], **{k: v for k, v in overrides.items() if v is not None}}


def recipe(preset: dict, part: str, data: str, seed: int, steps: int | None = None,
           batch_size: int | None = None, kind: str = DEFAULT_PRIOR) -> dict:
    """Everything that determines a run's weights; a saved run is reused only when this matches.
    A prior other than the PixelCNN also records its ``kind``."""
    kind_entry = {"kind": kind} if part == "prior" and kind != DEFAULT_PRIOR else {}
    return {"preset": preset["name"], "data": data, "seed": seed, "cpu_threads": torch.get_num_threads(),
            "world_size": distributed.world_size(), **kind_entry,
            "model": part_settings(preset, part, kind)["model"],
            "train": train_settings(preset, part, steps, batch_size, kind)}


def load_prior(directory, map_location="cpu"):
    """Load any saved prior (a GatedPixelCNN, TransformerPrior or MaskedPrior), by the class its config.json records."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory {directory} does not exist")
    saved_class = read_json(directory / CONFIG_NAME, "checkpoint config").get("class")
    classes = {cls.__name__: cls for cls in PRIOR_KINDS.values()}
    if saved_class not in classes:
        raise ValueError(f"checkpoint in {directory} holds a {saved_class}, not a prior ({', '.join(classes)})")
    return classes[saved_class].from_pretrained(directory, map_location=map_location)


def raster_order_bits_per_code(prior: MaskedPrior, dataset, batch_size: int = EVAL_BATCH_SIZE, device=None) -> float:
    """The exact bits per code of decoding a masked prior one code at a time in raster order, over a
    data set of (codes (N, h, w), labels (N,)): comparable with the autoregressive priors' bits per code."""
    device = resolve_device(device)
    prior.to(device).eval()
    nats, count = 0.0, 0
    for indices, labels in iter_batches(dataset, batch_size, device):
        nats += float(prior.ordered_nll(indices, labels if prior.num_classes else None).sum())
        count += indices.numel()
    return nats / (count * math.log(2))


def prior_test_metrics(prior, test_set, device=None) -> dict:
    """The test split's numbers for a saved run: bits per code (autoregressive priors), or for the masked
    prior its masked loss (nats per masked code, not a likelihood) and its exact raster-order bits per code."""
    if not isinstance(prior, MaskedPrior):
        return {"test_bits_per_code": evaluate(prior, test_set, device=device)["bits_per_code"]}
    return {"test_masked_nll": evaluate(prior, test_set, device=device)["masked_nll"],
            "test_raster_order_bits_per_code": raster_order_bits_per_code(prior, test_set, device=device)}


def train_vqvae(data: str, preset: str | None, out, seed: int = DEFAULT_SEED, steps: int | None = None,
                device=None, compile: bool = False, resume: bool = False, progress: bool = True,
                batch_size: int | None = None, quantizer: str | None = None) -> dict:
    """Train the preset's VQ-VAE on ``data``; writes the model and ``metrics.json`` to ``out``, returns the metrics.

    quantizer: one of chapters 9 and 11's 6-bit quantizers (:data:`vqvae_lib.quantizers.ALL_MATCHED`) instead of
    the preset's.
    """
    p = get_preset(preset)
    if quantizer is not None:
        p = matched_preset(p, quantizer)
    train_set, test_set = load_images(data, "train"), load_images(data, "test")
    model = build_vqvae(p, train_set, seed)
    out = Path(out)
    history = train(model, train_set, **train_settings(p, "vqvae", steps, batch_size), seed=seed, device=device,
                    compile=compile, checkpoint_dir=out / "checkpoint", resume=resume, progress=progress)
    metrics = vqvae_run_metrics(model, history, test_set, p, data, seed, steps, batch_size, device)
    save_run(model, out, metrics)
    return metrics


def vqvae_run_metrics(model: VQVAE, history, test_set, preset: dict, data: str, seed: int,
                      steps: int | None = None, batch_size: int | None = None, device=None) -> dict:
    """What ``metrics.json`` records for a VQ-VAE trained by the recipe: the recipe and ``test_set``'s figures."""
    test = evaluate_vqvae(model, test_set, device=device)
    return {"recipe": recipe(preset, "vqvae", data, seed, steps, batch_size),
            "steps": history.train_steps[-1] if history.train_steps else 0,
            "test_nmse": test["nmse"], "test_perplexity": test["perplexity"],
            "codes_used": test["codes_used"], "num_codes": test["num_codes"]}


def save_trained_vqvae(model: VQVAE, history, preset: dict, data: str, seed: int = DEFAULT_SEED,
                       root="runs") -> dict:
    """Save a VQ-VAE that the caller trained exactly by the recipe (``build_vqvae`` and ``train`` with the
    preset's settings and ``seed``, as chapter 5 does) where :func:`trained_vqvae` looks for it, so that
    the later chapters load it instead of training the same model again. Returns the metrics."""
    steps, wanted = (history.train_steps or [0])[-1], train_settings(preset, "vqvae")["steps"]
    if steps != wanted:
        raise ValueError(f"the model was trained for {steps} steps, the {preset['name']} recipe trains for "
                         f"{wanted}: it is not the recipe's model")
    metrics = vqvae_run_metrics(model, history, load_images(data, "test"), preset, data, seed)
    save_run(model, run_dir(preset, data, seed, root) / "vqvae", metrics)
    return metrics


def save_run(model, out, metrics: dict) -> None:
    """Write the trained model and its ``metrics.json`` to ``out`` (on the main rank only)."""
    if distributed.is_main():
        model.save_pretrained(out)
        (Path(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))


def code_datasets(vqvae: VQVAE, data: str, device=None) -> dict:
    """{"train": ..., "test": ...}: each split's code grids (N, h, w) and labels (N,), as TensorDatasets."""
    out = {}
    for split in ("train", "test"):
        images = load_images(data, split)
        out[split] = TensorDataset(encode_dataset(vqvae, images, device=device), images.labels)
    return out


def train_prior(vqvae_dir, preset: str | None, out, data: str | None = None, seed: int = DEFAULT_SEED,
                steps: int | None = None, device=None, progress: bool = True, batch_size: int | None = None,
                kind: str = DEFAULT_PRIOR) -> dict:
    """Encode ``data`` with the VQ-VAE saved in ``vqvae_dir`` and fit the preset's prior of ``kind`` to the grids."""
    p = get_preset(preset)
    part_settings(p, "prior", kind)  # an unknown kind fails before the encoding
    vqvae = VQVAE.from_pretrained(vqvae_dir)
    if data is None:  # the data the VQ-VAE was trained on
        data = read_metrics(vqvae_dir)["recipe"]["data"]
    codes = code_datasets(vqvae, data, device)
    labels = codes["train"].tensors[1]
    prior = build_prior(p, vqvae.quantizer.num_codes, int(labels.max()) + 1, seed, kind)
    train(prior, codes["train"], **train_settings(p, "prior", steps, batch_size, kind), seed=seed, device=device,
          progress=progress)
    metrics = {"recipe": recipe(p, "prior", data, seed, steps, batch_size, kind),
               "grid_shape": list(codes["test"].tensors[0].shape[1:]),
               **prior_test_metrics(prior, codes["test"], device),
               "uniform_bits_per_code": math.log2(vqvae.quantizer.num_codes)}
    save_run(prior, out, metrics)
    return metrics


def read_metrics(directory) -> dict:
    """The ``metrics.json`` a recipe wrote beside a saved model; a clear error when it is missing."""
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        raise ValueError(f"{path} is missing: it records the recipe (data, preset, seed) of the run in {directory}")
    return json.loads(path.read_text())


def _matches(directory: Path, wanted: dict) -> bool:
    try:
        return read_metrics(directory).get("recipe") == json.loads(json.dumps(wanted))
    except ValueError:
        return False


def run_dir(preset: dict, data: str, seed: int, root) -> Path:
    return Path(root) / f"{preset['name']}-{Path(data).name}-seed{seed}"


def trained_vqvae(preset: str | None = None, data: str | None = None, root="runs", seed: int = DEFAULT_SEED,
                  progress: bool = True):
    """(VQVAE, metrics) for the preset: loads ``root/<preset>-<data>-seed<seed>/vqvae`` when its recipe
    matches, else trains it there first. Equal to what chapter 5 trains with the same seed."""
    p = get_preset(preset)
    data = data or p["data"]
    out = run_dir(p, data, seed, root) / "vqvae"
    if not _matches(out, recipe(p, "vqvae", data, seed)):
        train_vqvae(data, p["name"], out, seed=seed, progress=progress)
    return VQVAE.from_pretrained(out), read_metrics(out)


def trained_prior(preset: str | None = None, data: str | None = None, root="runs", seed: int = DEFAULT_SEED,
                  progress: bool = True, kind: str = DEFAULT_PRIOR):
    """(prior, metrics) of ``kind`` fitted to the codes of :func:`trained_vqvae`'s model, saved in
    ``<run>/prior`` (the PixelCNN) or ``<run>/prior-<kind>``."""
    p = get_preset(preset)
    data = data or p["data"]
    wanted = recipe(p, "prior", data, seed, kind=kind)  # an unknown kind fails before anything trains
    trained_vqvae(p["name"], data, root, seed, progress)
    base = run_dir(p, data, seed, root)
    out = base / ("prior" if kind == DEFAULT_PRIOR else f"prior-{kind}")
    if not _matches(out, wanted):
        train_prior(base / "vqvae", p["name"], out, data=data, seed=seed, progress=progress, kind=kind)
    return load_prior(out), read_metrics(out)
