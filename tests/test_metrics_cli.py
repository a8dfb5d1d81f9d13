import json
import math

import pytest
import torch

from vqvae_lib import VQVAE, codebook_usage, evaluate_vqvae, get_preset, nmse, perplexity
from vqvae_lib.cli import main
from vqvae_lib.data import load_images
from vqvae_lib.metrics import bits_per_dim


def test_nmse_and_perplexity():
    x = torch.rand(4, 1, 8, 8)
    assert nmse(x, x, 0.1) == 0.0
    assert nmse(x, x + 0.1, 0.1) == pytest.approx(0.1, rel=1e-4)
    assert perplexity(torch.arange(8).repeat(5), num_codes=8) == pytest.approx(8.0)
    assert perplexity(torch.tensor([5, 5, 0, 0])) == pytest.approx(2.0)
    assert bits_per_dim(math.log(2) * 10, 10) == pytest.approx(1.0)


def test_usage_is_counted_over_the_whole_split():
    data = load_images("mnist-5k", "test", limit=300)
    model = VQVAE(num_codes=16, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1)
    counts = codebook_usage(model, data, batch_size=64)  # 5 batches
    assert counts.shape == (16,) and int(counts.sum()) == 300 * 7 * 7
    metrics = evaluate_vqvae(model, data, batch_size=64)
    assert metrics["codes_used"] == int((counts > 0).sum())
    assert metrics["perplexity"] == pytest.approx(perplexity(counts), rel=1e-5)


def test_presets_switch(monkeypatch):
    monkeypatch.setenv("VQVAE_PRESET", "ci")
    assert get_preset()["name"] == "ci"
    assert get_preset("gpu")["vqvae"]["model"]["num_codes"] == 512
    monkeypatch.setenv("VQVAE_PRESET", "huge")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_preset()


def test_command_line_train_prior_sample(tmp_path, capsys):
    vq, prior, png = tmp_path / "vq", tmp_path / "prior", tmp_path / "samples.png"
    main(["train-vqvae", "--data", "mnist-5k", "--preset", "ci", "--steps", "20", "--out", str(vq)])
    metrics = json.loads((vq / "metrics.json").read_text())
    assert {"test_nmse", "test_perplexity", "codes_used"} <= set(metrics) and metrics["steps"] == 20
    assert VQVAE.from_pretrained(vq).config["num_codes"] == 64
    main(["train-prior", "--vqvae", str(vq), "--preset", "ci", "--steps", "10", "--out", str(prior)])
    assert json.loads((prior / "metrics.json").read_text())["grid_shape"] == [7, 7]
    main(["sample", "--vqvae", str(vq), "--prior", str(prior), "-n", "4", "--out", str(png)])
    assert png.stat().st_size > 1000
    with pytest.raises(SystemExit):
        main(["train-vqvae", "--preset", "nope", "--out", str(vq)])
