"""One training loop for the VAE, the VQ-VAE and the prior.

Any model with ``training_step(batch) -> dict`` (a ``"loss"`` tensor plus scalars to log) trains here,
on CPU or CUDA (bf16 autocast on CUDA, optional ``torch.compile``), with a step budget, periodic
evaluation, a ``tqdm.auto`` bar, checkpoints and exact resume. Under ``torchrun`` the same loop is
data-parallel (:mod:`vqvae_lib.distributed`): ``batch_size`` is the global batch, each rank trains on
its slice, gradients are averaged, and only rank 0 writes checkpoints and shows the bar.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoint import read_json, read_safetensors
from ..data import get_batch, iter_batches
from ..device import autocast, resolve_device
from ..seeding import generator, seeded
from .run_cache import finished, run_fingerprint


@dataclass
class History:
    """Logged scalars: ``train[name]`` at ``train_steps``, ``eval[name]`` at ``eval_steps``."""

    train_steps: list = field(default_factory=list)
    train: dict = field(default_factory=dict)
    eval_steps: list = field(default_factory=list)
    eval: dict = field(default_factory=dict)

    def log(self, kind: str, step: int, values: dict) -> None:
        getattr(self, f"{kind}_steps").append(step)
        for k, v in values.items():
            getattr(self, kind).setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def to_dict(self) -> dict:
        return {"train_steps": self.train_steps, "train": self.train, "eval_steps": self.eval_steps, "eval": self.eval}

    def plot(self, keys=None, axes=None, title: str | None = None):
        """One panel per logged quantity, train and eval curves against the step. Returns the figure."""
        from ..viz import plot_history
        return plot_history(self, keys=keys, axes=axes, title=title)


def batch_order(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: epoch e is a permutation seeded by (seed, e), so any step
    can be recomputed after a resume without replaying the ones before."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=generator(seed, epoch))
    return perm[k * batch_size:(k + 1) * batch_size] if n >= batch_size else perm


@torch.no_grad()
def evaluate(model, dataset: Dataset, batch_size: int = 256, device=None) -> dict:
    """Mean of ``training_step``'s scalars over a whole dataset, in eval mode (weighted by batch size).

    Data-parallel: each rank evaluates its part of the dataset and the sums are reduced.
    """
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    totals, n = {}, 0
    start, stop = distributed.shard_range(len(dataset))
    for batch in iter_batches(dataset, batch_size, device, start, stop):
        with autocast(device):
            values = model.training_step(batch)
        for k, v in values.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(batch[0])
        n += len(batch[0])
    model.train(was_training)
    if stop - start < len(dataset):  # sharded: sum the ranks' parts
        keys = sorted(totals)
        *sums, n = distributed.sum_over_ranks(*(totals[k] for k in keys), n)
        totals = dict(zip(keys, sums))
    return {k: v / n for k, v in totals.items()}


WARMUP_STEPS = 2  # ms_per_step: steps run before the timed ones (first-call costs)


def ms_per_step(model, train_set, batch_size: int, device, steps: int) -> float:
    """Median wall time of ``steps`` optimiser steps (forward, backward, Adam) of a copy of ``model``, in ms.

    Timed apart from :func:`train`, whose own time says nothing when its run comes from a cache. Draws
    inside the forward pass (a masked prior's masks) come from a seeded global RNG, restored afterwards.
    """
    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    idx = torch.arange(batch_size) % len(train_set)
    batch = get_batch(train_set, idx, device)
    times = []
    with seeded(0):
        for _ in range(WARMUP_STEPS + steps):
            start = time.perf_counter()
            loss = model.training_step(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times[WARMUP_STEPS:])[steps // 2]


def learning_rate(step: int, steps: int, lr: float, lr_decay: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps``: ``lr``, then over the last ``lr_decay``
    fraction of the steps falling linearly to lr / (number of decay steps) at the last one.

    A short run that ends at full learning rate ends wherever Adam's last noisy steps left it; decaying
    only at the end keeps the progress of the constant phase and removes that noise (the
    warmup-stable-decay schedule without the warmup).
    """
    decay_steps = round(lr_decay * steps)
    return lr if step < steps - decay_steps else lr * (steps - step) / decay_steps


def train(model, train_data: Dataset, *, steps: int, batch_size: int = 64, lr: float = 2e-3, lr_decay: float = 0.0,
          eval_data: Dataset | None = None, eval_every: int = 0, log_every: int = 10, device=None,
          compile: bool = False, bf16: bool = True, checkpoint_dir=None, checkpoint_every: int = 0,
          resume: bool = False, seed: int = 0, progress: bool = True, history: History | None = None,
          cache=None) -> History:
    """Train ``model`` for ``steps`` optimiser steps with Adam; returns the :class:`History`.

    lr_decay: the fraction of the steps at the end over which the learning rate falls linearly
      (:func:`learning_rate`); 0 keeps it constant.

    bf16: on CUDA, run the forward pass under bf16 autocast (False: float32 throughout).
    checkpoint_dir: where ``checkpoint_every`` steps (and at the end) the model, optimiser, RNG and
      history are written (safetensors + JSON). ``resume=True`` continues from it to the same result.
    cache: a folder of finished runs (:mod:`vqvae_lib.training.run_cache`): a run already there under this
      run's fingerprint is loaded, weights and history, instead of trained; otherwise it trains and is
      stored there. Single-process only; not with checkpoint_dir, resume or history.
    A non-finite loss stops training with a FloatingPointError; the last good checkpoint is kept.
    Under torchrun, ``batch_size`` is the global batch and must divide by the number of processes.
    """
    if steps < 0 or batch_size < 1 or len(train_data) == 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1 and a non-empty dataset "
                         f"(got {steps}, {batch_size}, {len(train_data)} items)")
    if not 0 <= lr_decay <= 1:
        raise ValueError(f"lr_decay is the fraction of the steps that decay the learning rate: "
                         f"it must lie in [0, 1], got {lr_decay}")
    world, main = distributed.world_size(), distributed.is_main()
    if batch_size % world or min(batch_size, len(train_data)) % world:
        raise ValueError(f"the global batch size {batch_size} (dataset of {len(train_data)}) does not split "
                         f"evenly over {world} processes")
    device = resolve_device(device)
    if cache is not None:
        if checkpoint_dir is not None or resume or history is not None or world > 1:
            raise ValueError("cache= keeps its own checkpoint of a whole single-process run: "
                             "pass no checkpoint_dir, resume or history with it, and do not launch it with torchrun")
        settings = dict(steps=steps, batch_size=batch_size, lr=lr, lr_decay=lr_decay, eval_every=eval_every,
                        log_every=log_every, device=device.type, compile=compile, bf16=bf16, seed=seed,
                        cpu_threads=torch.get_num_threads())  # threads split the sums: the last bits differ
        key = run_fingerprint(model, train_data, eval_data, settings)
        if key is not None:
            checkpoint_dir, checkpoint_every = Path(cache) / key, 0  # only the finished run is kept
            if finished(checkpoint_dir, steps):
                # no optimiser for a finished run: building the first one in a process imports
                # torch._dynamo, 1.7 s on a CPU core
                history = load_model_and_history(checkpoint_dir, model.to(device))[1]
                model.eval()
                return history
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    history = history or History()
    start = 0
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        start, history, rng = load_training_state(checkpoint_dir, model, opt, world)
    step_fn = torch.compile(model.training_step) if compile else model.training_step

    # Draws inside the model's forward pass (the VAE's noise) come from the global RNG, seeded
    # here and restored afterwards: the caller's RNG neither affects the run nor is changed by it.
    with seeded(seed):
        if resume:
            set_rng_state(rng)
        bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (progress and main),
                   desc=type(model).__name__)
        for step in bar:
            idx = distributed.shard(batch_order(len(train_data), batch_size, step, seed))
            batch = get_batch(train_data, idx, device)
            with autocast(device, bf16):
                values = step_fn(batch)
            loss = values["loss"]
            if not torch.isfinite(loss):
                where = f"; the last good checkpoint is in {checkpoint_dir}" if checkpoint_dir else ""
                raise FloatingPointError(f"loss became non-finite ({float(loss.detach())}) at step {step}{where}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(params)
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, steps, lr, lr_decay)
            opt.step()
            done = step + 1
            if log_every and (done % log_every == 0 or done == steps):
                values = distributed.mean_over_ranks(values)
                history.log("train", done, values)
                bar.set_postfix({k: f"{float(v.detach()) if torch.is_tensor(v) else v:.4g}"
                                 for k, v in values.items()})
            if eval_data is not None and eval_every and (done % eval_every == 0 or done == steps):
                history.log("eval", done, evaluate(model, eval_data, device=device))
            if main and checkpoint_dir and ((checkpoint_every and done % checkpoint_every == 0) or done == steps):
                save_training_state(checkpoint_dir, model, opt, done, history, world)
    model.eval()
    return history


