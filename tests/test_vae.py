"""The discretised logistic likelihood and the VAE built on it: a normalised likelihood, so a true bound."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vqvae_lib import VAE
from vqvae_lib.models.likelihood import (
    bits_per_dim,
    discretized_logistic_mean,
    discretized_logistic_nll,
    discretized_logistic_probs,
)
from vqvae_lib.models.vae import gaussian_kl, reparameterize
from vqvae_lib.seeding import seeded

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every value of an 8-bit pixel
MEANS = [-0.7, 0.0, 0.002, 0.3, 0.5, 0.9981, 1.0, 1.6]  # inside, on the grid and beyond both edges
LOG_SCALES = [-9.0, -6.0, -3.0, -1.0, 0.0, 2.0]          # far narrower than a bin to far wider than [0, 1]


def all_levels_nll(mean: float, log_scale: float) -> torch.Tensor:
    """-log P(k) for k = 0..255: each level as one 1-pixel image, (256,)."""
    x = LEVELS.view(256, 1, 1, 1)
    return discretized_logistic_nll(x, torch.full_like(x, mean), torch.full_like(x, log_scale))


@pytest.mark.parametrize("log_scale", LOG_SCALES)
@pytest.mark.parametrize("mean", MEANS)
def test_bin_probabilities_sum_to_one(mean, log_scale):
    total = all_levels_nll(mean, log_scale).neg().exp().sum()
    assert abs(float(total) - 1) < 1e-12  # float64: rounding only
    probs = discretized_logistic_probs(torch.tensor(mean, dtype=torch.float64),
                                       torch.tensor(log_scale, dtype=torch.float64))
    assert probs.shape == (256,) and abs(float(probs.sum()) - 1) < 1e-12
    assert torch.allclose(probs, all_levels_nll(mean, log_scale).neg().exp(), rtol=1e-12, atol=0)


def reference_bin_prob(k: int, mean: float, scale: float, mp) -> float:
    """P(level k) from the logistic CDF by hand, in 60-digit arithmetic (mpmath): the edges take the tails."""
    mp.mp.dps = 60

    def cdf(v):
        return 1 / (1 + mp.exp(-(mp.mpf(v) / 255 - mp.mpf(mean)) / mp.mpf(scale)))

    upper = mp.mpf(1) if k == 255 else cdf(k + mp.mpf(0.5))
    lower = mp.mpf(0) if k == 0 else cdf(k - mp.mpf(0.5))
    return upper - lower


@pytest.mark.parametrize("log_scale_shape", [(2, 3, 4), (2, 1, 1), ()])  # per pixel, per channel, one scalar
def test_nll_is_minus_log_bin_probability(log_scale_shape):
    mp = pytest.importorskip("mpmath")  # installed with torch (through sympy)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 2, 3, 4), generator=g).double() / 255
    x[0, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)  # both edge bins
    mean = torch.rand(3, 2, 3, 4, generator=g, dtype=torch.float64) * 1.4 - 0.2
    log_scale = torch.rand(log_scale_shape, generator=g, dtype=torch.float64) * 3 - 4
    nll = discretized_logistic_nll(x, mean, log_scale)
    assert nll.shape == (3,) and nll.dtype == torch.float64
    s = log_scale.exp().expand_as(x)
    want = [float(-sum(mp.log(reference_bin_prob(round(float(x[b].flatten()[i]) * 255), float(mean[b].flatten()[i]),
                                                 float(s[b].flatten()[i]), mp)) for i in range(x[b].numel())))
            for b in range(3)]
    assert torch.allclose(nll, torch.tensor(want, dtype=torch.float64), rtol=1e-12)
    assert (nll >= 0).all()  # probabilities of discrete values are at most 1


def test_float32_agrees_with_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 1, 5, 5), generator=g).double() / 255
    mean, log_scale = torch.rand(4, 1, 5, 5, generator=g, dtype=torch.float64), torch.full((1, 1, 1), -2.5).double()
    exact = discretized_logistic_nll(x, mean, log_scale)
    single = discretized_logistic_nll(x.float(), mean.float(), log_scale.float())
    assert single.dtype == torch.float32 and torch.allclose(single.double(), exact, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_at_the_edges(dtype):
    x = torch.tensor([0.0, 1.0, 0.0, 1.0, 1 / 255, 254 / 255], dtype=dtype).view(-1, 1, 1, 1).repeat(7, 1, 1, 1)
    mean = torch.linspace(-6, 7, len(x), dtype=dtype).view(-1, 1, 1, 1).requires_grad_(True)
    log_scale = torch.linspace(-12, 4, len(x), dtype=dtype).flip(0).view(-1, 1, 1, 1).requires_grad_(True)
    nll = discretized_logistic_nll(x, mean, log_scale)
    nll.sum().backward()
    assert torch.isfinite(nll).all()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()
    assert mean.grad.abs().sum() > 0 and log_scale.grad.abs().sum() > 0


def test_edge_bins_take_the_tails():
    """A location far below 0 puts (almost) all mass on level 0; far above 1, on level 255."""
    assert float(all_levels_nll(-5.0, -3.0)[0]) < 1e-30
    assert float(all_levels_nll(6.0, -3.0)[255]) < 1e-30


@pytest.mark.parametrize("x, message", [(torch.full((1, 1, 2, 2), 1.5), r"\[0, 1\]"),
                                        (torch.full((1, 1, 2, 2), -0.5), r"\[0, 1\]"),
                                        (torch.full((1, 1, 2, 2), 0.5), "grid")])
def test_refuses_values_off_the_8_bit_grid(x, message):
    with pytest.raises(ValueError, match=message):
        discretized_logistic_nll(x, torch.zeros_like(x), torch.zeros_like(x))


@pytest.mark.parametrize("log_scale", [-6.0, -2.0, 0.0, 3.0])
@pytest.mark.parametrize("mean", [-1.0, 0.1, 0.5, 2.0])
def test_mean_is_the_expectation_over_levels(mean, log_scale):
    m, ls = torch.tensor([mean], dtype=torch.float64), torch.tensor([log_scale], dtype=torch.float64)
    want = (discretized_logistic_probs(m, ls) * LEVELS).sum(-1)
    got = discretized_logistic_mean(m, ls)
    assert torch.allclose(got, want, atol=1e-12) and 0 <= float(got) <= 1


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(math.log(2) * 10, 10) == pytest.approx(1.0)
    assert torch.allclose(bits_per_dim(torch.tensor([0.0, 2 * math.log(2)]), 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        bits_per_dim(1.0, 0)


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 8), torch.randn(5, 8)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_reparameterisation_gradient_reaches_mu_and_logvar():
    mu, logvar = torch.zeros(4, 3, requires_grad=True), torch.zeros(4, 3, requires_grad=True)
    reparameterize(mu, logvar).pow(2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def random_images(n: int = 3, size: int = 28) -> torch.Tensor:
    """Random 8-bit images divided by 255: (n, 1, size, size) on the likelihood's grid."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g).float() / 255


