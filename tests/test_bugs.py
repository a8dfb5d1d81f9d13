"""The bug-hunt variants of chapter 3: each mistake is wired in exactly as described."""
import math

import pytest
import torch
import torch.nn.functional as F

from vqvae_lib import VQVAE, ImageDataset, train
from vqvae_lib.bugs import NoStraightThroughVQVAE, SeedArticleVQVAE, SwappedBetaVQVAE
from vqvae_lib.evaluation.diagnostics import gradient_routing, parameter_groups

SMALL = dict(num_codes=8, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1)
CORRECT = {"recon_loss": {"encoder": True, "codebook": False, "decoder": True},
           "codebook_loss": {"encoder": False, "codebook": True, "decoder": False},
           "commitment_loss": {"encoder": True, "codebook": False, "decoder": False}}
BUGS = (NoStraightThroughVQVAE, SwappedBetaVQVAE, SeedArticleVQVAE)


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


def test_seed_article_routing_swaps_the_terms_and_starves_the_encoder(x):
    """Fails if either of the article's two mistakes were fixed: every row differs from the correct one."""
    table = gradient_routing(SeedArticleVQVAE(**SMALL), x)
    assert table == {"recon_loss": {"encoder": False, "codebook": True, "decoder": True},
                     "codebook_loss": {"encoder": True, "codebook": False, "decoder": False},
                     "commitment_loss": {"encoder": False, "codebook": True, "decoder": False}}
    assert all(table[term] != CORRECT[term] for term in CORRECT)


def test_seed_article_gradients_by_hand(x):
    """The encoder's whole gradient is the weight-1 pull towards its codes; the codebook's is the
    reconstruction gradient plus beta x the pull towards the encoder outputs."""
    beta = 0.25
    model = SeedArticleVQVAE(beta=beta, **SMALL)
    out = model(x)
    assert torch.allclose(out.vq.loss, out.vq.codebook_loss + beta * out.vq.commitment_loss)
    assert torch.allclose(out.loss, out.recon_loss + out.vq.loss)
    enc = list(model.encoder.parameters())
    codebook = model.quantizer.codebook
    z_e = model.encode_continuous(x)
    e = model.quantizer.lookup(out.vq.indices)
    pull = F.mse_loss(z_e, e.detach())  # moves the encoder only
    expected_enc = torch.autograd.grad(pull, enc)
    got_enc = torch.autograd.grad(out.loss, enc, retain_graph=True)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(got_enc, expected_enc))
    (expected_cb,) = torch.autograd.grad(out.recon_loss + beta * F.mse_loss(e, z_e.detach()), codebook,
                                         retain_graph=True)
    (got_cb,) = torch.autograd.grad(out.loss, codebook)
    assert torch.allclose(got_cb, expected_cb, atol=1e-7)


def test_same_forward_values_as_the_correct_model(x):
    torch.manual_seed(1)
    right = VQVAE(**SMALL)
    a = right(x)
    for cls in BUGS:
        wrong = cls(**SMALL)
        wrong.load_state_dict(right.state_dict())
        b = wrong(x)
        assert torch.allclose(a.x_recon, b.x_recon, atol=1e-6)  # the bugs change gradients, not outputs
        assert torch.allclose(a.recon_loss, b.recon_loss, atol=1e-7)
        assert torch.allclose(a.vq.codebook_loss, b.vq.codebook_loss, atol=1e-7)
        assert torch.allclose(a.vq.commitment_loss, b.vq.commitment_loss, atol=1e-7)


def test_same_seed_same_initial_weights():
    states = []
    for cls in (VQVAE,) + BUGS:
        torch.manual_seed(3)
        states.append(cls(**SMALL).state_dict())
    assert all(torch.equal(s[k], states[0][k]) for s in states[1:] for k in states[0])


def test_swapped_beta_weights(x):
    model = SwappedBetaVQVAE(beta=0.25, **SMALL)
    out = model(x)
    assert torch.allclose(out.vq.loss, 0.25 * out.vq.codebook_loss + out.vq.commitment_loss)
    assert torch.allclose(out.loss, out.recon_loss + out.vq.loss)
    assert gradient_routing(model, x) == CORRECT  # same routes, different weights


@pytest.mark.parametrize("cls", BUGS)
def test_bug_models_train(cls):
    images = (torch.rand(40, 1, 28, 28) * 255).to(torch.uint8)
    model = cls(**SMALL)
    history = train(model, ImageDataset(images), steps=3, batch_size=8, log_every=1, progress=False, device="cpu")
    assert all(math.isfinite(v) for v in history.train["loss"])
    assert set(history.train) >= {"recon_loss", "codebook_loss", "commitment_loss", "perplexity"}
    assert sum(len(ps) for ps in parameter_groups(model).values()) == len(list(model.parameters()))
