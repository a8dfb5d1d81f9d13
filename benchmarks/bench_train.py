"""Training steps per second of a preset's VQ-VAE: float32 eager against bf16 autocast + torch.compile.

    python benchmarks/bench_train.py --preset gpu --device cuda [--steps 200]

Both rows train the same model from the same seed on mnist-5k, side by side in one run; the first
WARMUP steps (and torch.compile's compilation) are not timed. On the CPU, bf16 autocast is off, so
the second row measures torch.compile alone. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time

import torch

from vqvae_lib.data import load_images
from vqvae_lib.device import resolve_device
from vqvae_lib.presets import get_preset
from vqvae_lib.recipes import build_vqvae
from vqvae_lib.training.train import train

WARMUP = 10


def steps_per_second(preset: dict, data, device, steps: int, bf16: bool, compile: bool) -> float:
    model = build_vqvae(preset, data)
    settings = {k: v for k, v in preset["vqvae"]["train"].items() if k in ("batch_size", "lr")}
    run = dict(device=device, bf16=bf16, compile=compile, progress=False, **settings)
    train(model, data, steps=WARMUP, **run)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    train(model, data, steps=steps, **run)
    sync()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpu", help="the preset whose VQ-VAE and batch size to time (default gpu)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per row (default 200)")
    a = ap.parse_args()
    device = resolve_device(a.device)
    preset, data = get_preset(a.preset), load_images("mnist-5k", "train")
    fp32 = steps_per_second(preset, data, device, a.steps, bf16=False, compile=False)
    fast = steps_per_second(preset, data, device, a.steps, bf16=True, compile=True)
    print(f"`{a.preset}` VQ-VAE on {device}, {a.steps} timed steps\n")
    print("| configuration | steps / s | relative |\n| :-- | --: | --: |")
    print(f"| float32, eager | {fp32:.1f} | 1.00x |")
    print(f"| bf16 autocast + torch.compile | {fast:.1f} | {fast / fp32:.2f}x |")


if __name__ == "__main__":
    main()
