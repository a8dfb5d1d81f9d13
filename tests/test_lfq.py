"""Lookup-free quantisation (Yu et al. 2023, MAGVIT-v2): signs as codes, bits as indices, the entropy penalty
against a direct computation over every code, and LFQ as a drop-in quantizer of the VQ-VAE."""
import itertools
import math

import pytest
import torch
from conftest import saved_and_loaded, short_ci_run

from vqvae_lib import VQVAE
from vqvae_lib.quantizers import build_quantizer
from vqvae_lib.quantizers.lfq import LFQ


def scalar(t: torch.Tensor) -> float:
    return float(t.detach())


def all_codes(code_dim: int) -> torch.Tensor:
    """(2^D, D): row i holds the code of index i = sum_d bit_d 2^d, bit 1 meaning +1, written out by enumeration."""
    rows = {}
    for bits in itertools.product([0, 1], repeat=code_dim):
        rows[sum(b << d for d, b in enumerate(bits))] = [2.0 * b - 1 for b in bits]
    return torch.tensor([rows[i] for i in range(2 ** code_dim)], dtype=torch.float64)


def direct_entropies(z_e: torch.Tensor, temperature: float):
    """H_position and H_codebook (nats) from the softmax over every code: q(c | z) = softmax(-||z - c||^2 / T)."""
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1]).double()
    codes = all_codes(z_e.shape[1])
    q = torch.softmax(-((flat[:, None, :] - codes[None]) ** 2).sum(-1) / temperature, dim=1)  # (N, K)
    h_position = -(q * q.log()).sum(1).mean()
    mean_q = q.mean(0)
    return h_position, -(mean_q * mean_q.log()).sum()


def test_codes_are_signs_and_indices_their_bits():
    lfq = LFQ(5)
    z_e = torch.randn(2, 5, 3, 4)
    out = lfq(z_e)
    assert torch.equal(out.z_q, torch.where(z_e > 0, 1.0, -1.0))
    assert out.indices.shape == (2, 3, 4) and out.indices.dtype == torch.long
    for b, i, j in itertools.product(range(2), range(3), range(4)):
        assert out.indices[b, i, j] == sum(2 ** d for d in range(5) if z_e[b, d, i, j] > 0)
    assert torch.equal(lfq.encode(z_e), out.indices)
    assert torch.equal(lfq.lookup(out.indices), out.z_q)
    indices = torch.arange(32).view(1, 32, 1)
    assert torch.equal(lfq.lookup(indices)[0, :, :, 0].t().double(), all_codes(5))
    assert (lfq.num_codes, lfq.code_dim) == (32, 5)


@pytest.mark.parametrize("code_dim, temperature", [(1, 1.0), (2, 0.5), (3, 1.0), (4, 0.3), (5, 2.0)])
def test_entropy_terms_and_their_gradients_match_the_softmax_over_every_code(code_dim, temperature):
    """The factorised computation (binary entropies; the mean of the two halves' product distributions) is exact."""
    z_e = torch.randn(2, code_dim, 3, 3, dtype=torch.float64) * 0.7
    lfq = LFQ(code_dim, temperature=temperature)
    z, z_ref = z_e.clone().requires_grad_(True), z_e.clone().requires_grad_(True)
    terms = lfq(z).terms
    h_position, h_codebook = direct_entropies(z_ref, temperature)
    assert scalar(terms["entropy_per_position"]) == pytest.approx(scalar(h_position), rel=1e-5)
    assert scalar(terms["codebook_entropy"]) == pytest.approx(scalar(h_codebook), rel=1e-5)
    weights = (0.7, -1.3)
    ours = torch.autograd.grad(weights[0] * terms["entropy_per_position"] + weights[1] * terms["codebook_entropy"], z)
    ref = torch.autograd.grad(weights[0] * h_position + weights[1] * h_codebook, z_ref)
    assert torch.allclose(ours[0], ref[0], atol=1e-5)


