"""VQGAN (Esser et al. 2021): the patch discriminator, the hinge and adversarial losses, the adaptive weight, the
perceptual distance in a book-trained network, where each term's gradient goes, and train_vqgan."""
import sys

import pytest
import torch
from torch import nn

from vqvae_lib import VQGAN, VQVAE, ImageDataset, PatchDiscriminator, PerceptualLoss, evaluate_vqvae, train, train_vqgan
from vqvae_lib.evaluation.metrics import encode_dataset
from vqvae_lib.evaluation.sample_quality import DigitClassifier
from vqvae_lib.models.vqgan import (
    adaptive_weight,
    generator_adversarial_loss,
    hinge_d_loss,
    logit_map_size,
    lpips_loss,
    receptive_field,
)
from vqvae_lib.seeding import seeded

SIZE = 16  # images of 16x16: a 4x4 code grid, and a 2x2 logit map from a 2-layer discriminator
VQ = dict(in_channels=3, num_codes=16, code_dim=4, hidden_channels=16, res_channels=8, num_res_layers=1, downsample=4)
DISC = dict(channels=8, num_layers=2)


def small_vqgan(quantizer=None, **settings) -> VQGAN:
    with seeded(0):
        return VQGAN(vqvae={**VQ, "quantizer": quantizer}, discriminator=DISC, **settings)


def images(n=4, channels=3, seed=0, size=SIZE) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def dataset(n=32, channels=3, seed=0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.randint(0, 256, (n, channels, SIZE, SIZE), dtype=torch.uint8, generator=g))


def feature_net(in_channels=3) -> DigitClassifier:
    with seeded(1):
        return DigitClassifier(in_channels=in_channels, channels=4)


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the adversarial losses

REAL = torch.tensor([2.0, 0.5, -1.0, 1.5]).view(1, 1, 2, 2)  # relu(1 - real) = [0, 0.5, 2, 0]: mean 0.625
FAKE = torch.tensor([-3.0, -0.5, 0.25, 1.0]).view(1, 1, 2, 2)  # relu(1 + fake) = [0, 0.5, 1.25, 2]: mean 0.9375


def test_hinge_d_loss_matches_its_formula_with_the_relu_active_and_inactive():
    real, fake = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    loss = hinge_d_loss(real, fake)
    assert loss.item() == 0.5 * (0.625 + 0.9375)
    loss.backward()
    # past the margin (real >= 1, fake <= -1) nothing pushes; inside it each logit gets 0.5 / n
    assert real.grad.flatten().tolist() == [0.0, -0.125, -0.125, 0.0]
    assert fake.grad.flatten().tolist() == [0.0, 0.125, 0.125, 0.125]
    assert hinge_d_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0  # the margin met exactly


def test_generator_adversarial_loss_is_minus_the_mean_logit():
    fake = FAKE.clone().requires_grad_(True)
    loss = generator_adversarial_loss(fake)
    assert loss.item() == -(-3.0 - 0.5 + 0.25 + 1.0) / 4
    loss.backward()
    assert torch.equal(fake.grad, torch.full_like(fake, -0.25))  # no margin: every logit keeps being pushed


# ---------------------------------------------------------------- the adaptive weight


def tiny_losses(g_scale=1.0, rec_scale=1.0):
    """h = W a with W the "last layer": rec = sum(h^2) (dW = 2 h a^T), g = c.h (dW = c a^T)."""
    last = nn.Parameter(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=torch.float64))
    a = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    c = torch.tensor([3.0, -4.0], dtype=torch.float64) * g_scale
    h = last @ a
    return rec_scale * h.square().sum(), (c * h).sum(), last, h, a, c


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer_detached():
    rec, g, last, h, a, c = tiny_losses()
    weight = adaptive_weight(rec, g, last)
    by_hand = 2 * h.norm() * a.norm() / (c.norm() * a.norm() + 1e-4)  # |2 h a^T| = 2 |h| |a|, |c a^T| = |c| |a|
    assert weight.item() == pytest.approx(by_hand.item(), rel=1e-12)
    assert weight.grad_fn is None and not weight.requires_grad
    (rec + weight * g).backward()  # both graphs were kept for the total's backward pass
    assert last.grad is not None


