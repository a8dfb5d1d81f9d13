"""Command line: train a VQ-VAE, train a prior on its codes, sample. Parses, calls the recipes, prints.

    python -m vqvae_lib train-vqvae --data mnist-5k --preset ci --out runs/vqvae
    python -m vqvae_lib train-prior --vqvae runs/vqvae --out runs/prior
    python -m vqvae_lib train-prior --vqvae runs/vqvae --kind transformer --out runs/prior-transformer
    python -m vqvae_lib sample --vqvae runs/vqvae --prior runs/prior -n 64 --out samples.png
    python -m vqvae_lib sample --vqvae runs/vqvae --prior runs/prior --label 3 --guidance 1 --out threes.png
    python -m vqvae_lib fetch-emoji    # the emoji images without npm (Colab): ~/.cache/vqvae_lib/

On a labelled data set (mnist-5k) the prior is class-conditional and also learns a null class (each
training label is replaced by it with probability label_dropout, 0.1 by default): ``sample`` without
``--label`` draws from that unconditional model, with ``--label`` from the class, and ``--guidance W``
sharpens the class by classifier-free guidance (0, the default, is plain conditional sampling).

Data-parallel on several processes (NCCL on GPUs, gloo on CPUs; ``--batch-size`` is the global batch):

    torchrun --nproc_per_node=2 -m vqvae_lib train-vqvae --preset cpu --out runs/vqvae

A user error (unknown data set, missing or corrupt checkpoint, a bad number) prints one line,
``error: ...``, and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import distributed
from .data import DatasetUnavailable, fetch_emoji
from .presets import PRESETS
from .quantizers import ALL_MATCHED
from .recipes import DEFAULT_PRIOR, DEFAULT_SEED, PRIOR_KINDS, load_prior, read_metrics, train_prior, train_vqvae

USER_ERRORS = (ValueError, DatasetUnavailable, FileNotFoundError)
# Under torchrun an error every rank hits is printed by rank 0 alone; the other ranks wait this long
# first (torchrun stops them as soon as rank 0 exits), so only an error of their own gets printed.
OTHER_RANKS_WAIT_S = 10.0


def sample(vqvae_dir, prior_dir, n: int, out, temperature: float = 1.0, label: int | None = None,
           seed: int = DEFAULT_SEED, device=None, guidance: float = 0.0) -> Path:
    """Draw n code grids from the prior (any kind), decode them, save a PNG grid.

    label None: the prior's unconditional model (a class-conditional prior's null class). guidance: the
    classifier-free guidance weight w >= 0, only with a label.
    """
    import matplotlib
    matplotlib.use("Agg")
    from .device import resolve_device
    from .models.vqvae import VQVAE
    from .viz import show_images

    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    if guidance and label is None:  # before any loading: the prior would refuse it only after
        raise ValueError("--guidance needs --label: it steers the samples towards that class")
    device = resolve_device(device)
    vqvae = VQVAE.from_pretrained(vqvae_dir, map_location=device).eval()
    prior = load_prior(prior_dir, map_location=device).eval()
    if prior.num_codes != vqvae.quantizer.num_codes:
        raise ValueError(f"prior models {prior.num_codes} codes but the VQ-VAE has {vqvae.quantizer.num_codes}")
    h, w = read_metrics(prior_dir)["grid_shape"]
    labels = torch.full((n,), label, dtype=torch.long) if label is not None else None
    grids = prior.sample(n, (h, w), labels=labels, temperature=temperature,
                         generator=torch.Generator().manual_seed(seed), guidance=guidance)
    what = "no label" if label is None else f"label {label}" + (f", guidance w={guidance:g}" if guidance else "")
    ax = show_images(vqvae.decode_indices(grids.to(device)), f"{n} samples (T={temperature}, {what})")
    ax.figure.savefig(out, dpi=120, bbox_inches="tight")
    return Path(out)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m vqvae_lib", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    helps = {"train-vqvae": "train a VQ-VAE with a preset; writes the model and metrics.json to --out",
             "train-prior": "fit a prior (gated PixelCNN, transformer or MaskGIT) to the codes of a trained VQ-VAE",
             "sample": "draw code grids from a prior and decode them into a PNG grid"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="run size (default: VQVAE_PRESET, else gpu if CUDA is available, else cpu)")
        s.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
        s.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help=f"seeds the initial weights, batches and every random draw (default {DEFAULT_SEED})")
        s.add_argument("--out", required=True, help="output folder (train-*) or PNG file (sample)")
        if name == "train-vqvae":
            s.add_argument("--data", default="mnist-5k",
                           help="mnist-5k (offline), emoji (offline once installed: npm ci or fetch-emoji), "
                                "anime-faces, cifar10, mnist, or a local folder")
            s.add_argument("--steps", type=positive_int, default=None, help="override the preset's step budget")
            s.add_argument("--batch-size", type=positive_int, default=None,
                           help="override the preset's batch size; the global batch under torchrun")
            s.add_argument("--quantizer", choices=list(ALL_MATCHED), default=None,
                           help="one of chapter 9's 6-bit quantizers instead of the preset's vector quantizer")
            s.add_argument("--compile", action="store_true", help="torch.compile the training step")
            s.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
        if name == "train-prior":
            s.add_argument("--vqvae", required=True, help="folder of a trained VQ-VAE (from train-vqvae)")
            s.add_argument("--data", default=None, help="data set to encode (default: the VQ-VAE's own)")
            s.add_argument("--kind", choices=sorted(PRIOR_KINDS), default=DEFAULT_PRIOR,
                           help=f"pixelcnn (gated PixelCNN), transformer (GPT-style) or maskgit (masked, "
                                f"parallel decoding) (default {DEFAULT_PRIOR})")
            s.add_argument("--steps", type=positive_int, default=None, help="override the preset's step budget")
            s.add_argument("--batch-size", type=positive_int, default=None,
                           help="override the preset's batch size; the global batch under torchrun")
        if name == "sample":
            s.add_argument("--vqvae", required=True, help="folder of a trained VQ-VAE")
            s.add_argument("--prior", required=True,
                           help="folder of a prior trained on its codes (any --kind of train-prior)")
            s.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
            s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature > 0 (default 1)")
            s.add_argument("--label", type=int, default=None,
                           help="class to condition on (default: none, the prior's unconditional model)")
            s.add_argument("--guidance", type=float, default=0.0,
                           help="classifier-free guidance weight w >= 0, with --label (default 0: none)")
    # no --preset, --seed or --out: it trains nothing
    text = ("download the emoji images (npm's emoji-datasource-google, checked against its pinned sha512) "
            "for machines without npm, such as Colab; `npm ci` installs the same files")
    s = sub.add_parser("fetch-emoji", help=text, description=text)
    s.add_argument("--dest", default=None,
                   help="folder to unpack into (default: ~/.cache/vqvae_lib/, where --data emoji looks; "
                        "another folder: set VQVAE_EMOJI_DIR to it)")
    return root


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        rank_device = distributed.init_from_env()  # None unless launched by torchrun
        speaks = distributed.is_main()  # one line of output per run, not one per process
        result = run(a, getattr(a, "device", None) or rank_device)  # fetch-emoji has no --device
    except USER_ERRORS as err:
        if not distributed.is_main():
            time.sleep(OTHER_RANKS_WAIT_S)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.close()
    if speaks:
        print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


def run(a: argparse.Namespace, device):
    if a.command == "fetch-emoji":
        return str(fetch_emoji(a.dest))
    if a.command == "train-vqvae":
        return train_vqvae(a.data, a.preset, a.out, a.seed, a.steps, device, a.compile, a.resume,
                           batch_size=a.batch_size, quantizer=a.quantizer)
    if a.command == "train-prior":
        return train_prior(a.vqvae, a.preset, a.out, a.data, a.seed, a.steps, device, batch_size=a.batch_size,
                           kind=a.kind)
    if distributed.launched_by_torchrun():
        raise ValueError("sample runs in one process: use python -m vqvae_lib sample, not torchrun")
    return str(sample(a.vqvae, a.prior, a.n, a.out, a.temperature, a.label, a.seed, device, a.guidance))
