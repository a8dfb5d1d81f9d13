"""Explicit seeds: every random draw of the library comes from a generator made here.

The library never draws from torch's global RNG. A draw that belongs to a stream (the batches of
epoch 3, the dead-code restart at update 1,200) gets its own generator from the run's seed and the
stream's counters, so it can be recomputed after a resume without replaying what came before, and
is the same in any process. Building a model (whose layers initialise from the global RNG) happens
inside :func:`seeded`, which forks the global RNG, seeds it and restores it afterwards.
"""
from __future__ import annotations

import contextlib

import torch

SEED_STRIDE = 1_000_003  # a prime: (seed, counter) pairs map to distinct generator seeds


def stream_seed(seed: int, *counters: int) -> int:
    """One integer for (seed, counter, ...): seed * SEED_STRIDE + counter, nested per counter."""
    for c in counters:
        seed = seed * SEED_STRIDE + int(c)
    return int(seed) % (2**63)


def generator(seed: int, *counters: int) -> torch.Generator:
    """A CPU generator for the stream (seed, counters...). Draw on the CPU, then move to the device."""
    return torch.Generator().manual_seed(stream_seed(seed, *counters))


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch's global RNG (CPU and CUDA) seeded by ``seed``, restored afterwards.

    For code that draws from the global RNG and cannot take a generator: layer initialisation
    (``nn.Conv2d(...)``) and ``torch.randn_like`` inside a model's forward pass.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
