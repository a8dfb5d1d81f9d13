"""Data-parallel training on PyTorch's own engine: ``torch.distributed``, launched by ``torchrun``.

    torchrun --nproc_per_node=2 -m vqvae_lib train-vqvae --preset cpu --out runs/vqvae

Each rank (process) holds a full copy of the model and works on its slice of every global batch.
What must agree across ranks is kept in agreement here, by collective operations:
gradients are averaged (so the update is the single-process update on the global batch), and the
quantizer all-reduces its code counts and EMA sums and gathers its encoder outputs before a k-means
initialisation or a dead-code restart (see :class:`vqvae_lib.quantizers.vq.VectorQuantizer`).

Every function here is a no-op in a single process, so the library calls them unconditionally and a
plain ``python -m vqvae_lib ...`` run is unchanged.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

# A rank that dies makes the others' next collective fail after at most this long, instead of hanging.
COLLECTIVE_TIMEOUT = timedelta(seconds=float(os.environ.get("VQVAE_COLLECTIVE_TIMEOUT_S", "300")))


def is_distributed() -> bool:
    """True inside a process group of two or more ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Only the main rank (0) writes files and shows progress bars."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout: timedelta = COLLECTIVE_TIMEOUT) -> torch.device | None:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL with one GPU per rank when CUDA is available,
    else gloo on the CPU. Returns this rank's device, or None when not launched by torchrun."""
    if not launched_by_torchrun():
        return None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    return device


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where a tensor made only for a collective must live: NCCL reduces CUDA tensors, gloo CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch's indices ``idx: (B,)`` -> (B / world_size,).

    Rank r takes the r-th of world_size equal parts, so the ranks together see exactly the batch a
    single process sees, in the same order (which k-means and the restarts rely on).
    """
    n = world_size()
    if len(idx) % n:
        raise ValueError(f"the batch of {len(idx)} does not split evenly over {n} processes; "
                         f"choose a batch size divisible by {n}")
    size = len(idx) // n
    return idx[rank() * size:(rank() + 1) * size]


def shard_range(n: int) -> tuple[int, int]:
    """(start, stop) of this rank's part of ``n`` items for sharded evaluation (the whole when n < ranks)."""
    world = world_size()
    if n < world:
        return 0, n
    return rank() * n // world, (rank() + 1) * n // world


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place; every rank receives the same result."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``t: (N, ...)`` (equal shapes) along dim 0 in rank order -> (world * N, ...)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` on every rank with rank ``src``'s values, in place."""
    if is_distributed():
        dist.broadcast(t, src)
    return t


def average_gradients(params) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one flat all-reduce).

    With equal shards of a batch-mean loss, the mean of the shards' gradients is the gradient of
    the global batch, so the optimiser step equals the single-process step.
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    for p, g in zip(params, flat.split([g.numel() for g in grads])):
        if p.grad is None:
            p.grad = g.view_as(p).clone()
        else:
            p.grad.copy_(g.view_as(p))


def sum_over_ranks(*values: float) -> list[float]:
    """The sums over the ranks of a few Python scalars (in float64), the same on every rank."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=collective_device())
    return all_reduce_sum_(t).tolist()


def mean_over_ranks(values: dict) -> dict:
    """The mean over the ranks of a dict of scalars (logged losses of equal shards: the global batch's)."""
    if not is_distributed():
        return values
    keys = sorted(values)
    return {k: v / world_size() for k, v in zip(keys, sum_over_ranks(*(values[k] for k in keys)))}
