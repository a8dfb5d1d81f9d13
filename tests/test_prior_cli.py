"""Choosing a prior: presets per kind, build_prior, load_prior, and train-prior --kind / sample on the command line."""
import json

import pytest
import torch

from vqvae_lib import GatedPixelCNN, MaskedPrior, TransformerPrior, get_preset
from vqvae_lib.cli import main
from vqvae_lib.presets import PRIOR_LR_DECAY
from vqvae_lib.priors.base import DEFAULT_LABEL_DROPOUT
from vqvae_lib.recipes import PRIOR_KINDS, build_prior, load_prior, recipe
from vqvae_lib.seeding import seeded

CI_CODES, CI_CLASSES = 64, 10  # the ci and cpu presets' VQ-VAE, on the digits
# each prior of a preset within this fraction of the PixelCNN's parameter count; ci's transformers are
# smaller on purpose (presets.CI_TRANSFORMER: a third block did not help in ci's 300 steps)
ROUGHLY = {"ci": 0.25, "cpu": 0.15}


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", ["ci", "cpu"])
def test_every_kind_has_about_the_pixelcnns_size(preset):
    p = get_preset(preset)
    sizes = {kind: num_parameters(build_prior(p, CI_CODES, CI_CLASSES, seed=0, kind=kind)) for kind in PRIOR_KINDS}
    assert all(abs(n / sizes["pixelcnn"] - 1) < ROUGHLY[preset] for n in sizes.values()), sizes


def test_build_prior_builds_each_kind_seeded_and_refuses_an_unknown_one():
    p = get_preset("ci")
    for kind, cls in PRIOR_KINDS.items():
        a, b = (build_prior(p, CI_CODES, CI_CLASSES, seed=3, kind=kind) for _ in range(2))
        assert type(a) is cls and a.num_classes == CI_CLASSES
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match="unknown prior kind 'gan'"):
        build_prior(p, CI_CODES, CI_CLASSES, kind="gan")


def test_the_pixelcnn_recipe_records_no_kind_and_other_kinds_record_theirs():
    """Every prior's recipe records its label dropout (the library's default here), so a prior saved before
    the null class existed is trained again, not loaded; the PixelCNN's records no kind, as before."""
    p = get_preset("ci")
    assert recipe(p, "prior", "mnist-5k", 0) == {
        "preset": "ci", "data": "mnist-5k", "seed": 0, "cpu_threads": torch.get_num_threads(), "world_size": 1,
        "model": {"label_dropout": DEFAULT_LABEL_DROPOUT, "hidden_channels": 32, "num_layers": 6},
        "train": {"steps": 300, "batch_size": 64, "lr": 3e-3, "lr_decay": PRIOR_LR_DECAY}}
    transformer = recipe(p, "prior", "mnist-5k", 0, steps=7, kind="transformer")
    assert transformer["kind"] == "transformer"
    assert transformer["model"] == {"label_dropout": DEFAULT_LABEL_DROPOUT, **p["prior"]["transformer"]["model"]}
    assert transformer["train"]["steps"] == 7
    p["prior"]["maskgit"]["model"]["label_dropout"] = 0.0  # a preset may set its own
    assert recipe(p, "prior", "mnist-5k", 0, kind="maskgit")["model"]["label_dropout"] == 0.0
    assert build_prior(p, CI_CODES, CI_CLASSES, kind="maskgit").label_dropout == 0.0
    assert build_prior(p, CI_CODES, CI_CLASSES).config["label_dropout"] == DEFAULT_LABEL_DROPOUT


def test_load_prior_dispatches_on_the_saved_class(tmp_path):
    with seeded(0):
        priors = [GatedPixelCNN(6, hidden_channels=4, num_layers=2),
                  TransformerPrior(6, 3, 3, embed_dim=8, num_layers=1, num_heads=2, num_classes=2),
                  MaskedPrior(6, 3, 3, embed_dim=8, num_layers=1, num_heads=2)]
    for prior in priors:
        loaded = load_prior(prior.save_pretrained(tmp_path / type(prior).__name__))
        assert type(loaded) is type(prior) and loaded.config == prior.config
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in prior.state_dict().items())
    (tmp_path / "not-a-prior").mkdir()
    (tmp_path / "not-a-prior" / "config.json").write_text('{"class": "VQVAE"}')
    with pytest.raises(ValueError, match="holds a VQVAE, not a prior"):
        load_prior(tmp_path / "not-a-prior")
    with pytest.raises(ValueError, match="does not exist"):
        load_prior(tmp_path / "missing")