def test_adaptive_weight_is_clamped_to_zero_and_max_weight():
    rec, g, last, *_ = tiny_losses(rec_scale=0.0)  # no reconstruction gradient at the last layer
    assert adaptive_weight(rec, g, last).item() == 0.0
    rec, g, last, *_ = tiny_losses(g_scale=1e-9)  # a vanishing adversarial gradient: 2 |h||a| / 1e-4 > 1e4
    assert adaptive_weight(rec, g, last).item() == 1e4
    rec, g, last, *_ = tiny_losses()
    assert adaptive_weight(rec, g, last, max_weight=0.5).item() == 0.5


# ---------------------------------------------------------------- the discriminator


def test_patch_discriminator_gives_a_logit_map_of_the_documented_size():
    d = PatchDiscriminator()
    assert d(images(2, size=32)).shape == (2, 1, 2, 2)  # the default depth on 32x32 images
    assert [logit_map_size(32, n) for n in (1, 2, 3)] == [14, 6, 2]
    small = PatchDiscriminator(channels=4, num_layers=2)
    assert small(images(2, size=SIZE)).shape == (2, 1, logit_map_size(SIZE, 2), logit_map_size(SIZE, 2))
    with pytest.raises(ValueError, match="at least 24 pixels"):
        d(images(1, size=SIZE))
    with pytest.raises(ValueError, match="channel"):
        d(images(1, channels=1, size=32))


def test_receptive_field_is_the_patch_each_logit_sees():
    """Measured by autograd with the norms removed: their statistics span the whole map, so with them every
    logit depends a little on every pixel (as pix2pix's BatchNorm makes it depend on the whole batch)."""
    assert [receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    for num_layers in (1, 2):
        d = PatchDiscriminator(channels=4, num_layers=num_layers)
        d.layers = nn.Sequential(*(nn.Identity() if isinstance(m, nn.GroupNorm) else m for m in d.layers))
        x = torch.rand(1, 3, 80, 80, requires_grad=True)
        logits = d(x)
        logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
        rows, cols = x.grad[0].abs().sum(0).nonzero().unbind(1)
        assert int(rows.max() - rows.min()) + 1 == receptive_field(num_layers)
        assert int(cols.max() - cols.min()) + 1 == receptive_field(num_layers)


def test_patch_discriminator_initialises_as_pix2pix():
    d = PatchDiscriminator()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 1e-3 and abs(weights.mean().item()) < 1e-3
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in d.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3 and abs(torch.cat([m.weight for m in norms]).mean().item() - 1) < 1e-2


# ---------------------------------------------------------------- the perceptual distance


class TwoLayers(nn.Module):
    """A fake feature net: the image itself and twice it, as two "layers"."""

    def feature_maps(self, x):
        return [x, 2 * x]


def test_perceptual_distance_is_the_lpips_form_without_weights():
    # position 0: x = (0.3, 0.4) -> (0.6, 0.8), y = (1, 0): |u_x - u_y|^2 = 0.16 + 0.64 = 0.8
    # position 1: x = (0, 0) stays 0, y = (0, 0.5) -> (0, 1): 1.0; mean over positions 0.9; two layers (the
    # second a rescaled copy, which unit length makes equal): 1.8
    x = torch.tensor([[0.3, 0.0], [0.4, 0.0]]).view(1, 2, 1, 2)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.5]]).view(1, 2, 1, 2)
    assert PerceptualLoss(TwoLayers()).distance(x, y).item() == pytest.approx(1.8, rel=1e-6)