def test_vae_shapes_and_loss_terms():
    model = VAE(latent_dim=4, hidden_channels=4)
    x = random_images()
    out = model(x)
    assert out.x_recon.shape == (3, 1, 28, 28) and out.z.shape == (3, 4)
    assert out.mean.shape == out.log_scale.shape == (3, 1, 28, 28)
    assert 0 <= float(out.x_recon.min()) and float(out.x_recon.max()) <= 1
    assert torch.allclose(out.loss, out.recon_loss + out.kl) and out.kl >= 0
    # the terms are the likelihood's NLL at the sampled z and the closed-form KL, averaged over the batch
    assert torch.allclose(out.recon_loss, discretized_logistic_nll(x, *model.decode(out.z)).mean())
    assert torch.allclose(out.kl, gaussian_kl(out.mu, out.logvar).mean())
    assert set(model.training_step((x, None))) == {"loss", "recon_loss", "kl"}
    samples = model.sample(5)
    assert samples.shape == (5, 1, 28, 28) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    with pytest.raises(ValueError, match="expected images"):
        model(torch.rand(3, 1, 32, 32))


def test_beta_weights_only_the_kl():
    with seeded(0):
        model = VAE(latent_dim=4, hidden_channels=4, beta=2.5)
    out = model(random_images())
    assert torch.allclose(out.loss, out.recon_loss + 2.5 * out.kl)