# ---------------------------------------------------------------- the command line, end to end
@pytest.fixture(scope="module")
def vqvae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vq"
    assert main(["train-vqvae", "--data", "mnist-5k", "--preset", "ci", "--steps", "5", "--out", str(out)]) == 0
    return out


@pytest.fixture
def tiny_priors(monkeypatch):
    """The ci preset with one-layer transformers: the maskgit run's exact raster-order evaluation takes
    49 forward passes over the test split, seconds at the ci size on one thread; this keeps the test short."""
    preset = get_preset("ci")
    for kind in ("transformer", "maskgit"):
        preset["prior"][kind]["model"] = dict(embed_dim=8, num_layers=1, num_heads=2)
    monkeypatch.setattr("vqvae_lib.recipes.get_preset", lambda name=None: preset)


@pytest.mark.parametrize("kind, cls", [("transformer", TransformerPrior), ("maskgit", MaskedPrior)])
def test_train_prior_with_a_kind_then_sample_from_it(vqvae_dir, tiny_priors, tmp_path, kind, cls):
    prior, png = tmp_path / kind, tmp_path / f"{kind}.png"
    assert main(["train-prior", "--vqvae", str(vqvae_dir), "--preset", "ci", "--kind", kind, "--steps", "3",
                 "--out", str(prior)]) == 0
    metrics = json.loads((prior / "metrics.json").read_text())
    assert metrics["recipe"]["kind"] == kind and metrics["recipe"]["train"]["steps"] == 3
    assert metrics["grid_shape"] == [7, 7]
    assert json.loads((prior / "config.json").read_text())["class"] == cls.__name__
    if kind == "maskgit":  # its loss is not a likelihood: reported beside the exact raster-order bits
        assert "test_bits_per_code" not in metrics
        assert metrics["test_masked_nll"] > 0 and 0 < metrics["test_raster_order_bits_per_code"]
    else:
        assert 0 < metrics["test_bits_per_code"] < metrics["uniform_bits_per_code"] + 1
    assert main(["sample", "--vqvae", str(vqvae_dir), "--prior", str(prior), "-n", "2", "--label", "3",
                 "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    # the trained prior is class-conditional with a null class: sampled without a label, and guided
    assert json.loads((prior / "config.json").read_text())["label_dropout"] > 0
    for extra in ([], ["--label", "3", "--guidance", "1.5"]):
        png.unlink()
        assert main(["sample", "--vqvae", str(vqvae_dir), "--prior", str(prior), "-n", "2", *extra,
                     "--out", str(png)]) == 0
        assert png.stat().st_size > 1000


def test_a_bad_kind_is_a_usage_error(vqvae_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-prior", "--vqvae", str(vqvae_dir), "--kind", "gan", "--out", str(tmp_path / "p")])
    assert exit_info.value.code == 2
    assert "error: argument --kind: invalid choice: 'gan'" in capsys.readouterr().err


def test_a_label_for_an_unconditional_prior_is_a_user_error(vqvae_dir, tmp_path, capsys):
    with seeded(0):
        TransformerPrior(CI_CODES, embed_dim=8, num_layers=1, num_heads=2).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "metrics.json").write_text(json.dumps({"grid_shape": [7, 7]}))
    assert main(["sample", "--vqvae", str(vqvae_dir), "--prior", str(tmp_path / "p"), "--label", "1",
                 "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "without num_classes" in err and len(err.strip().splitlines()) == 1


def test_guidance_without_a_label_or_out_of_range_is_a_user_error(vqvae_dir, tmp_path, capsys):
    """--guidance needs --label (refused before anything is loaded) and a finite w >= 0 (the prior refuses)."""
    missing = tmp_path / "missing"
    assert main(["sample", "--vqvae", str(missing), "--prior", str(missing), "--guidance", "2",
                 "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err == "error: --guidance needs --label: it steers the samples towards that class\n"
    with seeded(0):
        TransformerPrior(CI_CODES, embed_dim=8, num_layers=1, num_heads=2, num_classes=10).save_pretrained(
            tmp_path / "p")
    (tmp_path / "p" / "metrics.json").write_text(json.dumps({"grid_shape": [7, 7]}))
    for w in ("-1", "nan"):
        assert main(["sample", "--vqvae", str(vqvae_dir), "--prior", str(tmp_path / "p"), "--label", "1",
                     "--guidance", w, "--out", str(tmp_path / "s.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: guidance must be a finite number >= 0") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.png").exists()
