import math

import pytest
import torch
from torch import nn

from vqvae_lib.evaluation.diagnostics import grads_reached
from vqvae_lib.quantizers.vq import StraightThrough, VectorQuantizer, kmeans, nearest_code, perplexity_from_counts


def test_nearest_code_matches_cdist():
    x, cb = torch.randn(500, 8), torch.randn(32, 8)
    assert torch.equal(nearest_code(x, cb), torch.cdist(x, cb).argmin(1))


def test_output_shapes_and_values():
    vq = VectorQuantizer(16, 4)
    z_e = torch.randn(2, 4, 5, 3)
    out = vq(z_e)
    assert out.z_q.shape == z_e.shape and out.indices.shape == (2, 5, 3) and out.indices.dtype == torch.long
    # z_q's value is the chosen code at every position
    assert torch.allclose(out.z_q, vq.lookup(out.indices), atol=1e-6)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    e = vq.codebook[out.indices.flatten()]
    assert torch.allclose(out.codebook_loss, ((flat - e) ** 2).mean())
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss)
    assert 1.0 <= float(out.perplexity) <= 16.0


def test_straight_through_gradient_equals_upstream_gradient():
    vq = VectorQuantizer(16, 4)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z_e)
    upstream = torch.randn_like(out.z_q)
    (g_ze,) = torch.autograd.grad((out.z_q * upstream).sum(), z_e)
    assert torch.equal(g_ze, upstream)


def reference_graph(z_e, codebook, indices):
    """The textbook detach formulation that StraightThrough fuses."""
    e = codebook[indices].permute(0, 3, 1, 2)
    return z_e + (e - z_e).detach(), ((e - z_e.detach()) ** 2).mean(), ((z_e - e.detach()) ** 2).mean()


@pytest.mark.parametrize("used", [(0, 1, 2), (0,), (1, 2), (0, 2)])
def test_fused_straight_through_equals_the_detach_formulation(used):
    """Values and gradients (to z_e and to the codebook) match for any mix of the three outputs."""
    torch.manual_seed(0)
    z_e, codebook = torch.randn(2, 3, 4, 5), torch.randn(6, 3)
    indices = torch.randint(6, (2, 4, 5))  # codes repeat: their gradients must be summed
    weights = [torch.randn(2, 3, 4, 5), torch.tensor(0.7), torch.tensor(-1.3)]
    results = []
    for graph in (StraightThrough.apply, reference_graph):
        z, cb = z_e.clone().requires_grad_(True), codebook.clone().requires_grad_(True)
        outs = graph(z, cb, indices)
        objective = sum((outs[i] * weights[i]).sum() for i in used)
        results.append((outs, torch.autograd.grad(objective, (z, cb), allow_unused=True)))
    (fused, fused_grads), (ref, ref_grads) = results
    for a, b in zip(fused, ref):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(fused_grads, ref_grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


def test_each_loss_reaches_only_its_parameters():
    encoder, decoder = nn.Conv2d(1, 4, 1), nn.Conv2d(4, 1, 1)
    vq = VectorQuantizer(8, 4)
    x = torch.randn(2, 1, 4, 4)
    out = vq(encoder(x))
    recon = ((decoder(out.z_q) - x) ** 2).mean()
    groups = {"encoder": list(encoder.parameters()), "codebook": [vq.codebook], "decoder": list(decoder.parameters())}
    assert grads_reached(recon, groups) == {"encoder": True, "codebook": False, "decoder": True}
    assert grads_reached(out.codebook_loss, groups) == {"encoder": False, "codebook": True, "decoder": False}
    assert grads_reached(out.commitment_loss, groups) == {"encoder": True, "codebook": False, "decoder": False}


def test_ema_codebook_takes_no_gradient_and_follows_the_ema_rule():
    K, D, decay, eps = 4, 2, 0.9, 1e-5
    vq = VectorQuantizer(K, D, ema=True, decay=decay, eps=eps)
    assert not vq.codebook.requires_grad
    count0, sum0 = vq.ema_count.clone(), vq.ema_sum.clone()
    z_e = torch.randn(1, D, 4, 4, requires_grad=True)
    idx = nearest_code(z_e.detach().permute(0, 2, 3, 1).reshape(-1, D), vq.codebook.detach())
    out = vq(z_e)
    out.loss.backward()
    assert vq.codebook.grad is None and z_e.grad is not None
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, D)
    onehot = torch.nn.functional.one_hot(idx, K).float()
    count = decay * count0 + (1 - decay) * onehot.sum(0)
    sums = decay * sum0 + (1 - decay) * onehot.t() @ flat
    n = count.sum()
    expected = sums / ((count + eps) / (n + K * eps) * n)[:, None]
    assert torch.allclose(vq.codebook, expected, atol=1e-6)
    assert torch.allclose(out.loss, 0.25 * out.commitment_loss)


