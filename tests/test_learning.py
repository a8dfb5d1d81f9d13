"""The ci preset must really learn: figures that the README and the report quote."""
import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from vqvae_lib import VQVAE, GatedPixelCNN, encode_dataset, evaluate, evaluate_vqvae, get_preset, train
from vqvae_lib.data import load_images

REPORT = Path(__file__).resolve().parents[1] / "_build" / "reports" / "learning.json"


@pytest.fixture(scope="module")
def splits():
    return load_images("mnist-5k", "train"), load_images("mnist-5k", "test")


def fit_vqvae(splits, **quantizer):
    preset = get_preset("ci")["vqvae"]
    model_cfg = dict(preset["model"])
    if quantizer:
        model_cfg["quantizer"] = quantizer
    train_set, test_set = splits
    torch.manual_seed(0)
    model = VQVAE(data_variance=train_set.variance(), **model_cfg)
    start = time.perf_counter()
    train(model, train_set, progress=False, device="cpu", **preset["train"])
    seconds = time.perf_counter() - start
    return model, {**evaluate_vqvae(model, test_set, device="cpu"), "train_seconds": round(seconds, 1)}


def write_report(key, value):
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[key] = value
    REPORT.write_text(json.dumps(report, indent=2))
    print(key, value)


@pytest.fixture(scope="module")
def trained(splits):
    return fit_vqvae(splits)


def test_ci_preset_learns(trained):
    model, metrics = trained
    write_report("vqvae_ci", metrics)
    assert metrics["num_codes"] == 64
    assert metrics["nmse"] <= 0.08
    assert metrics["perplexity"] >= 30


def test_ci_preset_without_restarts_or_kmeans(splits):
    _, plain = fit_vqvae(splits, kmeans_init=False, restart_after=0)  # same model, remedies off
    write_report("vqvae_ci_plain", plain)
    assert math.isfinite(plain["nmse"]) and plain["codes_used"] >= 1


def test_prior_beats_uniform(trained, splits):
    model, _ = trained
    codes = {name: TensorDataset(encode_dataset(model, d, device="cpu"), d.labels)
             for name, d in zip(("train", "test"), splits)}
    preset = get_preset("ci")["prior"]
    torch.manual_seed(0)
    prior = GatedPixelCNN(64, num_classes=10, **preset["model"])
    train(prior, codes["train"], progress=False, device="cpu", **preset["train"])
    bits = evaluate(prior, codes["test"], device="cpu")["bits"]
    write_report("prior_ci", {"test_bits_per_code": round(bits, 3), "uniform_bits_per_code": math.log2(64)})
    assert bits < math.log2(64) - 1.5  # a clear margin: at least 1.5 bits per code better
