"""How far the prior's bits per code move with the VQ-VAE under it: chapter 5's recipe trained with several
seeds, chapter 6's prior fitted to each one's codes (the preset's recipes, in a scratch folder).

    python benchmarks/prior_spread.py --preset ci --seeds 0 1 2

A prior's bits per code measure the codes as much as the prior: two VQ-VAE runs that differ only by their
seed, or by the last bits of their arithmetic (another CPU, another thread count), end with other code
distributions, and the same prior recipe needs another number of bits on them. With the VQ-VAE fixed, the
prior's own training reproduces its figure closely (compare ``--fixed-vqvae``, which refits the prior to
seed 0's codes with each seed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

from vqvae_lib.presets import get_preset
from vqvae_lib.recipes import (
    build_prior,
    code_datasets,
    prior_test_metrics,
    train_settings,
    trained_prior,
    trained_vqvae,
)
from vqvae_lib.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--preset", default="ci")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fixed-vqvae", action="store_true", help="one VQ-VAE (seed 0), a prior per seed")
    args = parser.parse_args()
    bits = []
    with tempfile.TemporaryDirectory() as root:
        for seed in args.seeds:
            if args.fixed_vqvae:
                vqvae, metrics = trained_vqvae(args.preset, root=root, seed=0, progress=False)
                codes = code_datasets(vqvae, metrics["recipe"]["data"])
                preset = get_preset(args.preset)
                prior = build_prior(preset, vqvae.quantizer.num_codes, 10, seed)
                train(prior, codes["train"], **train_settings(preset, "prior"), seed=seed, progress=False)
                b = prior_test_metrics(prior, codes["test"])["test_bits_per_code"]
            else:
                _, metrics = trained_vqvae(args.preset, root=root, seed=seed, progress=False)
                b = trained_prior(args.preset, root=root, seed=seed, progress=False)[1]["test_bits_per_code"]
            bits.append(b)
            print(f"seed {seed}: VQ-VAE test perplexity {metrics['test_perplexity']:.1f}, "
                  f"NMSE {metrics['test_nmse']:.4f}; prior {b:.3f} bits per code", flush=True)
    if len(bits) > 1:
        print(f"prior bits per code: mean {statistics.mean(bits):.3f}, sd {statistics.stdev(bits):.3f}, "
              f"range {min(bits):.3f}-{max(bits):.3f}")


if __name__ == "__main__":
    main()