def tiny_trained_vae(x: torch.Tensor) -> VAE:
    """A VAE on 8 x 8 images, trained a little on x so that its posteriors are informative."""
    with seeded(0):
        model = VAE(image_size=8, latent_dim=2, hidden_channels=4)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(TRAIN_STEPS):
            loss = model(x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


TRAIN_STEPS = 200
NUM_SAMPLES = 2000


def test_the_elbo_bounds_an_importance_sampled_log_likelihood():
    """-ELBO >= -log p(x) for the discrete image: checked against an independent importance-sampled estimate.

    For each image, with K = 2000 draws z_k ~ q(z|x), -log p(x) ~ -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),
    written out here with torch.distributions. Its expectation lies between -log p(x) and the true -ELBO, so the
    model's loss (averaged over 2000 independent one-sample forward passes) must not fall below it. Here it is
    above by many times the standard error of its Monte-Carlo average (and the estimate's effective sample size
    is not tiny), so the check fails by chance with negligible probability; the seeds are fixed besides. It
    fails if the loss is not a bound for the model's own p(x) = integral of p(x|z) p(z) dz: a KL that is too
    small, a z drawn from another q than the one the KL describes, a reconstruction term that is not
    -log p(x|z). That p(x|z) is normalised over the 256 levels is the business of the tests above; the
    estimate is also >= 0, as -log of the probability of a discrete image must be.
    """
    x = random_images(4, size=8)
    model = tiny_trained_vae(x)
    with torch.no_grad(), seeded(1):
        # the model's -ELBO: its loss on the image repeated, one independent z per copy
        neg_elbo, se_elbo = [], []
        for img in x:
            out = model(img.expand(NUM_SAMPLES, -1, -1, -1))
            per_copy = discretized_logistic_nll(img.expand(NUM_SAMPLES, -1, -1, -1), out.mean, out.log_scale) \
                + gaussian_kl(out.mu, out.logvar)
            assert torch.allclose(out.loss, per_copy.mean())
            neg_elbo.append(float(out.loss))
            se_elbo.append(float(per_copy.std()) / NUM_SAMPLES**0.5)
    with torch.no_grad(), seeded(2):
        # importance sampling written out independently of the model's own importance_nll
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = q.sample((NUM_SAMPLES,))                                       # (K, B, L)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        mean, log_scale = model.decode(z.flatten(0, 1))
        log_lik = -discretized_logistic_nll(x.repeat(NUM_SAMPLES, 1, 1, 1), mean, log_scale).view(NUM_SAMPLES, -1)
        log_w = log_lik + log_prior - q.log_prob(z).sum(-1)
        is_nll = -(torch.logsumexp(log_w, 0) - math.log(NUM_SAMPLES))
        w = (log_w - log_w.max(0).values).exp()
        ess = w.sum(0) ** 2 / w.pow(2).sum(0)  # effective sample size: the estimate is not one lucky draw
    neg_elbo, se_elbo = torch.tensor(neg_elbo), torch.tensor(se_elbo)
    assert (is_nll >= 0).all()
    assert (ess > 20).all(), ess
    assert (is_nll < neg_elbo - 5 * se_elbo).all(), (is_nll, neg_elbo, se_elbo)
    with seeded(3):
        own = model.importance_nll(x, num_samples=NUM_SAMPLES)
    assert own.shape == (4,) and torch.allclose(own, is_nll.float(), atol=0.5), (own, is_nll)
