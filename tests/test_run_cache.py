"""train(cache=...): a run is trained once, and loading it gives exactly what training gives."""
import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from vqvae_lib import VQVAE, train
from vqvae_lib.data import ImageDataset
from vqvae_lib.seeding import seeded
from vqvae_lib.training.run_cache import LIBRARY, source_digest

SETTINGS = dict(steps=6, batch_size=16, lr=1e-3, log_every=2, eval_every=3, seed=0, progress=False, device="cpu")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageDataset(images, torch.arange(64) % 10)


def small_vqvae(seed=0):
    with seeded(seed):
        return VQVAE(in_channels=1, num_codes=8, code_dim=4, hidden_channels=8, num_res_layers=1, res_channels=4,
                     downsample=2)


@pytest.fixture
def count_steps(monkeypatch):
    """How many optimiser steps train() really takes."""
    train_module = importlib.import_module("vqvae_lib.training.train")  # the package's ``train`` is the function
    calls = []
    real = train_module.get_batch
    monkeypatch.setattr(train_module, "get_batch", lambda *a: calls.append(1) or real(*a))
    return calls


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_cached_run_loads_exactly_what_training_gives(tmp_path, data, count_steps, monkeypatch):
    plain = small_vqvae()
    expected = train(plain, data, eval_data=data, **SETTINGS)
    trained_once = small_vqvae()
    first = train(trained_once, data, eval_data=data, **SETTINGS, cache=tmp_path)
    assert len(count_steps) == 2 * SETTINGS["steps"]
    loaded = small_vqvae()

    def no_optimizer(*args, **kwargs):  # the first one built in a process imports torch._dynamo (seconds)
        raise AssertionError("loading a finished run built an optimiser")

    monkeypatch.setattr(torch.optim, "Adam", no_optimizer)
    second = train(loaded, data, eval_data=data, **SETTINGS, cache=tmp_path)
    assert len(count_steps) == 2 * SETTINGS["steps"], "the second call trained instead of loading"
    assert len(list(tmp_path.iterdir())) == 1
    for model in (trained_once, loaded):
        assert not model.training
        for k, v in plain.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
    assert first.to_dict() == second.to_dict() == expected.to_dict()


@pytest.mark.parametrize("change", ["seed", "steps", "lr", "weights", "data", "eval_data"])
def test_anything_that_changes_the_result_trains_anew(tmp_path, data, count_steps, change):
    train(small_vqvae(), data, **SETTINGS, cache=tmp_path)
    model, settings, train_data, eval_data = small_vqvae(), dict(SETTINGS), data, None
    if change in ("seed", "steps"):
        settings[change] += 1
    elif change == "lr":
        settings["lr"] *= 2
    elif change == "weights":
        model = small_vqvae(seed=1)
    elif change == "data":
        train_data = ImageDataset(255 - data.images, data.labels)
    else:
        eval_data = data
    before = len(count_steps)
    train(model, train_data, **settings, eval_data=eval_data, cache=tmp_path)
    assert len(count_steps) - before == settings["steps"]
    assert len(list(tmp_path.iterdir())) == 2


class OutsideTheLibrary(nn.Module):
    """A model part whose code the fingerprint cannot see (as a notebook cell's class)."""

    def forward(self, x):
        return x


def test_a_model_with_code_from_outside_the_library_always_trains(tmp_path, data, count_steps):
    for _ in range(2):
        model = small_vqvae()
        model.extra = OutsideTheLibrary()
        train(model, data, **SETTINGS, cache=tmp_path)
    assert len(count_steps) == 2 * SETTINGS["steps"] and not any(tmp_path.iterdir())


def test_editing_the_library_changes_the_fingerprint(tmp_path):
    (tmp_path / "model.py").write_text("x = 1\n")
    before = source_digest(tmp_path)
    (tmp_path / "model.py").write_text("x = 2\n")
    source_digest.cache_clear()
    assert source_digest(tmp_path) != before


def test_the_fingerprint_covers_the_whole_library_not_only_its_training_folder():
    import vqvae_lib
    library = Path(vqvae_lib.__file__).resolve().parent
    assert LIBRARY == library and (LIBRARY / "quantizers" / "vq.py").exists()
    assert source_digest() == source_digest(library)


def test_cache_refuses_its_own_checkpoint_settings(tmp_path, data):
    with pytest.raises(ValueError, match="cache= keeps its own checkpoint"):
        train(small_vqvae(), data, **SETTINGS, cache=tmp_path, checkpoint_dir=tmp_path / "ckpt")
