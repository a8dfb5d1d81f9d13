"""The rotation trick (Fifty et al. 2024) as an option of VectorQuantizer: the forward pass of plain VQ, the
decoder's gradient carried to z_e by the rotation and rescaling that take z_e to its code."""
import pytest
import torch
import torch.nn.functional as F
from conftest import short_ci_run

from vqvae_lib import VQVAE, VectorQuantizer
from vqvae_lib.quantizers.vq import rotate

K, D = 16, 4


def plane_rotation(u: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The D x D rotation by the angle between the unit vectors u and q in their plane, written independently
    of the library: the matrix exponential of theta (w u^T - u w^T), w the unit vector of q orthogonal to u."""
    w = q - (u @ q) * u
    w = w / w.norm()
    theta = torch.arccos((u @ q).clamp(-1, 1))
    return torch.linalg.matrix_exp(theta * (torch.outer(w, u) - torch.outer(u, w)))


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def quantizers(**options):
    """A plain and a rotation-trick quantizer with the same codebook."""
    plain, rotated = VectorQuantizer(K, D, **options), VectorQuantizer(K, D, rotation_trick=True, **options)
    with torch.no_grad():
        codes = torch.randn(K, D)  # codes of unit scale, like encoder outputs (the default init is ~1/K)
        plain.set_codes(codes)
        rotated.set_codes(codes)
    return plain, rotated


def grad_at_z_e(vq, z_e, upstream):
    z = z_e.clone().requires_grad_(True)
    out = vq(z)
    (grad,) = torch.autograd.grad((out.z_q * upstream).sum(), z)
    return out, grad


def test_forward_and_losses_are_plain_vqs():
    plain, rotated = quantizers()
    z_e = torch.randn(2, D, 3, 5)
    a, b = plain(z_e), rotated(z_e)
    assert torch.equal(a.z_q, b.z_q) and torch.equal(a.indices, b.indices)  # the value is the code, exactly
    for name in ("codebook_loss", "commitment_loss", "loss", "perplexity"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_rotate_is_the_plane_rotation_orthogonal_and_takes_u_to_q():
    torch.manual_seed(1)
    u, q = unit(torch.randn(5, dtype=torch.float64)), unit(torch.randn(5, dtype=torch.float64))
    # row i of rotate(I) is R e_i, the i-th column of R
    R = rotate(torch.eye(5, dtype=torch.float64), u.expand(5, 5), q.expand(5, 5), dim=1).t()
    assert torch.allclose(R, plane_rotation(u, q), atol=1e-12)
    assert torch.allclose(R.t() @ R, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(R).item() == pytest.approx(1.0)
    assert torch.allclose(R @ u, q, atol=1e-12)
    x = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(rotate(x, q, u, dim=0), R.t() @ x, atol=1e-12)  # swapping u and q inverts R


def test_gradient_at_z_e_is_lambda_R_transpose_g():
    """z_q = sg[lambda R] z_e, so the chain rule gives dL/dz_e = lambda R^T g, R taking z_e's direction to e's."""
    _, vq = quantizers()
    z_e = torch.randn(1, D, 2, 3, dtype=torch.float64)
    upstream = torch.randn_like(z_e)
    out, grad = grad_at_z_e(vq, z_e, upstream)
    for i in range(2):
        for j in range(3):
            z, e, g = z_e[0, :, i, j], out.z_q[0, :, i, j].double(), upstream[0, :, i, j]
            R = plane_rotation(unit(z), unit(e))
            expected = e.norm() / z.norm() * R.t() @ g
            assert torch.allclose(grad[0, :, i, j], expected, atol=1e-5), (i, j)
            assert not torch.allclose(grad[0, :, i, j], g, atol=1e-3)  # straight-through would pass g itself


def test_gradient_makes_with_z_e_the_angle_the_decoder_gradient_makes_with_e():
    _, vq = quantizers()
    z_e = torch.randn(2, D, 4, 4)
    upstream = torch.randn_like(z_e)
    out, grad = grad_at_z_e(vq, z_e, upstream)
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos(grad, z_e, dim=1), cos(upstream, out.z_q, dim=1), atol=1e-5)
    lam = out.z_q.norm(dim=1) / z_e.norm(dim=1)
    assert torch.allclose(grad.norm(dim=1), lam * upstream.norm(dim=1), rtol=1e-5)


def test_straight_through_without_the_option():
    plain, rotated = quantizers()
    z_e, upstream = torch.randn(2, D, 3, 3), torch.randn(2, D, 3, 3)
    assert torch.equal(grad_at_z_e(plain, z_e, upstream)[1], upstream)
    assert not torch.allclose(grad_at_z_e(rotated, z_e, upstream)[1], upstream, atol=1e-3)


def test_degenerate_positions_get_finite_gradients():
    vq = VectorQuantizer(1, 3, rotation_trick=True)
    code = torch.tensor([0.0, 2.0, 0.0])
    vq.set_codes(code[None])
    # position 0: z_e = 0 (no direction); 1: z_e opposite the code to within float32's resolution; 2: generic
    z_e = torch.tensor([[0.0, 0.0, 0.0], [1e-6, -0.5, 0.0], [1.0, 1.0, 0.0]]).t().reshape(1, 3, 1, 3)
    g = torch.tensor([[0.3, -1.0, 2.0], [0.3, -1.0, 2.0], [0.3, -1.0, 2.0]]).t().reshape(1, 3, 1, 3)
    _, grad = grad_at_z_e(vq, z_e, g)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[..., 0], g[..., 0])  # straight-through where z_e has no direction
    u = torch.tensor([0.0, -1.0, 0.0])  # the opposite code is reached by the reflection I - 2 u u^T
    reflected = 4.0 * (g[0, :, 0, 1] - 2 * (g[0, :, 0, 1] @ u) * u)  # lambda = 2 / 0.5
    assert torch.allclose(grad[0, :, 0, 1], reflected, atol=1e-4)
    vq.set_codes(torch.zeros(1, 3))  # a code at the origin: lambda = 0
    _, grad = grad_at_z_e(vq, z_e[..., 2:], g[..., 2:])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_codebook_and_commitment_gradients_are_unchanged():
    plain, rotated = quantizers()
    z_e = torch.randn(2, D, 3, 3)
    grads = []
    for vq in (plain, rotated):
        z = z_e.clone().requires_grad_(True)
        out = vq(z)
        grads.append(torch.autograd.grad(out.loss, (z, vq.codebook)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_ema_updates_are_unchanged():
    plain, rotated = quantizers(ema=True, restart_after=2)
    for step in range(3):
        z_e = torch.randn(1, D, 4, 4) * 2
        for vq in (plain, rotated):
            z = z_e.clone().requires_grad_(True)
            out = vq(z)
            (out.z_q.sum() + out.loss).backward()
        assert torch.equal(plain.codebook, rotated.codebook), step
        assert torch.equal(plain.ema_count, rotated.ema_count) and torch.equal(plain.ema_sum, rotated.ema_sum)


def test_rotation_is_computed_in_float32_under_autocast():
    _, vq = quantizers()
    z_e = torch.randn(2, D, 3, 3)
    upstream = torch.randn_like(z_e)
    expected = grad_at_z_e(vq, z_e, upstream)[1]
    z = z_e.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    (grad,) = torch.autograd.grad((out.z_q.float() * upstream).sum(), z)
    assert grad.dtype == torch.bfloat16
    assert torch.allclose(grad.float(), expected, atol=0.05, rtol=0.02)


def test_save_and_load_round_trip(tmp_path):
    model = VQVAE(num_codes=K, code_dim=D, hidden_channels=16, res_channels=8, num_res_layers=1,
                  quantizer={"rotation_trick": True}).eval()
    model.save_pretrained(tmp_path)
    loaded = VQVAE.from_pretrained(tmp_path).eval()
    assert loaded.quantizer.rotation_trick
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.x_recon, b.x_recon) and torch.equal(a.vq.indices, b.vq.indices)


# Chapter 9's "vq-rotation": the ci VQ-VAE with a plain gradient codebook (no k-means, no restarts). Measured on one
# CPU thread (300 steps, about 14 s of CPU time, data and evaluation included): test NMSE 0.135 with the rotation
# trick (54 of 64 codes used), 0.284 (17 codes) with straight-through: the bar between them fails if the option
# were ignored. Untrained: 2.65.
STEPS, TRAIN_IMAGES, MAX_NMSE = 300, 2000, 0.2


def test_rotation_trick_trains_the_plain_ci_vqvae_better_than_straight_through(one_thread):
    _, _, before, after, _, _ = short_ci_run({"quantizer": {"rotation_trick": True}}, STEPS, TRAIN_IMAGES)
    untrained, nmse = before["nmse"], after["nmse"]
    print("rotation trick", nmse, "untrained", untrained)
    assert nmse < MAX_NMSE and nmse < untrained, (nmse, untrained)


def test_the_householder_reflection_keeps_angles_but_reverses_the_tangential_gradient_and_never_nears_identity():
    # What chapter 9's solution to exercise 9.3 says of H = I - 2 v v^T, v = (u - q) / |u - q|, against R.
    from vqvae_lib.exercises.ch09 import reference_rotation

    g = torch.Generator().manual_seed(0)
    u = F.normalize(torch.randn(5, dtype=torch.float64, generator=g), dim=0)
    q = F.normalize(torch.randn(5, dtype=torch.float64, generator=g), dim=0)
    grad = torch.randn(5, dtype=torch.float64, generator=g)

    def householder(u, q):
        v = (u - q) / (u - q).norm()
        return torch.eye(len(u), dtype=u.dtype) - 2 * torch.outer(v, v)

    H, R = householder(u, q), reference_rotation(u, q)
    eye = torch.eye(5, dtype=torch.float64)
    assert torch.allclose(H @ u, q) and torch.allclose(H, H.T) and torch.allclose(H.T @ H, eye)
    assert float(torch.linalg.det(H)) == pytest.approx(-1.0) and float(torch.linalg.det(R)) == pytest.approx(1.0)
    # angles kept exactly by both: angle(M^T g, u) = angle(g, q)
    for M in (H, R):
        assert float(F.cosine_similarity(M.T @ grad, u, dim=0)) == pytest.approx(
            float(F.cosine_similarity(grad, q, dim=0)), abs=1e-12)
    # in the plane of u and q, the component orthogonal to u comes out with opposite signs
    t = F.normalize(q - (q @ u) * u, dim=0)  # the plane's direction orthogonal to u
    assert float((H.T @ grad) @ t) == pytest.approx(-float((R.T @ grad) @ t), abs=1e-12)
    # as q -> u the rotation tends to the identity, the reflection stays a reflection (distance 2)
    for eps in (1e-2, 1e-4):
        near = F.normalize(u + eps * t, dim=0)
        assert float(torch.linalg.matrix_norm(reference_rotation(u, near) - eye, ord=2)) < 3 * eps
        assert float(torch.linalg.matrix_norm(householder(u, near) - eye, ord=2)) == pytest.approx(2.0)
