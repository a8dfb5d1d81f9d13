"""Command line: train a VQ-VAE, train a prior on its codes, sample.

    python -m vqvae_lib train-vqvae --data mnist-5k --preset ci --out runs/vqvae
    python -m vqvae_lib train-prior --vqvae runs/vqvae --out runs/prior
    python -m vqvae_lib sample --vqvae runs/vqvae --prior runs/prior -n 64 --out samples.png
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from .data import load_images
from .metrics import encode_dataset, evaluate_vqvae
from .pixelcnn import GatedPixelCNN
from .presets import PRESETS, get_preset
from .train import evaluate, train
from .vqvae import VQVAE


def train_vqvae(data: str, preset: str | None, out, steps: int | None = None, device=None,
                compile: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Train a VQ-VAE with a preset; writes the model to ``out`` and returns/writes metrics.json."""
    p = get_preset(preset)
    train_set, test_set = load_images(data, "train"), load_images(data, "test")
    cfg = p["vqvae"]
    model = VQVAE(in_channels=train_set.shape[0], data_variance=train_set.variance(), **cfg["model"])
    out = Path(out)
    history = train(model, train_set, **{**cfg["train"], **({"steps": steps} if steps else {})},
                    device=device, compile=compile, checkpoint_dir=out / "checkpoint",
                    checkpoint_every=500, resume=resume, progress=progress)
    model.save_pretrained(out)
    metrics = {"data": data, "preset": p["name"], "steps": history.train_steps[-1] if history.train_steps else 0,
               **{f"test_{k}" if k in ("nmse", "perplexity") else k: v
                  for k, v in evaluate_vqvae(model, test_set, device=device).items()}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def train_prior(vqvae_dir, preset: str | None, out, data: str | None = None, steps: int | None = None,
                device=None, progress: bool = True) -> dict:
    """Encode the data with a trained VQ-VAE and fit a gated PixelCNN to the code grids."""
    p = get_preset(preset)
    vqvae = VQVAE.from_pretrained(vqvae_dir)
    if data is None:  # the data the VQ-VAE was trained on
        meta = Path(vqvae_dir) / "metrics.json"
        data = json.loads(meta.read_text())["data"] if meta.exists() else p["data"]
    sets = {s: load_images(data, s) for s in ("train", "test")}
    codes = {s: TensorDataset(encode_dataset(vqvae, d, device=device), d.labels) for s, d in sets.items()}
    cfg = p["prior"]
    prior = GatedPixelCNN(vqvae.quantizer.num_codes, num_classes=sets["train"].num_classes, **cfg["model"])
    train(prior, codes["train"], **{**cfg["train"], **({"steps": steps} if steps else {})},
          device=device, progress=progress)
    prior.save_pretrained(out)
    metrics = {"data": data, "preset": p["name"], "grid_shape": list(codes["test"].tensors[0].shape[1:]),
               "test_bits_per_code": evaluate(prior, codes["test"], device=device)["bits"],
               "uniform_bits_per_code": math.log2(vqvae.quantizer.num_codes)}
    (Path(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def sample(vqvae_dir, prior_dir, n: int, out, temperature: float = 1.0, label: int | None = None,
           seed: int = 0, device=None) -> Path:
    """Draw n code grids from the prior, decode them, save a PNG grid."""
    import matplotlib
    matplotlib.use("Agg")
    from .viz import show_images

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vqvae = VQVAE.from_pretrained(vqvae_dir, map_location=device).eval()
    prior = GatedPixelCNN.from_pretrained(prior_dir, map_location=device).eval()
    if prior.num_codes != vqvae.quantizer.num_codes:
        raise ValueError(f"prior models {prior.num_codes} codes but the VQ-VAE has {vqvae.quantizer.num_codes}")
    meta = Path(prior_dir) / "metrics.json"
    if not meta.exists():
        raise ValueError(f"{meta} is missing: it records the code-grid shape the prior was trained on")
    h, w = json.loads(meta.read_text())["grid_shape"]
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((n,), label, dtype=torch.long) if label is not None else None
    grids = prior.sample(n, (h, w), labels=labels, temperature=temperature, generator=g)
    images = vqvae.decode_indices(grids.to(device))
    ax = show_images(images, f"{n} samples (T={temperature})")
    ax.figure.savefig(out, dpi=120, bbox_inches="tight")
    return Path(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vqvae_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train-vqvae", "train-prior", "sample"):
        s = sub.add_parser(name)
        s.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="run size (default: VQVAE_PRESET, else gpu if CUDA is available, else cpu)")
        s.add_argument("--device", default=None)
        s.add_argument("--out", required=True)
        if name == "train-vqvae":
            s.add_argument("--data", default="mnist-5k")
            s.add_argument("--steps", type=int, default=None)
            s.add_argument("--compile", action="store_true")
            s.add_argument("--resume", action="store_true")
        if name == "train-prior":
            s.add_argument("--vqvae", required=True)
            s.add_argument("--data", default=None)
            s.add_argument("--steps", type=int, default=None)
        if name == "sample":
            s.add_argument("--vqvae", required=True)
            s.add_argument("--prior", required=True)
            s.add_argument("-n", type=int, default=64)
            s.add_argument("--temperature", type=float, default=1.0)
            s.add_argument("--label", type=int, default=None)
            s.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    if a.command == "train-vqvae":
        print(json.dumps(train_vqvae(a.data, a.preset, a.out, a.steps, a.device, a.compile, a.resume), indent=2))
    elif a.command == "train-prior":
        print(json.dumps(train_prior(a.vqvae, a.preset, a.out, a.data, a.steps, a.device), indent=2))
    else:
        print(sample(a.vqvae, a.prior, a.n, a.out, a.temperature, a.label, a.seed, a.device))
