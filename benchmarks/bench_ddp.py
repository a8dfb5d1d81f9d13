"""Data-parallel steps per second: the `ci` VQ-VAE under torchrun with 1 and 2 processes, side by side.

    python benchmarks/bench_ddp.py [--steps 60] [--threads 2]

Each configuration runs as ``torchrun --standalone --nproc_per_node=N`` (gloo on the CPU, NCCL on
GPUs), at the same global batch, with the machine's ``--threads`` split evenly over the processes.
The first WARMUP steps (k-means initialisation, allocator warm-up) are not timed. On a 2-core CPU
two processes only share the same two cores, so expect no speed-up there: real speed-ups need a GPU
per process. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WARMUP = 10


def worker(steps: int, batch_size: int) -> None:
    import torch

    from vqvae_lib import distributed
    from vqvae_lib.data import load_images
    from vqvae_lib.presets import get_preset
    from vqvae_lib.recipes import build_vqvae
    from vqvae_lib.training.train import train

    device = distributed.init_from_env() or torch.device("cpu")
    data = load_images("mnist-5k", "train")
    model = build_vqvae(get_preset("ci"), data)
    train(model, data, steps=WARMUP, batch_size=batch_size, device=device, progress=False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    train(model, data, steps=steps, batch_size=batch_size, device=device, progress=False)
    sync()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        print(json.dumps({"steps_per_second": steps / seconds}))
    distributed.close()


def measure(nproc: int, steps: int, batch_size: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // nproc, 1)),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                          __file__, "--worker", "--steps", str(steps), "--batch-size", str(batch_size)],
                         capture_output=True, text=True, env=env, check=False)
    if run.returncode:
        raise SystemExit(f"error: torchrun with {nproc} process(es) failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["steps_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per configuration (default 60)")
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (default 64, the ci preset's)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads shared by the processes (default 2)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.steps, a.batch_size)
    rates = {n: measure(n, a.steps, a.batch_size, a.threads) for n in (1, 2)}
    print(f"`ci` VQ-VAE, global batch {a.batch_size}, {a.steps} timed steps, {a.threads} CPU threads in all\n")
    print("| processes | steps / s | relative to 1 process |\n| --: | --: | --: |")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.1f} | {rate / rates[1]:.2f}x |")


if __name__ == "__main__":
    main()
