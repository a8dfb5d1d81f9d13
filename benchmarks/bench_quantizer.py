"""Quantizer speed, measured side by side in one run (CPU, 2 threads by default).

    python benchmarks/bench_quantizer.py [--threads 2] [--repeats 30]

Rows: forward + backward of vqvae_lib's VectorQuantizer (gradient and EMA codebooks) on
N = 8192 vectors, D = 64, K = 512; the floor (the distance matmul plus argmin alone); and
vector_quantize_pytorch.VectorQuantize with EMA on the same shapes. Each quantizer's backward starts
from a fixed upstream gradient at its output plus its own loss, as inside a model, so no time goes to a
stand-in objective. Then one training step of the `ci` and `cpu` presets' VQ-VAE. Prints a Markdown
table of medians and ratios to the floor.

A second table puts the quantizers after VQ beside their equivalents, forward + backward on N = 8192
positions given as (B, D, H, W) maps, the VQ-VAE's layout, which both libraries accept: FSQ with levels
FSQ_LEVELS (1000 codes, the paper's choice for about 2^10) and LFQ with 2^LFQ_DIM = 1024 codes against
vector_quantize_pytorch's FSQ and LFQ (entropy penalty and commitment on, as ours), and VectorQuantizer's
rotation trick against its plain straight-through (the rotation's overhead). Then chapter 11's: the cosine
lookup in COSINE_DIM of D channels (EMA, as the peer's default), SimVQ and BSQ (2^LFQ_DIM codes) against
vector_quantize_pytorch's VectorQuantize(use_cosine_sim=True, codebook_dim=...), SimVQ and LFQ(spherical=True);
and IBQ against plain VectorQuantizer at K = 512 and 4,096, since IBQ's softmax touches every code.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vqvae_lib import VQVAE, VectorQuantizer, get_preset
from vqvae_lib.quantizers.vq import nearest_code

N, D, K = 8192, 64, 512
FSQ_LEVELS, LFQ_DIM = [8, 5, 5, 5], 10
COSINE_DIM = 8
IBQ_SIZES = (512, 4096)
SIDE = 8  # N positions as (N / SIDE^2, channels, SIDE, SIDE) maps


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def ours(ema: bool, rotation_trick: bool = False, num_codes: int = K, **options):
    vq = VectorQuantizer(num_codes, D, ema=ema, rotation_trick=rotation_trick, **options).train()
    return module_step(vq, D, lambda out: (out.z_q, out.loss))


def ours_module(module, channels: int = D):
    """Forward + backward of one of chapter 11's quantizers (a VQOutput)."""
    return module_step(module.train(), channels, lambda out: (out.z_q, out.loss))


def theirs(module, channels: int = D):
    """Forward + backward of a vector_quantize_pytorch module returning (quantized, indices, loss)."""
    return module_step(module.train(), channels, lambda out: (out[0], out[2].sum()))


