"""Saving and loading models as safetensors weights + a JSON config (never pickle).

``save_pretrained(directory)`` writes ``config.json`` and ``model.safetensors``, the Hugging Face
layout; ``Class.from_pretrained(directory)`` rebuilds the model from the config and loads the weights.
"""
from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err})") from None


def read_safetensors(path: Path, what: str) -> dict:
    """Load tensors from a .safetensors file; anything else (a pickle, a truncated file) is refused."""
    if not Path(path).is_file():
        raise ValueError(f"{what}: {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{what}: {path} is not a valid safetensors file ({err}); "
                         "pickled checkpoints (.pt, .pth, .bin) are refused") from None


def register_to_config(init):
    """Decorate a model's ``__init__`` so that ``self.config`` holds every constructor argument.

    The arguments are captured once, by name, with their defaults filled in, so a new argument can
    never be forgotten on save and load: ``type(model)(**model.config)`` rebuilds the same model.
    (The same idea as diffusers' ``register_to_config``.) Values must be JSON-serialisable.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config = dict(bound.arguments)
        config.pop("self")
        init(self, *args, **kwargs)
        self.config = config  # after init: nn.Module.__init__ must run before attributes are set

    return wrapper


class PretrainedMixin:
    """Adds save_pretrained / from_pretrained to an nn.Module whose ``__init__`` is decorated with
    :func:`register_to_config` (its ``config`` dict rebuilds it)."""

    config: dict

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps({"class": type(self).__name__, **self.config}, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        return directory

    @classmethod
    def from_pretrained(cls, directory, map_location="cpu"):
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"checkpoint directory {directory} does not exist")
        config = read_json(directory / CONFIG_NAME, "checkpoint config")
        saved_class = config.pop("class", None)
        if saved_class != cls.__name__:
            raise ValueError(f"checkpoint in {directory} holds a {saved_class}, not a {cls.__name__}")
        try:
            with torch.random.fork_rng(devices=[]):  # the layers' initial draws are overwritten below
                model = cls(**config)
        except TypeError as err:
            raise ValueError(f"checkpoint config in {directory} does not fit {cls.__name__}: {err}") from None
        state = read_safetensors(directory / WEIGHTS_NAME, "checkpoint weights")
        expected = model.state_dict()
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        bad_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
        if missing or unexpected or bad_shape:
            raise ValueError(f"checkpoint weights in {directory} do not match its config: "
                             f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, "
                             f"wrong shape {sorted(bad_shape)[:5]}")
        model.load_state_dict(state)
        return model.to(map_location)