def test_ema_unused_code_shrinks_to_the_origin_after_log_eps_over_log_decay_steps():
    """Laplace smoothing's side effect (chapter 2): an unused code sits at e0 g^t / (g^t + eps) (n + K eps) / n,
    so it leaves its place after about log(eps) / log(g) steps and, where the data surround the origin,
    comes back into use."""
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(2, 2, ema=True, decay=decay, eps=eps)
    e0 = torch.tensor([30.0, 40.0])
    with torch.no_grad():
        vq.codebook.copy_(torch.stack([torch.zeros(2), e0]))  # code 1 far away: never chosen
        vq.ema_sum.copy_(vq.codebook)
    z_e = 0.1 * torch.randn(1, 2, 8, 8)  # 64 outputs near the origin, all nearest to code 0 at first
    turn = round(math.log(eps) / math.log(decay))  # g^t = eps after 109 steps
    for t in range(1, 300):
        if int(vq(z_e).indices.max()) == 1:
            break  # code 1 is back in use
        g, n = decay ** t, 64 + (2 - 64) * decay ** t  # the counts' sum starts at K = 2 and tends to 64
        assert torch.allclose(vq.codebook[1], e0 * g / ((g + eps) / (n + 2 * eps) * n), rtol=1e-4), t
        if t == turn:
            assert 0.45 < float(vq.codebook[1].norm() / e0.norm()) < 0.55  # half-way to the origin
    assert turn < t < 299


def test_ema_does_not_update_in_eval_mode():
    vq = VectorQuantizer(4, 2, ema=True).eval()
    before = vq.codebook.clone()
    vq(torch.randn(1, 2, 4, 4))
    assert torch.equal(before, vq.codebook)


def test_dead_code_restart_revives_unused_codes_and_resets_ema():
    vq = VectorQuantizer(8, 2, ema=True, restart_after=3)
    with torch.no_grad():
        vq.codebook[1:] = 100.0  # far from the data: only code 0 is ever chosen
        vq.ema_sum[1:] = 500.0
        vq.ema_count[1:] = 5.0  # EMA codes sit at sum / count = 100
    z_e = torch.randn(1, 2, 8, 8) * 0.1
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for _ in range(2):
        vq(z_e)
    assert (vq.codebook[1:] > 50).all()  # not yet: the window is 3 steps
    vq(z_e)
    revived = vq.codebook[1:]
    assert (revived.abs() < 1).all()
    # each revived code is one of the encoder outputs, and its EMA state restarts there
    # exact: a restart copies an encoder output (no arithmetic, so no CPU's rounding enters)
    assert (revived[:, None] == flat[None]).all(-1).any(-1).all()
    assert torch.equal(vq.ema_sum[1:], revived) and torch.equal(vq.ema_count[1:], torch.ones(7))
    assert (vq.steps_unused[1:] == 0).all()


def test_kmeans_init_places_codes_on_the_data():
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    points = (centres[:, None] + 0.05 * torch.randn(4, 64, 2)).reshape(-1, 2)
    vq = VectorQuantizer(4, 2, kmeans_init=True)
    assert not bool(vq.initialized)
    vq(points.t().reshape(1, 2, 16, 16))
    assert bool(vq.initialized)
    # every cluster got its own code, within the cluster's spread
    d = torch.cdist(centres, vq.codebook.detach())
    assert d.min(1).values.max() < 0.1 and len(set(d.argmin(1).tolist())) == 4


def test_kmeans_reduces_distortion():
    x = torch.randn(1000, 3)
    c = kmeans(x, 8, iters=10, generator=torch.Generator().manual_seed(0))
    distortion = ((x - c[nearest_code(x, c)]) ** 2).sum(1).mean()
    start = x[:8]
    assert distortion < ((x - start[nearest_code(x, start)]) ** 2).sum(1).mean()


def test_distances_in_float32_under_autocast():
    vq = VectorQuantizer(64, 8)
    z_e = torch.randn(4, 8, 6, 6)
    expected = vq(z_e).indices
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z_e.bfloat16())
    assert torch.equal(out.indices, expected)
    assert out.codebook_loss.dtype == torch.float32


def test_perplexity_bounds():
    assert float(perplexity_from_counts(torch.ones(16))) == pytest.approx(16.0)
    assert float(perplexity_from_counts(torch.tensor([10, 0, 0, 0]))) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 4, 4)])
def test_bad_shape_is_refused(shape):
    with pytest.raises(ValueError, match="z_e must be"):
        VectorQuantizer(8, 4)(torch.randn(*shape))


def test_lookup_refuses_out_of_range_indices():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.lookup(torch.tensor([[[8]]]))


def test_ema_leaves_unused_codes_in_place():
    vq = VectorQuantizer(4, 2, ema=True)
    with torch.no_grad():
        vq.codebook[3] = vq.ema_sum[3] = torch.tensor([50.0, 50.0])  # never the nearest
    far = vq.codebook[3].clone()
    for _ in range(200):
        vq(torch.randn(1, 2, 4, 4) * 0.01)
    assert torch.allclose(vq.codebook[3], far, rtol=1e-3)
