"""Where gradients go and sizes in latent space, for any model with the VQ-VAE's parts."""
import math

import torch
from torch import nn

from vqvae_lib import VQVAE, ImageDataset
from vqvae_lib.evaluation.diagnostics import gradient_routing, grads_reached, latent_stats, loss_terms, parameter_groups

SMALL = dict(num_codes=8, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1)


def test_grads_reached_on_plain_layers():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    x = torch.randn(3, 2)
    groups = {"a": list(a.parameters()), "b": list(b.parameters())}
    assert grads_reached(a(x).sum(), groups) == {"a": True, "b": False}
    assert grads_reached(b(a(x)).sum(), groups) == {"a": True, "b": True}
    assert grads_reached(b(a(x).detach()).sum(), groups) == {"a": False, "b": True}


def test_grads_reached_counts_an_all_zero_gradient_as_not_reached():
    w = nn.Parameter(torch.ones(3))
    assert grads_reached((w * 0).sum(), {"w": [w]}) == {"w": False}  # in the graph, zero gradient
    assert grads_reached((w * torch.tensor([0.0, 0.0, 1.0])).sum(), {"w": [w]}) == {"w": True}


def test_grads_reached_frozen_shared_and_constant():
    w, frozen = nn.Parameter(torch.ones(2)), torch.ones(2)
    groups = {"w": [w], "frozen": [frozen], "both": [w, frozen]}  # w in two groups: asked once
    assert grads_reached((w * frozen).sum(), groups) == {"w": True, "frozen": False, "both": True}
    with torch.no_grad():
        constant = (w * 2).sum()
    assert grads_reached(constant, groups) == {"w": False, "frozen": False, "both": False}


def test_grads_reached_keeps_the_graph():
    w = nn.Parameter(torch.ones(2))
    loss = (w ** 2).sum()
    assert grads_reached(loss, {"w": [w]}) == {"w": True}
    assert grads_reached(loss, {"w": [w]}) == {"w": True}  # a second question about the same graph
    loss.backward()  # and it still backpropagates; grads_reached leaves .grad alone until then
    assert torch.equal(w.grad, 2 * torch.ones(2))


def test_parameter_groups_cover_the_model():
    model = VQVAE(**SMALL)
    groups = parameter_groups(model)
    assert sum(len(ps) for ps in groups.values()) == len(list(model.parameters()))
    assert groups["codebook"] == [model.quantizer.codebook]


def test_gradient_routing_is_grads_reached_per_term():
    model = VQVAE(**SMALL)
    x = torch.rand(2, 1, 28, 28)
    table = gradient_routing(model, x)
    out = model(x)
    assert table == {name: grads_reached(term, parameter_groups(model)) for name, term in loss_terms(out).items()}
    custom = gradient_routing(model, x, groups={"last decoder layer": list(model.decoder[-1].parameters())})
    assert custom == {"recon_loss": {"last decoder layer": True}, "codebook_loss": {"last decoder layer": False},
                      "commitment_loss": {"last decoder layer": False}}


def test_ema_codebook_is_never_reached():
    model = VQVAE(**SMALL, quantizer=dict(ema=True))
    table = gradient_routing(model, torch.rand(2, 1, 28, 28))
    assert not any(row["codebook"] for row in table.values())
    assert table["recon_loss"]["encoder"] and table["commitment_loss"]["encoder"]


def test_latent_stats_match_the_forward_pass():
    images = (torch.rand(40, 1, 28, 28) * 255).to(torch.uint8)
    data = ImageDataset(images)
    model = VQVAE(**SMALL)
    stats = latent_stats(model, data, batch_size=16, device="cpu")
    assert set(stats) == {"z_e_norm", "code_norm", "quant_error"}
    x = data.batch(torch.arange(40))[0]
    with torch.no_grad():
        out = model(x)
        z_e = model.encode_continuous(x)
    assert math.isclose(stats["quant_error"], SMALL["code_dim"] * float(out.vq.commitment_loss), rel_tol=1e-4)
    assert math.isclose(stats["z_e_norm"], float(z_e.norm(dim=1).mean()), rel_tol=1e-4)
    assert math.isclose(stats["code_norm"], float(model.quantizer.codebook.detach().norm(dim=1).mean()), rel_tol=1e-6)
