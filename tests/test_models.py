import pickle

import pytest
import torch

from vqvae_lib import VAE, VQVAE, GatedPixelCNN
from vqvae_lib.evaluation.diagnostics import grads_reached

SMALL = dict(num_codes=16, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1)


def test_vqvae_shapes_default_28x28():
    model = VQVAE(**SMALL)
    x = torch.rand(2, 1, 28, 28)
    out = model(x)
    assert out.x_recon.shape == x.shape and out.vq.indices.shape == (2, 7, 7)
    assert model.encode(x).shape == (2, 7, 7)
    assert model.decode_indices(model.encode(x)).shape == x.shape
    assert torch.allclose(out.loss, out.recon_loss + out.vq.loss)


def test_vqvae_seed_article_configuration_128_to_32():
    model = VQVAE(in_channels=3, downsample=4, **SMALL)
    assert model.encode(torch.rand(1, 3, 128, 128)).shape == (1, 32, 32)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in model.encoder.modules()) == 2


def test_residual_layers_have_distinct_weights():
    model = VQVAE(**{**SMALL, "num_res_layers": 2})
    stack = model.encoder[0][-1]
    w0, w1 = stack.layers[0][1].weight, stack.layers[1][1].weight
    assert w0.data_ptr() != w1.data_ptr() and not torch.equal(w0, w1)


def test_vqvae_gradient_routing():
    model = VQVAE(**SMALL)
    out = model(torch.rand(2, 1, 28, 28))
    groups = {"encoder": list(model.encoder.parameters()), "codebook": [model.quantizer.codebook],
              "decoder": list(model.decoder.parameters())}
    assert grads_reached(out.recon_loss, groups) == {"encoder": True, "codebook": False, "decoder": True}
    assert grads_reached(out.vq.codebook_loss, groups) == {"encoder": False, "codebook": True, "decoder": False}
    assert grads_reached(out.vq.commitment_loss, groups) == {"encoder": True, "codebook": False, "decoder": False}


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 3, 28, 28), "channel"),
    (torch.rand(2, 1, 30, 30), "divisible"),
    (torch.rand(1, 28, 28), r"\(B, C, H, W\)"),
    (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
])
def test_vqvae_bad_input(x, message):
    with pytest.raises(ValueError, match=message):
        VQVAE(**SMALL)(x)


# A new user's mistakes, each refused with a ValueError that says what to pass instead (before: a RuntimeError
# from inside a convolution or a reshape, a NaN loss, or 0-255 images taken silently as floats).
WRONG_IMAGES = [
    (torch.rand(0, 1, 28, 28), "batch is empty"),
    (torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8), r"floats in \[0, 1\].*x.float\(\) / 255"),
    (torch.randint(0, 2, (2, 1, 28, 28)), r"floats in \[0, 1\]"),
    (torch.rand(2, 1, 28, 28, dtype=torch.float64), r"must be torch.float32.*got torch.float64.*x.to\(torch.float32\)"),
    (torch.rand(2, 1, 28, 28).half(), "must be torch.float32"),
    (torch.rand(1, 28, 28), r"\(B, C, H, W\).*x\[None\]"),
]


@pytest.mark.parametrize("x, message", WRONG_IMAGES)
@pytest.mark.parametrize("method", ["__call__", "encode"])
def test_vqvae_refuses_wrong_images_before_computing(x, message, method):
    model = VQVAE(**SMALL)
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        getattr(model, method)(x)
    assert not calls  # refused before the encoder ran


def test_grey_images_into_a_colour_vqvae_name_the_channels():
    with pytest.raises(ValueError, match=r"expected 3 channel\(s\), the model's in_channels, got 1"):
        VQVAE(in_channels=3, **SMALL)(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("indices, message", [
    (torch.zeros(7, 7, dtype=torch.long), r"\(B, h, w\).*indices\[None\]"),
    (torch.zeros(1, 1, 7, 7, dtype=torch.long), r"\(B, h, w\)"),
    (torch.zeros(0, 7, 7, dtype=torch.long), "batch is empty"),
    (torch.zeros(1, 7, 7), r"int64.*got torch.float32.*indices.long\(\)"),
    (torch.zeros(1, 7, 7, dtype=torch.int32), r"int64.*indices.long\(\)"),
])
def test_vqvae_decode_refuses_wrong_code_grids(indices, message):
    model = VQVAE(**SMALL)
    calls = []
    model.decoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        model.decode_indices(indices)
    assert not calls


@pytest.mark.parametrize("value", [16, -1])
def test_vqvae_decode_refuses_out_of_range_indices(value):
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        VQVAE(**SMALL).decode_indices(torch.full((1, 7, 7), value))


@pytest.mark.parametrize("x, message", [(x, m) for x, m in WRONG_IMAGES if x.dim() == 4])
def test_vae_refuses_wrong_images(x, message):
    with pytest.raises(ValueError, match=message):
        VAE(latent_dim=4, hidden_channels=4)(x)


def test_priors_refuse_an_empty_batch_and_a_single_grid():
    from vqvae_lib.priors.maskgit import MaskedPrior
    from vqvae_lib.priors.transformer import TransformerPrior

    priors = [GatedPixelCNN(num_codes=8, hidden_channels=8, num_layers=2),
              TransformerPrior(num_codes=8, embed_dim=16, num_layers=1, num_heads=2),
              MaskedPrior(num_codes=8, embed_dim=16, num_layers=1, num_heads=2)]
    for prior in priors:
        with pytest.raises(ValueError, match="batch is empty"):  # was a NaN loss
            prior.training_step((torch.zeros(0, 7, 7, dtype=torch.long),))
        with pytest.raises(ValueError, match=r"\(B, H, W\)"):  # MaskedPrior's was a TypeError
            prior.training_step((torch.zeros(7, 7, dtype=torch.long),))


def test_vqvae_bad_downsample():
    with pytest.raises(ValueError, match="power of two"):
        VQVAE(downsample=3)


MODELS = [
    (VQVAE, dict(SMALL, quantizer=dict(ema=True)), lambda: torch.rand(2, 1, 28, 28)),
    (VAE, dict(latent_dim=4, hidden_channels=4), None),
    (GatedPixelCNN, dict(num_codes=8, hidden_channels=8, num_layers=2, num_classes=3), None),
]


@pytest.mark.parametrize("cls, kwargs, _", MODELS)
def test_checkpoint_round_trip(tmp_path, cls, kwargs, _):
    model = cls(**kwargs)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_pickle_offered_as_checkpoint_is_refused(tmp_path):
    model = VQVAE(**SMALL)
    model.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "model.safetensors")  # a pickle in disguise
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        VQVAE.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="refused"):
        VQVAE.from_pretrained(tmp_path)


def test_mismatched_or_corrupt_checkpoint_is_refused(tmp_path):
    VQVAE(**SMALL).save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"num_codes": 16', '"num_codes": 32'))
    with pytest.raises(ValueError, match="do not match"):
        VQVAE.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a VQVAE"):
        VAE.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VQVAE.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        VQVAE.from_pretrained(tmp_path / "nowhere")
