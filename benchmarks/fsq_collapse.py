"""How often FSQ loses codes in chapter 9's model, with and without the library's range loss.

    python benchmarks/fsq_collapse.py --preset ci --seeds 0 1 2 3 4 5 6 7 8 9

Trains chapter 9's VQ-VAE with FSQ levels (4, 4, 4) (the preset's comparison budget, one seed for weights and
batches) once with ``range_weight=0`` (the paper's FSQ) and once with the default, and prints per seed the codes
used of 64, the test NMSE and the mean |z_e| on 256 test digits. A seed "lost codes" when it uses fewer than
LOST_BELOW of them: a saturated channel leaves at most 16 of 64.
"""
from __future__ import annotations

import argparse

import torch

from vqvae_lib import get_preset, load_images
from vqvae_lib.evaluation.metrics import evaluate_vqvae
from vqvae_lib.quantizers.fsq import DEFAULT_RANGE_WEIGHT
from vqvae_lib.recipes import build_vqvae, matched_preset, train_settings
from vqvae_lib.training.train import train

LOST_BELOW = 48


def run(preset: dict, range_weight: float, seed: int, train_set, test_set) -> dict:
    p = matched_preset(preset, "fsq")
    p["vqvae"]["model"]["quantizer"]["range_weight"] = range_weight
    model = build_vqvae(p, train_set, seed)
    train(model, train_set, **train_settings(p, "vqvae", preset["quantizer_comparison"]["steps"]), seed=seed,
          device="cpu", progress=False)
    figures = evaluate_vqvae(model.eval(), test_set, device="cpu")
    with torch.no_grad():
        z = model.encode_continuous(test_set.batch(torch.arange(256))[0])
    return {"codes": figures["codes_used"], "nmse": figures["nmse"], "mean_abs_z": float(z.abs().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ci")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    args = parser.parse_args()
    preset = get_preset(args.preset)
    train_set, test_set = load_images(preset["data"], "train"), load_images(preset["data"], "test")
    print(f"{'range_weight':>12} {'seed':>4} {'codes':>5} {'NMSE':>6} {'mean |z_e|':>10}")
    for weight in (0.0, DEFAULT_RANGE_WEIGHT):
        lost = 0
        for seed in args.seeds:
            r = run(preset, weight, seed, train_set, test_set)
            lost += r["codes"] < LOST_BELOW
            print(f"{weight:12.1f} {seed:4d} {r['codes']:5d} {r['nmse']:6.3f} {r['mean_abs_z']:10.2f}", flush=True)
        print(f"range_weight {weight}: {lost} of {len(args.seeds)} seeds used fewer than {LOST_BELOW} codes")


if __name__ == "__main__":
    main()
