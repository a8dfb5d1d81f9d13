"""The bug-hunt variants of chapter 3: each mistake is wired in exactly as described."""
import math

import pytest
import torch

from vqvae_lib import VQVAE, ImageDataset, train
from vqvae_lib.bugs import (NoStraightThroughVQVAE, SwappedBetaVQVAE, gradient_routing, latent_stats,
                            parameter_groups)

SMALL = dict(num_codes=8, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1)
CORRECT = {"recon_loss": {"encoder": True, "codebook": False, "decoder": True},
           "codebook_loss": {"encoder": False, "codebook": True, "decoder": False},
           "commitment_loss": {"encoder": True, "codebook": False, "decoder": False}}


@pytest.fixture
def x():
    return torch.rand(4, 1, 28, 28)


def test_correct_model_routing(x):
    assert gradient_routing(VQVAE(**SMALL), x) == CORRECT


def test_no_straight_through_starves_the_encoder(x):
    model = NoStraightThroughVQVAE(**SMALL)
    table = gradient_routing(model, x)
    assert table["recon_loss"] == {"encoder": False, "codebook": True, "decoder": True}
    assert table["codebook_loss"] == CORRECT["codebook_loss"]
    assert table["commitment_loss"] == CORRECT["commitment_loss"]
    out = model(x)
    assert out.x_recon.shape == x.shape and out.vq.z_q.shape == (4, 4, 7, 7)
    assert torch.equal(out.vq.z_q, model.quantizer.lookup(out.vq.indices))
    assert torch.allclose(out.loss, out.recon_loss + out.vq.loss)


def test_same_forward_values_as_the_correct_model(x):
    torch.manual_seed(1)
    right = VQVAE(**SMALL)
    for cls in (NoStraightThroughVQVAE, SwappedBetaVQVAE):
        wrong = cls(**SMALL)
        wrong.load_state_dict(right.state_dict())
        a, b = right(x), wrong(x)
        assert torch.allclose(a.x_recon, b.x_recon, atol=1e-6)  # the bugs change gradients, not outputs
        assert torch.allclose(a.recon_loss, b.recon_loss, atol=1e-7)


def test_swapped_beta_weights(x):
    model = SwappedBetaVQVAE(beta=0.25, **SMALL)
    out = model(x)
    assert torch.allclose(out.vq.loss, 0.25 * out.vq.codebook_loss + out.vq.commitment_loss)
    assert torch.allclose(out.loss, out.recon_loss + out.vq.loss)
    assert gradient_routing(model, x) == CORRECT  # same routes, different weights


def test_parameter_groups_cover_the_model():
    model = VQVAE(**SMALL)
    groups = parameter_groups(model)
    assert sum(len(ps) for ps in groups.values()) == len(list(model.parameters()))


def test_latent_stats_and_training():
    images = (torch.rand(40, 1, 28, 28) * 255).to(torch.uint8)
    data = ImageDataset(images)
    model = NoStraightThroughVQVAE(**SMALL)
    history = train(model, data, steps=3, batch_size=8, progress=False, device="cpu")
    assert all(math.isfinite(v) for v in history.train["loss"])
    stats = latent_stats(model, data, batch_size=16, device="cpu")
    assert set(stats) == {"z_e_norm", "code_norm", "quant_error"}
    x = data.batch(torch.arange(40))[0]
    with torch.no_grad():
        out = model(x)
        z_e = model.encode_continuous(x)
    assert math.isclose(stats["quant_error"], 4 * float(out.vq.commitment_loss), rel_tol=1e-4)
    assert math.isclose(stats["z_e_norm"], float(z_e.norm(dim=1).mean()), rel_tol=1e-4)
