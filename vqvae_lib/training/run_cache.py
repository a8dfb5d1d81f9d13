"""Finished training runs kept on disk, named by everything that determines their result.

``train(model, data, ..., cache="runs/cache")`` trains once; a later call whose fingerprint is the same
(in this process, another chapter, or the book build after the notebook tests) loads the weights and
the history instead of training again. Training is deterministic for a fixed seed on one device, so the
loaded run is the run that would have been computed (tests/test_run_cache.py checks it bitwise).

The fingerprint covers the model (every class in it, its config, its initial weights and which of them
train), the data, every training setting, the device type and CPU thread count, the source of this
library and torch's version. Code outside the library is not in it, so a model with a part whose class
is defined elsewhere (say, in a notebook cell) is never cached: :func:`run_fingerprint` returns None
and it simply trains.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save

CACHEABLE_MODULES = ("vqvae_lib", "torch", "builtins")
RUN_CACHE = "runs/cache"  # where the chapters keep their runs: beside the recipes' runs/, relative to the notebook
LIBRARY = Path(__file__).resolve().parents[1]  # vqvae_lib/, every subpackage included


@functools.lru_cache(maxsize=None)
def source_digest(package_dir: Path = LIBRARY) -> str:
    """sha256 of every ``.py`` file below ``package_dir`` (paths and contents): any edit changes it."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(str(path.relative_to(package_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def tensors_digest(tensors: dict) -> str:
    """sha256 of named tensors: names, dtypes, shapes and values (via safetensors' byte layout)."""
    return hashlib.sha256(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})).hexdigest()


def dataset_digest(dataset) -> str | None:
    """Digest of an in-memory data set (ImageDataset or TensorDataset), None for any other kind."""
    if dataset is None:
        return "none"
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return tensors_digest({"images": dataset.images, "labels": dataset.labels})
    if hasattr(dataset, "tensors"):
        return tensors_digest({str(i): t for i, t in enumerate(dataset.tensors)})
    return None


def library_classes_only(model: torch.nn.Module) -> bool:
    return all(cls.__module__.split(".")[0] in CACHEABLE_MODULES
               for m in model.modules() for cls in type(m).__mro__)


def run_fingerprint(model: torch.nn.Module, train_data, eval_data, settings: dict) -> str | None:
    """A hex name for the run, or None when it cannot be named safely (see the module docstring).

    settings: every argument of :func:`vqvae_lib.training.train.train` that changes the result, JSON-serialisable.
    """
    if not hasattr(model, "config") or not library_classes_only(model):
        return None
    data = (dataset_digest(train_data), dataset_digest(eval_data))
    if None in data:
        return None
    described = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": model.config,
        "initial_weights": tensors_digest(model.state_dict()),
        "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
        "data": data,
        "settings": settings,
        "library": source_digest(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:24]


def finished(directory: Path, steps: int) -> bool:
    """Whether ``directory`` holds a run checkpointed at its last step."""
    state = Path(directory) / "trainer_state.json"
    return state.is_file() and json.loads(state.read_text()).get("step") == steps
