"""Chapter 11's quantizers: the cosine, low-dimensional lookup, SimVQ, IBQ and BSQ. Their values against
vector-quantize-pytorch where it implements the same thing, their gradient routing by autograd, and the
property each was made for: which codes a step moves."""
import math

import pytest
import torch
from vector_quantize_pytorch import LFQ as PeerLFQ
from vector_quantize_pytorch import SimVQ as PeerSimVQ
from vector_quantize_pytorch import VectorQuantize

from vqvae_lib import VQVAE
from vqvae_lib.evaluation.diagnostics import grads_reached
from vqvae_lib.quantizers import BSQ, IBQ, SimVQ, VectorQuantizer
from vqvae_lib.quantizers.lfq import LFQ

D, K = 16, 64
# float32 straight-through: z + (q - z) rounds to q within one ulp of |q| <= a few units
ULP_TOL = 1e-6


def z_e(seed=0, channels=D, size=5):
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def copy_projection(linear, conv):
    with torch.no_grad():
        linear.weight.copy_(conv.weight[:, :, 0, 0])
        linear.bias.copy_(conv.bias)


def test_cosine_lookup_matches_vector_quantize_pytorch():
    ours = VectorQuantizer(K, D, l2_normalize=True, lookup_dim=8, seed=1).eval()
    peer = VectorQuantize(dim=D, codebook_size=K, use_cosine_sim=True, codebook_dim=8, accept_image_fmap=True).eval()
    copy_projection(peer.project_in, ours.project_in)
    copy_projection(peer.project_out, ours.project_out)
    with torch.no_grad():
        peer._codebook.embed.copy_(ours.codes()[None])
        q, indices, _ = peer(z_e())
        out = ours(z_e())
    assert torch.equal(indices, out.indices)
    assert torch.allclose(q, out.z_q, atol=ULP_TOL)


def test_cosine_lookup_picks_the_code_of_highest_cosine_similarity_and_its_losses_are_between_unit_vectors():
    vq = VectorQuantizer(K, D, l2_normalize=True, lookup_dim=8, seed=3)
    z = vq.project_in(z_e())
    cosine = torch.einsum("bdhw,kd->bkhw", torch.nn.functional.normalize(z, dim=1),
                          torch.nn.functional.normalize(vq.codebook, dim=1))
    out = vq(z_e())
    assert torch.equal(out.indices, cosine.argmax(1))
    # |u - e|^2 = 2 - 2 cos for unit vectors: the commitment loss is a mean over d = 8 channels
    expected = (2 - 2 * cosine.max(1).values).mean() / 8
    assert torch.allclose(out.commitment_loss, expected, atol=1e-6)
    assert vq.codebook.shape == (K, 8) and vq.encode(z_e()).equal(out.indices)


def test_simvq_matches_vector_quantize_pytorch_in_value_indices_and_loss():
    ours = SimVQ(K, D, seed=2)
    peer = PeerSimVQ(dim=D, codebook_size=K, rotation_trick=False, channel_first=True)
    with torch.no_grad():
        peer.frozen_codebook.copy_(ours.frozen_codebook)
        peer.code_transform.weight.copy_(ours.code_transform.weight)
    q, indices, loss = peer(z_e())
    out = ours(z_e())
    assert torch.equal(indices, out.indices)
    assert torch.allclose(q, out.z_q, atol=ULP_TOL)
    assert torch.allclose(loss, out.loss, rtol=1e-6)  # their loss: codebook + 0.25 commitment, as ours


def test_bsq_matches_vector_quantize_pytorchs_spherical_lfq_in_codes_and_entropies():
    L, temperature = 6, 0.5
    ours = BSQ(L, temperature=temperature)
    peer = PeerLFQ(dim=L, spherical=True, channel_first=True)
    x = z_e(4, channels=L)
    (q, indices, _), breakdown = peer(x, inv_temperature=L / temperature, return_loss_breakdown=True)
    out = ours(x)
    assert torch.allclose(q, out.z_q, atol=ULP_TOL)
    # the peer's index puts channel 0 in the most significant bit, ours in the least
    bits = [(indices >> (L - 1 - c)) & 1 for c in range(L)]
    assert torch.equal(sum(b << c for c, b in enumerate(bits)), out.indices)
    # the peer takes log(max(p, 1e-5)): each of the K terms moves by at most 1e-5 log(1e5)
    tol = 2 ** L * 1e-5 * math.log(1e5)
    assert abs(float(breakdown.per_sample_entropy) - float(out.terms["entropy_per_position"])) < tol
    assert abs(float(breakdown.batch_entropy) - float(out.terms["codebook_entropy"])) < tol