def save_training_state(directory, model, opt, step: int, history: History, world_size: int = 1) -> None:
    """Write model (save_pretrained), optimiser tensors, RNG state and history; atomically replaced.

    world_size: the number of data-parallel processes, recorded so a resume can insist on the same.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in state["state"].items() for k, v in s.items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    (tmp / "trainer_state.json").write_text(json.dumps(
        {"step": step, "world_size": world_size, "param_groups": groups, "history": history.to_dict()}))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def load_model_and_history(directory, model, world_size: int = 1) -> tuple[dict, History]:
    """Load a checkpoint's weights into ``model`` in place; returns (its trainer state, its history).

    A checkpoint written by a run with another number of processes is refused: the batches each
    rank saw, and so the exact continuation, depend on it.
    """
    directory = Path(directory)
    meta = read_json(directory / "trainer_state.json", "trainer state")
    saved_world = meta.get("world_size", 1)
    if saved_world != world_size:
        raise ValueError(f"the checkpoint in {directory} was written by a run with {saved_world} process(es), "
                         f"this run has {world_size}: resume with --nproc_per_node={saved_world}")
    fresh = type(model).from_pretrained(directory)
    if fresh.config != model.config:
        raise ValueError(f"checkpoint in {directory} was made with config {fresh.config}, "
                         f"which does not match this model's {model.config}")
    model.load_state_dict(fresh.state_dict())
    h = meta["history"]
    return meta, History(h["train_steps"], h["train"], h["eval_steps"], h["eval"])


def load_training_state(directory, model, opt, world_size: int = 1) -> tuple[int, History, dict]:
    """Load model and optimiser state in place; returns (step, history, saved RNG state)."""
    meta, history = load_model_and_history(directory, model, world_size)
    tensors = read_safetensors(Path(directory) / "optimizer.safetensors", "optimizer state")
    state = {}
    for key, v in tensors.items():
        if key.startswith("rng."):
            continue
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v  # the optimiser moves its state to the params
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta["step"], history, rng


def set_rng_state(rng: dict) -> None:
    """Restore the global RNG state saved by :func:`save_training_state` (``rng.cpu``, ``rng.cuda``)."""
    torch.set_rng_state(rng["rng.cpu"])
    if "rng.cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["rng.cuda"])
