import json
import subprocess
import sys

import pytest
import torch

from vqvae_lib import VQVAE, codebook_usage, evaluate_vqvae, get_preset, perplexity
from vqvae_lib.cli import main
from vqvae_lib.data import load_images


def test_perplexity():
    assert perplexity(torch.arange(8).repeat(5), num_codes=8) == pytest.approx(8.0)
    assert perplexity(torch.tensor([5, 5, 0, 0])) == pytest.approx(2.0)


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
    assert main(["train-vqvae", "--data", "mnist-5k", "--preset", "ci", "--steps", "20", "--seed", "3",
                 "--out", str(vq)]) == 0
    metrics = json.loads((vq / "metrics.json").read_text())
    assert {"test_nmse", "test_perplexity", "codes_used"} <= set(metrics) and metrics["steps"] == 20
    assert metrics["recipe"]["seed"] == 3 and metrics["recipe"]["data"] == "mnist-5k"
    assert VQVAE.from_pretrained(vq).config["num_codes"] == 64
    assert main(["train-prior", "--vqvae", str(vq), "--preset", "ci", "--steps", "10", "--out", str(prior)]) == 0
    assert json.loads((prior / "metrics.json").read_text())["grid_shape"] == [7, 7]
    assert main(["sample", "--vqvae", str(vq), "--prior", str(prior), "-n", "4", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["train-vqvae", "--data", "no-such-set", "--out", "{tmp}/x"], "unknown data set 'no-such-set'"),
    (["train-prior", "--vqvae", "{tmp}/missing", "--out", "{tmp}/p"], "does not exist"),
    (["sample", "--vqvae", "{tmp}/missing", "--prior", "{tmp}/missing", "--out", "{tmp}/s.png"], "does not exist"),
])
def test_user_errors_print_one_line_and_exit_2(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    run = subprocess.run([sys.executable, "-m", "vqvae_lib", *args, "--preset", "ci"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and message in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["train-vqvae", "--steps", "0"], ["train-vqvae", "--preset", "nope"],
                                  ["sample", "--vqvae", "a", "--prior", "b", "-n", "-3"]])
def test_bad_numbers_and_choices_are_usage_errors(tmp_path, args):
    run = subprocess.run([sys.executable, "-m", "vqvae_lib", *args, "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "error:" in run.stderr and "Traceback" not in run.stderr


def test_every_option_has_help():
    from vqvae_lib.cli import parser
    for sub in parser()._subparsers._group_actions[0].choices.values():
        missing = [a.dest for a in sub._actions if not a.help and a.dest != "help"]
        assert not missing, f"{sub.prog}: options without help: {missing}"