def test_bsq_codes_are_on_the_unit_sphere_and_its_entropies_are_lfqs_on_the_scaled_input():
    L = 5
    bsq = BSQ(D, num_bits=L, temperature=0.7, seed=1)
    out = bsq(z_e())
    u = bsq.to_sphere(z_e())
    codes = bsq.bits.indices_to_codes(out.indices) / math.sqrt(L)
    assert torch.allclose(codes.norm(dim=1), torch.ones(()), atol=1e-6)
    assert torch.allclose(bsq.project_out(codes), out.z_q, atol=ULP_TOL)
    expected = LFQ(L, temperature=0.7).entropies(u * math.sqrt(L))
    assert torch.allclose(out.terms["entropy_per_position"], expected[0])
    assert torch.allclose(out.terms["codebook_entropy"], expected[1])


def test_ibq_forward_is_the_hard_code_and_its_gradient_that_of_the_softmax_straight_through():
    ibq = IBQ(K, D, seed=5)
    z = z_e().requires_grad_(True)
    out = ibq(z)
    logits = torch.einsum("bdhw,kd->bkhw", z, ibq.codebook)
    assert torch.equal(out.indices, logits.argmax(1))
    assert torch.equal(out.z_q, ibq.lookup(out.indices))  # exactly the chosen codes
    # the reference formulation: one_hot = hard - sg[soft] + soft, z_q = one_hot C
    soft = logits.softmax(1)
    hard = torch.nn.functional.one_hot(out.indices, K).permute(0, 3, 1, 2).float()
    reference = torch.einsum("bkhw,kd->bdhw", hard - soft.detach() + soft, ibq.codebook)
    upstream = torch.randn(out.z_q.shape, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad((out.z_q * upstream).sum(), [z, ibq.codebook])
    theirs = torch.autograd.grad((reference * upstream).sum(), [z, ibq.codebook])
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)
    # the chapter's reading: the chosen code gets the gradient g at z_q, and every code k, per position, the share
    # p_k g.(e_k - e_bar) z_e with e_bar = sum_j p_j e_j (not proportional to p_k)
    g, flat = (t.permute(0, 2, 3, 1).reshape(-1, D) for t in (upstream, z.detach()))
    p, codes = soft.detach().permute(0, 2, 3, 1).reshape(-1, K), ibq.codebook.detach()
    share = (p * (g @ codes.t() - (g * (p @ codes)).sum(1, keepdim=True))).t() @ flat  # (K, D)
    chosen = torch.nn.functional.one_hot(out.indices.flatten(), K).float().t() @ g
    assert torch.allclose(ours[1], chosen + share, atol=1e-5)
    index_loss = ((out.z_q - z) ** 2).mean()
    assert torch.allclose(out.loss, index_loss + out.codebook_loss + 0.25 * out.commitment_loss)


def rows_moved(codes_before, codes_after):
    return int((codes_before != codes_after).any(1).sum())


@pytest.mark.parametrize("kind", ["vq", "simvq", "ibq"])
def test_which_codes_one_step_moves(kind):
    """Plain VQ moves only the codes chosen in the batch; SimVQ and IBQ move all K."""
    quantizer = {"vq": VectorQuantizer, "simvq": SimVQ, "ibq": IBQ}[kind](K, D, seed=0)
    before = quantizer.codes().detach().clone()
    out = quantizer(z_e(size=2))  # 8 positions: at most 8 of the 64 codes chosen
    torch.optim.SGD(quantizer.parameters(), lr=0.1).zero_grad()
    out.loss.backward()
    torch.optim.SGD(quantizer.parameters(), lr=0.1).step()
    after = quantizer.codes().detach()
    chosen = len(torch.unique(out.indices))
    assert rows_moved(before, after) == (chosen if kind == "vq" else K)


def routing(model, x):
    """{term: {group: reached}} for a model whose quantizer may have projections."""
    q = model.quantizer
    groups = {"encoder": list(model.encoder.parameters()),
              "projections": [p for name, p in q.named_parameters() if name.startswith("project_")],
              "codes": [p for name, p in q.named_parameters() if not name.startswith("project_")],
              "decoder": list(model.decoder.parameters())}
    out = model(x)
    terms = {"recon": out.recon_loss, "codebook": out.vq.codebook_loss, "commitment": out.vq.commitment_loss,
             **{name: value for name, value in out.vq.terms.items() if value.requires_grad}}
    return {term: {g for g, hit in grads_reached(value, groups).items() if hit} for term, value in terms.items()}