def test_loss_is_beta_commitment_plus_the_weighted_entropy_penalty():
    lfq = LFQ(4, entropy_weight=0.2, diversity_weight=0.5, beta=0.3)
    z_e = torch.randn(2, 4, 3, 3)
    out = lfq(z_e)
    h_position, h_codebook = direct_entropies(z_e, 1.0)
    commitment = ((z_e - torch.where(z_e > 0, 1.0, -1.0)) ** 2).mean()
    assert scalar(out.commitment_loss) == pytest.approx(scalar(commitment), rel=1e-6)
    assert scalar(out.codebook_loss) == 0.0
    expected = 0.3 * commitment + 0.2 * (h_position - 0.5 * h_codebook)
    assert scalar(out.loss) == pytest.approx(scalar(expected), rel=1e-5)
    assert scalar(out.terms["entropy_penalty"]) == pytest.approx(scalar(h_position - 0.5 * h_codebook), rel=1e-5)


def test_gradients_straight_through_and_commitment():
    lfq = LFQ(4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    g = torch.randn(2, 4, 3, 3)
    out = lfq(z)
    (through,) = torch.autograd.grad((out.z_q * g).sum(), z, retain_graph=True)
    assert torch.equal(through, g)  # the sign passes the decoder's gradient unchanged
    (commit,) = torch.autograd.grad(out.commitment_loss, z)
    assert torch.allclose(commit, 2 * (z - torch.where(z > 0, 1.0, -1.0)).detach() / z.numel(), atol=1e-7)


def test_a_step_on_the_penalty_makes_positions_confident_and_spreads_the_batch_over_codes():
    """From encoder outputs near zero and mostly positive (each position unsure, the batch crowded into few codes),
    one gradient step on the loss lowers the per-position entropy and raises the codebook entropy."""
    lfq = LFQ(4, entropy_weight=1.0, diversity_weight=1.0, beta=0.0)
    torch.manual_seed(3)
    z = (0.2 * torch.randn(4, 4, 4, 4) + 0.4).requires_grad_(True)
    out = lfq(z)
    (grad,) = torch.autograd.grad(out.loss, z)
    after = lfq(z.detach() - 0.5 * grad / grad.norm()).terms
    assert scalar(after["entropy_per_position"]) < scalar(out.terms["entropy_per_position"]) - 1e-3
    assert scalar(after["codebook_entropy"]) > scalar(out.terms["codebook_entropy"]) + 1e-3


def test_codebook_entropy_of_the_global_batch_under_data_parallel_training(monkeypatch):
    """Two ranks, each half the batch: each sees the global batch's codebook entropy, and the mean of the two
    ranks' gradients (what the gradient averaging makes) is the single-process gradient of the whole batch."""
    lfq = LFQ(4).train()
    z_e = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    whole = z_e.clone().requires_grad_(True)
    h_whole = lfq.entropies(whole)[1]
    (g_whole,) = torch.autograd.grad(h_whole, whole)
    halves = [z_e[:2].clone().requires_grad_(True), z_e[2:].clone().requires_grad_(True)]
    mean_qs = [lfq.mean_assignment(half).detach() for half in halves]
    monkeypatch.setattr("vqvae_lib.distributed.is_distributed", lambda: True)
    monkeypatch.setattr("vqvae_lib.distributed.world_size", lambda: 2)
    grads = []
    for rank, half in enumerate(halves):
        other = mean_qs[1 - rank]
        monkeypatch.setattr("vqvae_lib.distributed.all_reduce_sum_", lambda t, other=other: t.add_(other))
        h = lfq.entropies(half)[1]
        assert scalar(h) == pytest.approx(scalar(h_whole), rel=1e-9)
        grads.append(torch.autograd.grad(h, half)[0])
    assert torch.allclose(torch.cat(grads) / 2, g_whole, atol=1e-9)
    assert not torch.allclose(grads[0], g_whole[:2], atol=1e-3)  # a rank's own gradient is only its half's part


def test_mean_assignment_is_the_mean_softmax_in_index_order():
    lfq = LFQ(5, temperature=0.7)
    z_e = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 5)
    q = torch.softmax(-((flat[:, None, :] - all_codes(5)[None]) ** 2).sum(-1) / 0.7, dim=1)
    assert torch.allclose(lfq.mean_assignment(z_e), q.mean(0), atol=1e-12)