def test_perceptual_loss_is_zero_for_identical_images_positive_otherwise_symmetric_and_frozen():
    net = feature_net()
    loss = PerceptualLoss(net)
    a, b = images(4, seed=0), images(4, seed=1).requires_grad_(True)
    assert loss(a, a).item() == 0.0
    assert loss(a, b).item() > 0 and (loss.distance(a, b) > 0).all()
    assert torch.equal(loss(a, b), loss(b, a))
    loss(b, a).backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    loss.train()
    assert not net.training


def test_digit_classifier_feature_maps_are_the_conv_blocks_relu_outputs():
    net = feature_net()
    maps = net.feature_maps(images(2, size=32))
    assert [tuple(m.shape) for m in maps] == [(2, 4, 32, 32), (2, 8, 16, 16)]
    assert all((m >= 0).all() for m in maps)
    with pytest.raises(ValueError, match="channel"):
        net.feature_maps(images(2, channels=1))
    with pytest.raises(TypeError, match="feature_maps"):
        PerceptualLoss(nn.Linear(2, 2))


def test_lpips_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips fails, installed or not
    with pytest.raises(ImportError, match="pip install lpips"):
        lpips_loss()
    model = small_vqgan()
    before = state(model)
    with pytest.raises(ImportError, match="pip install lpips"):
        train_vqgan(model, dataset(), steps=1, batch_size=4, perceptual="lpips", progress=False)
    assert same_state(before, state(model))
    with pytest.raises(ValueError, match="lpips"):
        train_vqgan(model, dataset(), steps=1, batch_size=4, perceptual="vgg", progress=False)


# ---------------------------------------------------------------- where each term's gradient goes


def grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def reached(gs) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in gs)


def parts(model):
    return {"encoder": list(model.generator.encoder.parameters()),
            "decoder": list(model.generator.decoder.parameters()),
            "discriminator": list(model.discriminator.parameters())}


def test_the_discriminator_loss_reaches_only_the_discriminator():
    model = small_vqgan().train()
    x = images()
    out = model(x)
    assert out.x_recon.requires_grad
    loss = model.discriminator_loss(x, out.x_recon, step=0)
    p = parts(model)
    assert reached(grads(loss, p["discriminator"]))
    for name in ("encoder", "decoder"):
        assert not reached(grads(loss, p[name])), name
    assert not reached(grads(loss, [model.quantizer.codebook]))


def test_adversarial_and_perceptual_terms_reach_decoder_and_encoder_never_the_discriminator_or_codebook():
    model = small_vqgan(perceptual_weight=2.0, disc_weight=0.5).train()
    values = model.generator_loss(images(), step=0, perceptual=PerceptualLoss(feature_net()))
    p, codebook = parts(model), [model.quantizer.codebook]
    for term in ("g_loss", "perceptual_loss"):
        assert reached(grads(values[term], p["decoder"])), term
        assert reached(grads(values[term], p["encoder"])), term  # through the straight-through estimator
        assert not reached(grads(values[term], p["discriminator"])), term
        assert not reached(grads(values[term], codebook)), term
    assert not reached(grads(values["recon_loss"], codebook))
    # the codebook moves by its own term only: the total's codebook gradient is the VQ loss's
    assert reached(grads(values["vq_loss"], codebook))
    assert torch.equal(grads(values["loss"], codebook)[0], grads(values["vq_loss"], codebook)[0])
    assert all(q.requires_grad for q in model.discriminator.parameters())  # frozen only while the loss was built


def test_generator_loss_is_assembled_from_its_terms_with_the_adaptive_weight():
    model = small_vqgan(perceptual_weight=2.0, disc_weight=0.5).train()
    v = model.generator_loss(images(), step=0, perceptual=PerceptualLoss(feature_net()))
    weight = adaptive_weight(v["recon_loss"] + 2.0 * v["perceptual_loss"], v["g_loss"], model.last_layer)
    assert v["adaptive_weight"].item() > 0 and torch.allclose(v["adaptive_weight"], weight)
    expected = v["recon_loss"] + v["vq_loss"] + 2.0 * v["perceptual_loss"] + 0.5 * weight * v["g_loss"]
    assert torch.allclose(v["loss"], expected)
    with torch.no_grad():  # no gradients, no weight (taming does the same)
        assert model.generator_loss(images(), step=0)["adaptive_weight"].item() == 0.0