def module_step(module, channels: int, outputs):
    """Forward + backward of ``module`` on N positions as (B, channels, H, W); ``outputs(result)`` gives its
    (quantised map, loss or None)."""
    z = torch.randn(N // SIDE ** 2, channels, SIDE, SIDE)
    upstream = torch.randn_like(z)

    def step():
        quantized, loss = outputs(module(z.clone().requires_grad_(True)))
        tensors, grads = ([quantized, loss], [upstream, None]) if loss is not None else ([quantized], [upstream])
        torch.autograd.backward(tensors, grads)
    return step


def ours_fsq():
    from vqvae_lib.quantizers.fsq import FSQ
    # with its range loss (the peer has none): the extra work is ours to pay for
    return module_step(FSQ(FSQ_LEVELS).train(), len(FSQ_LEVELS), lambda out: (out.z_q, out.loss))


def ours_lfq():
    from vqvae_lib.quantizers.lfq import LFQ
    return module_step(LFQ(LFQ_DIM).train(), LFQ_DIM, lambda out: (out.z_q, out.loss))


def their_fsq():
    from vector_quantize_pytorch import FSQ
    return module_step(FSQ(FSQ_LEVELS).train(), len(FSQ_LEVELS), lambda out: (out[0], None))


def their_lfq():
    from vector_quantize_pytorch import LFQ
    lfq = LFQ(dim=LFQ_DIM, entropy_loss_weight=0.1, commitment_loss_weight=0.25, diversity_gamma=1.0).train()
    return module_step(lfq, LFQ_DIM, lambda out: (out[0], out[2]))


def floor():
    flat, codebook = torch.randn(N, D), torch.randn(K, D)
    return lambda: nearest_code(flat, codebook)


def vector_quantize_pytorch():
    from vector_quantize_pytorch import VectorQuantize
    vq = VectorQuantize(dim=D, codebook_size=K, decay=0.99, commitment_weight=0.25).train()
    x = torch.randn(1, N, D)
    upstream = torch.randn_like(x)

    def step():
        quantized, _, loss = vq(x.clone().requires_grad_(True))
        torch.autograd.backward([quantized, loss.sum()], [upstream, None])
    return step


def training_step(preset_name: str):
    p = get_preset(preset_name)["vqvae"]
    torch.manual_seed(0)
    model = VQVAE(**p["model"]).train()
    opt = torch.optim.Adam(model.parameters(), lr=p["train"]["lr"])
    x = torch.rand(p["train"]["batch_size"], 1, 28, 28)

    def step():
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [("floor: distance matmul + argmin", floor()),
            ("VectorQuantizer fwd+bwd (gradient codebook)", ours(ema=False)),
            ("VectorQuantizer fwd+bwd (EMA codebook)", ours(ema=True))]
    try:
        rows.append(("vector_quantize_pytorch VectorQuantize fwd+bwd (EMA)", vector_quantize_pytorch()))
    except ImportError:
        print("vector_quantize_pytorch is not installed: its row is skipped")
    # interleave the measurements, so that load on the machine hits every row alike
    results = {name: [] for name, _ in rows}
    for _ in range(3):
        for name, fn in rows:
            results[name].append(median_ms(fn, args.repeats // 3 or 1))
    base = statistics.median(results[rows[0][0]])
    print(f"\nN={N}, D={D}, K={K}, CPU, {args.threads} threads, torch {torch.__version__}\n")
    print("| what | median ms | x floor |")
    print("|---|---:|---:|")
    for name, _ in rows:
        ms = statistics.median(results[name])
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} |")
    if len(rows) == 4:
        ratio = statistics.median(results[rows[3][0]]) / statistics.median(results[rows[2][0]])
        print(f"\nvector_quantize_pytorch (EMA) / ours (EMA): {ratio:.1f}x")
    after_vq(args)
    for preset in ("ci", "cpu"):
        ms = median_ms(training_step(preset), max(args.repeats // 3, 3), warmup=2)
        print(f"VQ-VAE training step, `{preset}` preset (batch {get_preset(preset)['vqvae']['train']['batch_size']}, "
              f"28x28): {ms:.1f} ms")


def after_vq(args) -> None:
    """The second table: each of ours beside its equivalent, measured interleaved in this run."""
    pairs = [("rotation trick / straight-through (VectorQuantizer, K=512, D=64)", ours(False, True), ours(False))]
    try:
        pairs += [(f"FSQ {FSQ_LEVELS}: ours / vector_quantize_pytorch", ours_fsq(), their_fsq()),
                  (f"LFQ 2^{LFQ_DIM}: ours / vector_quantize_pytorch", ours_lfq(), their_lfq())]
    except ImportError:
        print("vector_quantize_pytorch is not installed: the FSQ and LFQ comparisons are skipped")
    try:
        import vector_quantize_pytorch as peer

        from vqvae_lib.quantizers import BSQ, SimVQ

        pairs += [(f"cosine lookup, d={COSINE_DIM} (EMA): ours / vector_quantize_pytorch",
                   ours(True, l2_normalize=True, lookup_dim=COSINE_DIM),
                   theirs(peer.VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True, codebook_dim=COSINE_DIM,
                                              accept_image_fmap=True))),
                  (f"SimVQ, K={K}: ours / vector_quantize_pytorch", ours_module(SimVQ(K, D)),
                   theirs(peer.SimVQ(dim=D, codebook_size=K, rotation_trick=False, channel_first=True))),
                  (f"BSQ 2^{LFQ_DIM}: ours / vector_quantize_pytorch LFQ(spherical=True)",
                   ours_module(BSQ(LFQ_DIM), LFQ_DIM),
                   theirs(peer.LFQ(dim=LFQ_DIM, spherical=True, entropy_loss_weight=0.1, commitment_loss_weight=0.25),
                          LFQ_DIM))]
    except ImportError:
        print("vector_quantize_pytorch is not installed: chapter 11's comparisons are skipped")
    from vqvae_lib.quantizers import IBQ
    pairs += [(f"IBQ / VectorQuantizer, K={k}", ours_module(IBQ(k, D)), ours(False, num_codes=k)) for k in IBQ_SIZES]
    results = {(name, side): [] for name, *_ in pairs for side in (0, 1)}
    for _ in range(3):
        for name, *fns in pairs:
            for side, fn in enumerate(fns):
                results[name, side].append(median_ms(fn, args.repeats // 3 or 1))
    print(f"\nAfter VQ: forward + backward on N={N} positions, CPU, {args.threads} threads\n")
    print("| what | ours ms | reference ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, *_ in pairs:
        a, b = statistics.median(results[name, 0]), statistics.median(results[name, 1])
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
