"""Sampling speed of the priors, cached against naive, measured side by side in one run (CPU).

    python benchmarks/bench_sampling.py [--threads 2] [--samples 64] [--naive-rows 2] [--repeats 3] [--device cpu]

Times drawing --samples grids of 7 x 7 and of 32 x 32 codes (K = 64) from UNTRAINED priors of the
`cpu` preset's size (speed does not depend on the weights):

* GatedPixelCNN: naive (``cache=False``: the whole network on the whole grid once per position, h * w
  full passes) against cached (``cache=True``: a row's vertical stack once, one position's horizontal
  stack per step);
* TransformerPrior naive against cached (KV cache), and MaskedPrior (MaskGIT) with 8 and 16 decoding
  rounds, when ``vqvae_lib.priors.transformer`` / ``vqvae_lib.priors.maskgit`` and their `cpu` preset entries
  exist; otherwise their rows are skipped with a note.

The naive path on 32 x 32 runs the full network 1,024 times (the better part of an hour on 2 cores), so
it is timed over its first --naive-rows rows only and scaled by h * w / (rows * w): every naive step is
the same full pass over the whole grid, so the scaling is exact up to noise. Naive 7 x 7 is measured
in full. Each row is the median of --repeats runs, the rows interleaved so that load on the machine hits
them alike (the extrapolated naive rows run once). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import statistics
import sys
import time

import torch

from vqvae_lib import GatedPixelCNN, get_preset
from vqvae_lib.device import resolve_device
from vqvae_lib.seeding import seeded

K = 64
GRIDS = ((7, 7), (32, 32))


DEVICE = torch.device("cpu")  # --device; the draws come from CPU generators on any device


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def naive_first_rows(model, n: int, shape, rows: int):
    """The naive path over the first ``rows`` rows of the full grid: the model's own ``_sample_naive``
    when it can stop early, else the same loop written out (a full forward on the whole grid, then one
    draw, per position). Returns (fn, how)."""
    h, w = shape
    naive = getattr(model, "_sample_naive", None)
    if naive is not None and "rows" in inspect.signature(naive).parameters:
        return lambda: naive(n, shape, None, 1.0, gen(), rows=rows), "its own naive path"

    @torch.no_grad()
    def loop():
        g, grid = gen(), torch.zeros(n, h, w, dtype=torch.long, device=DEVICE)
        for i in range(rows):
            for j in range(w):
                probs = torch.softmax(model(grid)[:, :, i, j].float(), dim=1)
                grid[:, i, j] = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return loop, "the naive loop written out here (its sample() cannot stop early)"


def prior_preset(key: str) -> dict | None:
    """The `cpu` preset's model kwargs for prior ``key`` (transformer, maskgit), or None."""
    entry = get_preset("cpu")["prior"].get(key)
    if entry is None:
        return None
    return dict(entry.get("model", entry))


def build(cls, kwargs, shape):
    with seeded(0):
        try:
            return cls(K, **kwargs, max_height=shape[0], max_width=shape[1]).to(DEVICE).eval()
        except TypeError:  # a prior without a maximum grid
            return cls(K, **kwargs).to(DEVICE).eval()


def build_pixelcnn(kwargs):
    with seeded(0):
        return GatedPixelCNN(K, **kwargs).to(DEVICE).eval()


def rows_for(args, notes: list[str]) -> list[dict]:
    """One dict per table row: prior, grid, path, fn (one timed run), scale, naive (the row to compare with).
    Appends footnotes to ``notes``."""
    n, rows = args.samples, args.naive_rows
    out = []

    def add(prior, shape, path, fn, scale=1.0, naive=None):
        out.append(dict(prior=prior, grid=shape, path=path, fn=fn, scale=scale, naive=naive))
        return len(out) - 1

    def autoregressive(name, make):
        for shape in GRIDS:
            model = make(shape)
            h, w = shape
            if shape == (7, 7) or rows >= h:  # measured in full
                base = add(name, shape, "naive", lambda m=model, s=shape: m.sample(n, s, generator=gen(), cache=False))
            else:
                fn, how = naive_first_rows(model, n, shape, rows)
                base = add(name, shape, f"naive (first {rows} of {h} rows, scaled)", fn, scale=h / rows)
                notes.append(f"{name}'s naive {h} x {w} is timed with {how}.")
            add(name, shape, "cached", lambda m=model, s=shape: m.sample(n, s, generator=gen(), cache=True), naive=base)

    pixelcnn = get_preset("cpu")["prior"]["model"]
    autoregressive("GatedPixelCNN", lambda shape: build_pixelcnn(pixelcnn))

    for module, key, cls_name in (("vqvae_lib.priors.transformer", "transformer", "TransformerPrior"),
                                  ("vqvae_lib.priors.maskgit", "maskgit", "MaskedPrior")):
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as err:
            print(f"note: {module}.{cls_name} is not available ({err}): its rows are skipped")
            continue
        kwargs = prior_preset(key)
        if kwargs is None:
            print(f"note: get_preset('cpu')['prior'] has no {key!r} entry: the {cls_name} rows are skipped")
            continue
        if key == "transformer":
            autoregressive(cls_name, lambda shape, c=cls, k=kwargs: build(c, k, shape))
        else:
            for shape in GRIDS:
                model = build(cls, kwargs, shape)
                for steps in (8, 16):
                    add(cls_name, shape, f"{steps} steps",
                        lambda m=model, s=shape, t=steps: m.sample(n, s, generator=gen(), steps=t))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--naive-rows", type=int, default=2,
                        help="rows of the 32 x 32 grid the naive paths are timed over (then scaled to h rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float32 on either)")
    args = parser.parse_args()
    if args.samples < 1 or args.naive_rows < 1 or args.repeats < 1:
        parser.error("--samples, --naive-rows and --repeats must be at least 1")
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = resolve_device(args.device)
    load_before = os.getloadavg()[0]
    notes = []
    rows = rows_for(args, notes)
    times = [[] for _ in rows]
    for r in range(args.repeats):
        for row, ts in zip(rows, times):
            if row["scale"] == 1.0 or r == 0:  # the long extrapolated naive rows run once
                ts.append(seconds(row["fn"]) * row["scale"])
                print(f"  round {r + 1}/{args.repeats}: {row['prior']} {row['grid']} {row['path']}: "
                      f"{ts[-1]:.2f} s", file=sys.stderr, flush=True)
    med = [statistics.median(ts) for ts in times]

    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"\n{args.samples} samples, K={K}, untrained priors of the `cpu` preset's size, {where}, {args.threads} "
          f"thread{'s' * (args.threads != 1)}, torch {torch.__version__}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print(f"| prior | grid | path | seconds for {args.samples} samples | speed-up over naive |")
    print("|---|---|---|---:|---:|")
    for row, s in zip(rows, med):
        speedup = f"{med[row['naive']] / s:.0f}x" if row["naive"] is not None else "—"
        h, w = row["grid"]
        print(f"| {row['prior']} | {h} x {w} | {row['path']} | {s:.2f} | {speedup} |")
    print(f"\nNaive 32 x 32 rows are extrapolated: timed over the first {args.naive_rows} of 32 rows "
          f"({args.naive_rows * 32} of 1024 positions) and multiplied by 32 / {args.naive_rows}. Every naive step "
          "is the same full pass over the whole grid, so this is exact up to noise. Naive 7 x 7 is measured in full. "
          + " ".join(notes))


if __name__ == "__main__":
    main()