def test_an_ema_codebook_takes_no_gradient_at_all():
    model = small_vqgan(quantizer={"ema": True}).train()
    assert not model.quantizer.codebook.requires_grad
    values = model.generator_loss(images(), step=0, perceptual=PerceptualLoss(feature_net()))
    values["loss"].backward()
    assert model.quantizer.codebook.grad is None
    assert all(q.grad is None for q in model.discriminator.parameters())
    assert reached([q.grad for q in model.generator.encoder.parameters()])


# ---------------------------------------------------------------- disc_start


def test_before_disc_start_there_is_no_adversarial_term_and_no_discriminator_loss():
    model = small_vqgan(disc_start=5).train()
    calls = []
    model.discriminator.register_forward_hook(lambda *args: calls.append(1))
    x = images()
    v = model.generator_loss(x, step=4)
    assert v["g_loss"].item() == 0.0 and v["adaptive_weight"].item() == 0.0 and not calls
    assert torch.equal(v["loss"], v["recon_loss"] + v["vq_loss"])
    d = model.discriminator_loss(x, v["x_recon"], step=4)
    assert d.item() == 0.0 and d.grad_fn is None and not calls
    v = model.generator_loss(x, step=5)
    assert v["g_loss"].item() != 0.0 and v["adaptive_weight"].item() > 0 and calls


def test_train_vqgan_leaves_the_discriminator_alone_until_disc_start(one_thread):
    model = small_vqgan(disc_start=2)
    before = state(model.discriminator)
    generator_before = state(model.generator)
    history = train_vqgan(model, dataset(), steps=2, batch_size=8, log_every=1, progress=False)
    assert same_state(before, state(model.discriminator)) and not same_state(generator_before, state(model.generator))
    assert history.train["disc_loss"] == [0.0, 0.0] and history.train["g_loss"] == [0.0, 0.0]
    model = small_vqgan(disc_start=1)
    history = train_vqgan(model, dataset(), steps=2, batch_size=8, log_every=1, progress=False)
    assert not same_state(before, state(model.discriminator))
    assert history.train["disc_loss"][0] == 0.0 and history.train["disc_loss"][1] > 0
    assert not model.training


def test_without_adversary_or_perceptual_term_train_vqgan_is_train(one_thread):
    """Same batches, same loss, same Adam: bitwise the VQ-VAE that train() gives (betas and lr matched)."""
    with seeded(0):
        vqvae = VQVAE(**VQ)
    gan = VQGAN.from_vqvae(vqvae, discriminator=DISC, disc_start=100)
    data = dataset(n=24)
    train(vqvae, data, steps=4, batch_size=8, lr=1e-3, progress=False, seed=3)
    train_vqgan(gan, data, steps=4, batch_size=8, lr=1e-3, betas=(0.9, 0.999), progress=False, seed=3)
    assert same_state(state(vqvae), state(gan.generator))


# ---------------------------------------------------------------- train_vqgan


def test_train_vqgan_is_deterministic_for_a_seed(one_thread):
    def run(seed):
        model = small_vqgan(quantizer={"ema": True}, disc_start=1)
        history = train_vqgan(model, dataset(), steps=3, batch_size=8, seed=seed, log_every=1, progress=False,
                              perceptual=PerceptualLoss(feature_net()))
        return state(model), history

    (a, ha), (b, hb), (c, _) = run(0), run(0), run(1)
    assert same_state(a, b) and ha.train == hb.train
    assert not same_state(a, c)
    assert set(ha.train) >= {"loss", "recon_loss", "perceptual_loss", "vq_loss", "g_loss", "adaptive_weight",
                             "disc_loss", "perplexity"}