@pytest.mark.parametrize("quantizer, expected", [
    (dict(l2_normalize=True, lookup_dim=8),
     {"recon": {"encoder", "projections", "decoder"}, "codebook": {"codes"},
      "commitment": {"encoder", "projections"}}),
    (dict(kind="simvq"),
     {"recon": {"encoder", "decoder"}, "codebook": {"codes"}, "commitment": {"encoder"}}),
    (dict(kind="ibq"),
     {"recon": {"encoder", "codes", "decoder"}, "codebook": {"codes"}, "commitment": {"encoder"},
      "index_loss": {"encoder", "codes"}}),
    (dict(kind="bsq", num_bits=6),
     {"recon": {"encoder", "projections", "decoder"}, "codebook": set(), "commitment": {"encoder", "projections"},
      "entropy_per_position": {"encoder", "projections"}, "codebook_entropy": {"encoder", "projections"},
      "entropy_penalty": {"encoder", "projections"}}),
])
def test_gradient_routing(quantizer, expected):
    num_codes = 64
    torch.manual_seed(0)
    model = VQVAE(num_codes=num_codes, code_dim=D, hidden_channels=16, num_res_layers=1, res_channels=8,
                  quantizer={**quantizer, "seed": 0})
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert routing(model, x) == expected


def test_simvqs_frozen_codebook_is_a_saved_buffer_that_training_never_changes():
    q = SimVQ(K, D, seed=0)
    assert "frozen_codebook" in q.state_dict() and all(p is not q.frozen_codebook for p in q.parameters())
    before = q.frozen_codebook.clone()
    opt = torch.optim.Adam(q.parameters(), lr=0.1)
    for seed in range(3):
        opt.zero_grad()
        q(z_e(seed)).loss.backward()
        opt.step()
    assert torch.equal(q.frozen_codebook, before)


@pytest.mark.parametrize("build, message", [
    (lambda: VectorQuantizer(K, D, lookup_dim=32), "lookup_dim must be None or an integer in"),
    (lambda: VectorQuantizer(K, D, lookup_dim=0), "lookup_dim must be None or an integer in"),
    (lambda: BSQ(D, num_bits=0), "num_bits must be a positive integer"),
    (lambda: BSQ(D, num_bits=40), "num_bits must be a positive integer up to 24"),
    (lambda: BSQ(D, temperature=0.0), "temperature must be positive"),
    (lambda: IBQ(0, D), "num_codes and code_dim must be positive"),
    (lambda: SimVQ(K, 0), "num_codes and code_dim must be positive"),
])
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("quantizer", [VectorQuantizer(K, D, l2_normalize=True, lookup_dim=8), SimVQ(K, D),
                                       IBQ(K, D), BSQ(D, num_bits=6)], ids=["cosine", "simvq", "ibq", "bsq"])
def test_bad_inputs_are_refused(quantizer):
    with pytest.raises(ValueError, match=r"z_e must be \(B, 16, H, W\)"):
        quantizer(torch.zeros(2, 8, 3, 3))
    with pytest.raises(ValueError, match="indices must lie in"):
        quantizer.lookup(torch.full((1, 2, 2), quantizer.num_codes))
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantizer.encode(torch.full((1, D, 2, 2), float("nan")))


def test_uniform_coverage_is_the_expected_fraction_of_codes_drawn_at_least_once():
    from vqvae_lib.recipes.codebook_usage import uniform_coverage
    assert uniform_coverage(1, 5) == 1.0 and uniform_coverage(4, 0) == 0.0
    assert math.isclose(uniform_coverage(2, 2), 0.75)  # P(a code is missed) = (1/2)^2
    draws = torch.randint(4096, (50, 24500), generator=torch.Generator().manual_seed(0))
    used = torch.tensor([len(torch.unique(row)) / 4096 for row in draws])
    # 50 simulated test splits: their mean within 4 standard errors of the formula
    assert abs(float(used.mean()) - uniform_coverage(4096, 24500)) < 4 * float(used.std()) / math.sqrt(50) + 1e-4


def test_usage_at_trains_and_counts_on_the_test_split(tmp_path):
    from vqvae_lib.data import ImageDataset
    from vqvae_lib.presets import get_preset
    from vqvae_lib.recipes.codebook_usage import usage_at
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(32) % 10)
    preset = get_preset("ci")
    preset["codebook_usage"] = dict(steps=2, num_codes=[128], seeds=[0])
    row = usage_at("simvq", 128, preset, data, data, seed=0, device="cpu", cache=tmp_path)
    assert 1 <= row["codes_used"] <= 128 and row["fraction_used"] == row["codes_used"] / 128
    assert math.isclose(row["uniform_coverage"], 1 - (1 - 1 / 128) ** (32 * 49))
    with pytest.raises(ValueError, match="usage is measured for"):
        usage_at("fsq", 64, preset, data, data, seed=0)