def test_counts_are_summed_over_ranks_in_training_only(monkeypatch):
    calls = []
    monkeypatch.setattr("vqvae_lib.distributed.all_reduce_sum_", lambda t: calls.append(tuple(t.shape)) or t)
    lfq = LFQ(6)
    lfq.eval()(torch.randn(1, 6, 2, 2))
    assert calls == []
    lfq.train()(torch.randn(1, 6, 2, 2))
    assert calls == [(64,)]  # single process: is_distributed() is False, so the assignment is not reduced


@pytest.mark.parametrize("options", [dict(code_dim=0), dict(code_dim=2.0), dict(code_dim=25), dict(code_dim=True),
                                     dict(code_dim=4, temperature=0.0), dict(code_dim=4, beta=-1.0),
                                     dict(code_dim=4, entropy_weight=-0.1)])
def test_bad_arguments_are_refused(options):
    with pytest.raises(ValueError):
        LFQ(**options)


@pytest.mark.parametrize("z_e", [torch.randn(2, 5, 3, 3), torch.randn(4, 3, 3), torch.full((1, 4, 2, 2), math.inf)])
def test_bad_inputs_are_refused(z_e):
    lfq = LFQ(4)
    with pytest.raises(ValueError, match="z_e"):
        lfq(z_e)
    with pytest.raises(ValueError, match="z_e"):
        lfq.encode(z_e)


def test_lookup_refuses_bad_indices():
    lfq = LFQ(4)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        lfq.lookup(torch.tensor([[[-1]]]))
    with pytest.raises(ValueError, match="int64"):
        lfq.lookup(torch.tensor([[[3.0]]]))


def test_float32_under_autocast():
    lfq = LFQ(6)
    z_e = torch.randn(2, 6, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lfq(z_e.bfloat16())
    assert out.loss.dtype == torch.float32 and out.terms["codebook_entropy"].dtype == torch.float32
    assert out.z_q.dtype == torch.bfloat16 and torch.equal(out.indices, lfq.encode(z_e.bfloat16()))


def test_registered_kind_takes_the_vqvaes_beta():
    lfq = build_quantizer(64, 6, 0.5, {"kind": "lfq", "seed": 3})
    assert isinstance(lfq, LFQ) and lfq.beta == 0.5 and lfq.num_codes == 64
    with pytest.raises(ValueError, match="64 codes of 6 channels"):
        build_quantizer(32, 6, 0.25, {"kind": "lfq"})


def test_save_and_load_round_trip(tmp_path):
    model = VQVAE(num_codes=16, code_dim=4, hidden_channels=16, res_channels=8, num_res_layers=1,
                  quantizer={"kind": "lfq", "temperature": 0.5}).eval()
    loaded, a, b = saved_and_loaded(model, torch.rand(2, 1, 28, 28), tmp_path)
    assert isinstance(loaded.quantizer, LFQ) and loaded.quantizer.temperature == 0.5
    assert torch.equal(a.vq.loss, b.vq.loss)


# The ci VQ-VAE with LFQ's defaults at 64 codes (code_dim 6), 300 steps on one CPU thread (about 12 s of CPU time,
# data and evaluation included): test NMSE 0.166, all 64 codes used (perplexity 39); untrained, 2.65.
STEPS, TRAIN_IMAGES, MAX_NMSE, MIN_CODES_USED = 300, 2000, 0.21, 48


def test_lfq_with_its_defaults_trains_the_ci_vqvae(one_thread):
    changes = {"num_codes": 64, "code_dim": 6, "quantizer": {"kind": "lfq"}}
    _, _, before, result, _, _ = short_ci_run(changes, STEPS, TRAIN_IMAGES)
    untrained = before["nmse"]
    print("lfq", result, "untrained", untrained)
    assert result["nmse"] < MAX_NMSE and result["nmse"] < untrained, (result, untrained)
    assert result["codes_used"] >= MIN_CODES_USED, result
