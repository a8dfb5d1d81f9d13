"""Every quantizer of chapter 9 is a drop-in for VectorQuantizer: in VQVAE, its saved checkpoint, the priors,
the command line, the chapter 7 widgets and the comparison's row."""
import json

import pytest
import torch
from conftest import saved_and_loaded

from vqvae_lib import VQVAE, GatedPixelCNN
from vqvae_lib.cli import main
from vqvae_lib.data import ImageDataset
from vqvae_lib.presets import get_preset
from vqvae_lib.quantizers import ALL_MATCHED, MATCHED_BITS, SIX_BITS, build_quantizer
from vqvae_lib.recipes import build_vqvae, matched_preset
from vqvae_lib.recipes.quantizer_comparison import compare_quantizer
from vqvae_lib.widgets import CodebookAtlasState, LatentEditorState


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=g),
                        torch.arange(48) % 10)


@pytest.mark.parametrize("name", list(ALL_MATCHED))
def test_each_matched_quantizer_is_a_drop_in(name, data, tmp_path):
    model = build_vqvae(matched_preset(get_preset("ci"), name), data, seed=0)
    assert model.quantizer.num_codes == SIX_BITS
    x, _ = data.batch(torch.arange(8))
    model.train()(x).loss.backward()  # trains: a loss with a gradient
    model.eval()
    indices = model.encode(x)
    assert indices.shape == (8, 7, 7) and indices.dtype == torch.long
    assert 0 <= int(indices.min()) and int(indices.max()) < SIX_BITS
    assert torch.allclose(model.decode_indices(indices), model(x).x_recon, atol=1e-5)  # lookup(encode) is z_q
    saved_and_loaded(model, x, tmp_path / name)
    prior = GatedPixelCNN(SIX_BITS, hidden_channels=8, num_layers=2)
    assert torch.isfinite(prior.nll(indices))
    assert CodebookAtlasState(model, x).codes_used == len(torch.unique(indices))
    LatentEditorState(model, x[0])


def test_the_registry_refuses_unknown_kinds_and_mismatched_sizes():
    with pytest.raises(ValueError, match="unknown quantizer kind 'pq'"):
        build_quantizer(64, 16, 0.25, {"kind": "pq"})
    with pytest.raises(ValueError, match="has 60 codes of 3 channels, but the VQ-VAE has num_codes=64"):
        build_quantizer(64, 3, 0.25, {"kind": "fsq", "levels": [3, 4, 5]})


def test_command_line_trains_any_quantizer(tmp_path, capsys):
    out = tmp_path / "fsq"
    assert main(["train-vqvae", "--preset", "ci", "--steps", "2", "--quantizer", "fsq", "--out", str(out)]) == 0
    recipe = json.loads((out / "metrics.json").read_text())["recipe"]
    assert recipe["model"]["quantizer"] == {"kind": "fsq", "levels": [4, 4, 4]}
    assert VQVAE.from_pretrained(out).quantizer.num_codes == SIX_BITS
    with pytest.raises(SystemExit):
        main(["train-vqvae", "--quantizer", "pq", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'pq'" in capsys.readouterr().err


def test_a_comparison_row_trains_the_model_and_its_prior(data, tmp_path):
    preset = get_preset("ci")
    preset["quantizer_comparison"] = dict(steps=3, prior_steps=2, seeds=[0], timed_steps=1)
    row = compare_quantizer("lfq", preset, data, data, seed=0, device="cpu", cache=tmp_path, progress=False)
    assert row["num_codes"] == SIX_BITS and 1 <= row["codes_used"] <= SIX_BITS
    assert 0 < row["prior_bits_per_code"] and row["ms_per_step"] > 0 and row["nmse"] > 0
    assert len(list(tmp_path.iterdir())) == 2  # the VQ-VAE's run and the prior's, cached
    again = compare_quantizer("lfq", preset, data, data, seed=0, device="cpu", cache=tmp_path, progress=False)
    assert again["nmse"] == row["nmse"] and again["prior_bits_per_code"] == row["prior_bits_per_code"]


def test_a_matched_preset_is_a_copy_that_a_chapter_may_change():
    p = matched_preset(get_preset("ci"), "fsq")
    p["vqvae"]["model"]["quantizer"]["range_weight"] = 0.0  # chapter 9's paper-FSQ run
    assert "range_weight" not in MATCHED_BITS["fsq"]["quantizer"]
    assert "range_weight" not in matched_preset(get_preset("ci"), "fsq")["vqvae"]["model"]["quantizer"]