def test_train_vqgan_logs_the_generators_eval_numbers_and_uses_the_run_cache(tmp_path, one_thread):
    data, test = dataset(), dataset(n=8, seed=1)
    kwargs = dict(steps=2, batch_size=8, progress=False, eval_data=test, eval_every=2, cache=tmp_path,
                  perceptual=PerceptualLoss(feature_net()))
    model = small_vqgan(disc_start=1)
    history = train_vqgan(model, data, **kwargs)
    assert history.eval_steps == [2] and "recon_loss" in history.eval
    again = small_vqgan(disc_start=1)
    cached = train_vqgan(again, data, **kwargs)
    assert same_state(state(model), state(again)) and cached.to_dict() == history.to_dict()
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_inputs_are_refused_before_any_update():
    model = small_vqgan(quantizer={"ema": True})  # an EMA codebook moves inside the forward pass
    before = state(model)
    with pytest.raises(ValueError, match="channel"):
        train_vqgan(model, dataset(channels=1), steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="channel"):  # a grey perceptual net on colour images
        train_vqgan(model, dataset(), steps=2, batch_size=4, progress=False,
                    perceptual=PerceptualLoss(feature_net(in_channels=1)))
    with pytest.raises(ValueError, match="steps"):
        train_vqgan(model, dataset(), steps=-1, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        train_vqgan(model, dataset(n=0), steps=1, progress=False)
    assert same_state(before, state(model))
    with pytest.raises(ValueError, match="in_channels"):
        VQGAN(vqvae=VQ, discriminator={"in_channels": 1})


# ---------------------------------------------------------------- checkpoints and the VQ-VAE interface


def test_patch_discriminator_save_load_round_trip(tmp_path):
    d = PatchDiscriminator(in_channels=3, channels=12, num_layers=2)
    d.save_pretrained(tmp_path)
    loaded = PatchDiscriminator.from_pretrained(tmp_path)
    assert loaded.config == d.config and loaded.config["channels"] == 12 and loaded.layers[0].out_channels == 12
    x = images()
    assert torch.equal(d(x), loaded(x))


def test_vqgan_save_load_round_trip(tmp_path, one_thread):
    model = small_vqgan(quantizer={"ema": True}, disc_start=1, disc_weight=0.3)
    train_vqgan(model, dataset(), steps=2, batch_size=8, progress=False)  # EMA buffers and both nets moved
    model.save_pretrained(tmp_path)
    loaded = VQGAN.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert loaded.disc_weight == 0.3 and loaded.disc_start == 1 and loaded.discriminator.config["channels"] == 8
    assert same_state(state(model), state(loaded))
    x = images()
    with torch.no_grad():
        a, b = model(x), loaded(x)
        assert torch.equal(a.x_recon, b.x_recon) and torch.equal(a.vq.indices, b.vq.indices)
        assert torch.equal(model.discriminator(x), loaded.discriminator(x))


def test_a_vqgan_plugs_into_code_that_takes_a_vqvae():
    model = small_vqgan().eval()
    data = dataset(n=8)
    assert evaluate_vqvae(model, data) == evaluate_vqvae(model.generator, data)
    codes = encode_dataset(model, data)
    assert torch.equal(codes, encode_dataset(model.generator, data))
    assert torch.equal(model.decode_indices(codes[:2]), model.generator.decode_indices(codes[:2]))
    assert model.quantizer is model.generator.quantizer and model.in_channels == 3 and model.downsample == 4


def test_the_losses_run_under_bf16_autocast():
    """train_vqgan's forward passes on CUDA run under bf16 autocast; the CPU's autocast takes the same paths."""
    model = small_vqgan().train()
    x = images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = model.generator_loss(x, step=0, perceptual=PerceptualLoss(feature_net()))
    scalars = {k: v for k, v in values.items() if k != "x_recon"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in scalars.values()), scalars
    assert values["adaptive_weight"] > 0
    values["loss"].backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_loss = model.discriminator_loss(x, values["x_recon"], step=0)
    assert d_loss.dtype == torch.float32
    d_loss.backward()
    assert reached([p.grad for p in model.discriminator.parameters()])
