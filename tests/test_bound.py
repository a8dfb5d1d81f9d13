"""The VQ-VAE's whole-model bound: its decoder term, the fitted scale, the three priors' nats, the total."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqvae_lib import VQVAE, GatedPixelCNN
from vqvae_lib.data import ImageDataset, load_images
from vqvae_lib.evaluation.bound import (
    BinnedHead,
    check_raster_causal,
    decoder_nats,
    fit_binned_head,
    fit_decoder_log_scale,
    prior_nats_per_image,
    uniform_nats_per_image,
    unigram_nats_per_image,
    vqvae_bound_bits_per_dim,
    vqvae_cost_map,
    vqvae_reconstruction_nats,
)
from vqvae_lib.models.likelihood import (
    _search_log_sigmoid,
    bits_per_dim,
    discretized_logistic_nll,
    discretized_logistic_probs,
    summed_log_bin_prob,
)
from vqvae_lib.seeding import seeded

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_channel_vqvae():
    """An untrained VQ-VAE on 2-channel images: 4 x 4 images have a 1 x 1 code grid."""
    with seeded(0):
        return VQVAE(in_channels=2, num_codes=8, code_dim=4, hidden_channels=8, res_channels=4,
                     num_res_layers=1).eval()


def random_levels(shape, seed):
    """Random 8-bit images divided by 255, float64."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).double() / 255


def test_decoder_nats_is_minus_log_of_a_distribution_over_all_256_levels(two_channel_vqvae):
    x, indices = random_levels((3, 2, 4, 4), 0), torch.tensor([0, 3, 7]).view(3, 1, 1)
    log_scale = torch.tensor([-3.0, -1.5], dtype=torch.float64)  # one per channel
    probs = discretized_logistic_probs(two_channel_vqvae.decode_indices(indices).double(), log_scale.view(2, 1, 1))
    assert probs.shape == (3, 2, 4, 4, 256)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, 4, 4, dtype=torch.float64), atol=1e-12)
    level_probs = probs.gather(-1, (x * 255).round().long()[..., None]).squeeze(-1)
    want = -level_probs.log().flatten(1).sum(1)
    assert torch.allclose(decoder_nats(two_channel_vqvae, x, indices, log_scale), want, rtol=1e-12)

    # the wrapper itself, over the 256 values of one pixel with the code and the other pixels fixed
    sweep = x[:1].repeat(256, 1, 1, 1)
    sweep[:, 1, 2, 3] = torch.arange(256, dtype=torch.float64) / 255
    sweep_codes = indices[:1].expand(256, 1, 1)
    nats = decoder_nats(two_channel_vqvae, sweep, sweep_codes, log_scale)
    # -log p(the other 31 values), from the same 256-image decode as nats: a float32 decoder may round a
    # batch of 3 and a batch of 256 differently (the CPU decides), and 1e-12 is a float64 tolerance
    same_decode = two_channel_vqvae.decode_indices(sweep_codes)[:1].double()
    probs0 = discretized_logistic_probs(same_decode, log_scale.view(2, 1, 1))
    level0 = probs0.gather(-1, (x[:1] * 255).round().long()[..., None]).squeeze(-1)
    others = -level0.log().flatten(1).sum(1)[0] + level0[0, 1, 2, 3].log()
    assert float((others - nats).exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_a_scalar_log_scale_is_shared_by_the_channels(two_channel_vqvae):
    x, indices = random_levels((2, 2, 4, 4), 1), torch.tensor([1, 2]).view(2, 1, 1)
    assert torch.equal(decoder_nats(two_channel_vqvae, x, indices, -2.0),
                       decoder_nats(two_channel_vqvae, x, indices, torch.tensor([-2.0, -2.0])))
    for bad in (torch.tensor([-2.0, -1.0, 0.0]), math.nan):
        with pytest.raises(ValueError, match="log_scale"):
            decoder_nats(two_channel_vqvae, x, indices, bad)
    with pytest.raises(ValueError, match="decode to"):
        decoder_nats(two_channel_vqvae, x, torch.zeros(2, 2, 2, dtype=torch.long), -2.0)


@pytest.fixture(scope="module")
def digits():
    return load_images("mnist-5k", limit=96)


@pytest.fixture(scope="module")
def varied_vqvae(digits):
    """An untrained VQ-VAE whose codebook holds encoder outputs of 16 digits, so that digits get different
    codes (the untrained model's own codebook gives all 96 the same one)."""
    with seeded(0):
        model = VQVAE(num_codes=16, code_dim=4, hidden_channels=16, res_channels=8, num_res_layers=1).eval()
    with torch.no_grad():
        z_e = model.encode_continuous(digits.batch(torch.arange(16))[0])  # (16, D, 7, 7)
    model.quantizer.set_codes(z_e[:, :, 3, 3])
    return model


def test_reconstruction_nats_per_image(varied_vqvae, digits):
    nats = vqvae_reconstruction_nats(varied_vqvae, digits, -2.0, batch_size=40, device="cpu")  # three batches
    x = digits.batch(torch.arange(len(digits)))[0]
    assert len(varied_vqvae.encode(x).flatten(1).unique(dim=0)) > 10  # a mixed-up code grid would show
    assert nats.shape == (96,) and nats.dtype == torch.float64 and (nats > 0).all()
    # the same batches (a code at a near-tie can differ between batch sizes: float32 convolutions)
    by_hand = torch.cat([decoder_nats(varied_vqvae, x[i:i + 40], varied_vqvae.encode(x[i:i + 40]), -2.0)
                         for i in range(0, len(x), 40)])
    assert torch.allclose(nats, by_hand, rtol=1e-12)


def test_summed_log_bin_prob_is_the_sum_of_the_per_pixel_likelihoods():
    x = random_levels((6, 1, 5, 5), 2)
    x[0] = 0.0  # whole images in the first bin and in the last, whose edges lie at infinity
    x[1] = 1.0
    mean = torch.randn(6, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    log_scales = torch.tensor([-6.0, -2.5, 0.0, 1.5], dtype=torch.float64)
    summed = summed_log_bin_prob(torch.round(x * 255), mean, log_scales)
    for total, log_scale in zip(summed, log_scales):
        assert float(total) == pytest.approx(-float(discretized_logistic_nll(x, mean, log_scale).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype, ulps, floor", [(torch.float32, 2, 1e-7), (torch.float64, 0, 1e-13)])
def test_the_searchs_log_sigmoid_matches_the_exact_one_far_into_both_tails(dtype, ulps, floor):
    # sigmoid underflows float32 below -88 and float64 below -745: the tail must not become -inf
    z = torch.cat([torch.linspace(-1e4, 1e4, 20_001), torch.linspace(-100, 40, 14_001)]).to(dtype)
    fast = _search_log_sigmoid(z)
    assert fast.dtype == dtype and bool(torch.isfinite(fast).all())
    exact = F.logsigmoid(z.double())
    # float32: the vectorised exp and log are accurate to about an ulp, and which code path runs (so which
    # last bit) depends on the CPU: allow 2 ulps of the result, 2.4e-7 |log sigmoid(z)|, above a 1e-7 floor
    bound = ulps * torch.finfo(dtype).eps * exact.abs() + floor
    assert bool(((fast.double() - exact).abs() <= bound).all()), float((fast.double() - exact).abs().max())


def test_fitted_log_scale_is_the_training_splits_maximum_likelihood(varied_vqvae, digits):
    best = fit_decoder_log_scale(varied_vqvae, digits, device="cpu")
    assert best.shape == (1,) and torch.equal(best, fit_decoder_log_scale(varied_vqvae, digits, device="cpu"))

    def total(log_scale):
        return float(vqvae_reconstruction_nats(varied_vqvae, digits, log_scale, device="cpu").sum())

    at_best = total(best)
    # 10x wider and narrower, and 0.01 either side: more than twice the search's last step (0.0035) plus the
    # optimum's offset from the grid, so the check holds whichever grid neighbour float32 rounding picks
    for worse in (best + math.log(10), best - math.log(10), best + 0.01, best - 0.01):
        assert at_best < total(worse)


def test_a_per_pixel_scale_fits_each_pixel_and_the_cost_map_adds_up(varied_vqvae, digits):
    per_pixel = fit_decoder_log_scale(varied_vqvae, digits, device="cpu", per_pixel=True)
    shared = fit_decoder_log_scale(varied_vqvae, digits, device="cpu")
    assert per_pixel.shape == (1, 28, 28) and float(per_pixel.std()) > 0.1  # the pixels do differ

    def cost(log_scale):
        return vqvae_cost_map(varied_vqvae, digits, log_scale, device="cpu")

    # the shared scale is one of the per-pixel family: the per-pixel fit is no worse at any pixel (up to the
    # search's last step, 0.0035 in log-scale, which moves a pixel's nats by far less than 1e-3)
    assert bool((cost(per_pixel) <= cost(shared) + 1e-3).all())
    assert float(cost(per_pixel).sum()) < float(cost(shared).sum()) - 1.0
    # the map's sum is the mean of the per-image decoder nats, whatever the scale's form
    for log_scale in (shared, per_pixel):
        mean_nats = float(vqvae_reconstruction_nats(varied_vqvae, digits, log_scale, device="cpu").mean())
        assert float(cost(log_scale).sum()) == pytest.approx(mean_nats, rel=1e-12)
    with pytest.raises(ValueError, match="one per pixel"):
        cost(torch.zeros(1, 14, 14))


def test_the_binned_head_moves_location_and_scale_per_decoded_value_and_lowers_the_training_nats(
        varied_vqvae, digits):
    head = fit_binned_head(varied_vqvae, digits, bins=4, steps=60, device="cpu")
    mean = torch.tensor([[[[-5.0, 0.0, 5.0]]]])
    location, log_scale = head(mean)
    b = torch.bucketize(mean.double(), head.edges)
    assert torch.equal(location, mean.double() + head.offset[b]) and torch.equal(log_scale, head.log_scale[b])
    # at 0 offsets and one log-scale it is the shared scale, so fitting it can only lower the training nats
    start = BinnedHead(head.edges.clone())
    with torch.no_grad():
        start.log_scale.fill_(float(fit_decoder_log_scale(varied_vqvae, digits, device="cpu")))
    nats = {name: float(vqvae_reconstruction_nats(varied_vqvae, digits, h, device="cpu").mean())
            for name, h in (("start", start), ("fitted", head))}
    assert nats["fitted"] < nats["start"]
    with pytest.raises(ValueError, match="positive"):
        fit_binned_head(varied_vqvae, digits, bins=0)


def test_uniform_prior_nats():
    assert uniform_nats_per_image((7, 7), 64) == 49 * math.log(64)
    assert uniform_nats_per_image((1, 1), 1) == 0.0
    for shape, k in [((0, 7), 64), ((7, 7), 0)]:
        with pytest.raises(ValueError, match="positive"):
            uniform_nats_per_image(shape, k)


def test_unigram_prior_nats_by_hand():
    train_codes = torch.tensor([[[0, 0], [0, 1]]])  # counts 3, 1, 0 -> add-one 4, 2, 1 of 7
    test_codes = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 0]]])
    want = torch.tensor([-(math.log(4 / 7) + math.log(2 / 7) + 2 * math.log(1 / 7)), -4 * math.log(4 / 7)],
                        dtype=torch.float64)
    assert torch.allclose(unigram_nats_per_image(train_codes, test_codes, 3), want, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        unigram_nats_per_image(train_codes, test_codes + 1, 3)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        unigram_nats_per_image(train_codes, test_codes.flatten(), 3)


@pytest.fixture(scope="module")
def tiny_priors():
    with seeded(0):
        return GatedPixelCNN(5, hidden_channels=8, num_layers=2).eval(), \
            GatedPixelCNN(5, hidden_channels=8, num_layers=2, num_classes=3).eval()


def direct_cross_entropies(prior, grids, labels):
    """sum over (i, j) of -log softmax(logits at (i, j))[z_ij], one grid and one position at a time."""
    total = torch.zeros(len(grids), dtype=torch.float64)
    for n in range(len(grids)):
        label = None if labels is None else labels[n:n + 1]
        logits = prior(grids[n:n + 1], label)[0].double()
        for i in range(grids.shape[1]):
            for j in range(grids.shape[2]):
                total[n] -= torch.log_softmax(logits[:, i, j], 0)[grids[n, i, j]]
    return total


def test_prior_nats_is_the_sum_of_per_position_cross_entropies(tiny_priors):
    grids = torch.randint(0, 5, (7, 3, 4), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    for prior, lab in zip(tiny_priors, (None, labels)):
        got = prior_nats_per_image(prior, grids, lab, batch_size=3, device="cpu")  # three batches
        assert got.shape == (7,) and got.dtype == torch.float64
        assert torch.allclose(got, direct_cross_entropies(prior, grids, lab), rtol=1e-6)
    # the mean over grids and positions, in bits, is the prior's own bits_per_code
    with torch.no_grad():
        bits = float(tiny_priors[0].bits_per_code(grids))
    assert float(prior_nats_per_image(tiny_priors[0], grids, device="cpu").mean()) / 12 / math.log(2) == \
        pytest.approx(bits, rel=1e-5)


class SeesItsOwnCode(nn.Module):
    """A 'prior' whose logits at (i, j) read the code at (i, j) (a masked model on a full grid does)."""

    def forward(self, indices, labels=None):
        return 5.0 * F.one_hot(indices, 5).permute(0, 3, 1, 2).float()


class SeesTheNextCode(nn.Module):
    """Logits at (i, j) read the code one step later in raster order."""

    def forward(self, indices, labels=None):
        flat = indices.flatten(1).roll(-1, 1).view_as(indices)
        return F.one_hot(flat, 5).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("leaky", [SeesItsOwnCode(), SeesTheNextCode()])
def test_a_non_causal_prior_is_refused(leaky, tiny_priors):
    grids = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="not autoregressive"):
        prior_nats_per_image(leaky, grids, device="cpu")
    check_raster_causal(tiny_priors[0], grids[:1])  # the gated PixelCNN passes
    check_raster_causal(tiny_priors[1], grids[:1], torch.tensor([2]))


def test_prior_nats_refuses_bad_input(tiny_priors):
    grids = torch.zeros(4, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        prior_nats_per_image(tiny_priors[1], grids, torch.zeros(3, dtype=torch.long))
    for bad in (grids.float(), grids[0], grids[:0]):
        with pytest.raises(ValueError, match="code_grids"):
            prior_nats_per_image(tiny_priors[0], bad)


def test_bound_is_the_sum_of_its_parts():
    recon = torch.tensor([700.0, 900.0, 800.0], dtype=torch.float64)
    prior = torch.tensor([100.0, 150.0, 125.0], dtype=torch.float64)
    bound = vqvae_bound_bits_per_dim(recon, prior, 784)
    assert bound["decoder_bits_per_dim"] == pytest.approx(800 / 784 / math.log(2), rel=1e-12)
    assert bound["prior_bits_per_dim"] == pytest.approx(125 / 784 / math.log(2), rel=1e-12)
    assert bound["bits_per_dim"] == pytest.approx(bound["decoder_bits_per_dim"] + bound["prior_bits_per_dim"],
                                                  rel=1e-12)
    assert bound["bits_per_dim"] == pytest.approx(float(bits_per_dim((recon + prior).mean(), 784)), rel=1e-12)
    assert bound["num_images"] == 3
    uniform = vqvae_bound_bits_per_dim(recon, uniform_nats_per_image((7, 7), 64), 784)  # a float for every image
    assert uniform["prior_bits_per_dim"] == pytest.approx(49 * 6 / 784, rel=1e-12)


@pytest.mark.parametrize("recon, prior, num_dims, message", [
    (torch.ones(3), torch.ones(2), 784, "prior_nats_per_image"),
    (torch.ones(0), 1.0, 784, "non-empty"),
    (torch.ones(3, 1), torch.ones(3), 784, r"\(N,\)"),
    (torch.tensor([1.0, -1.0]), 1.0, 784, ">= 0"),
    (torch.ones(2), torch.tensor([1.0, math.inf]), 784, "finite"),
    (torch.ones(2), 1.0, 0, "positive"),
])
def test_bound_refuses_bad_input(recon, prior, num_dims, message):
    with pytest.raises(ValueError, match=message):
        vqvae_bound_bits_per_dim(recon, prior, num_dims)


def test_decoder_nats_refuses_images_off_the_8_bit_grid(vqvae):
    x = ImageDataset(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).batch(torch.arange(2))[0] + 0.5 / 255
    with pytest.raises(ValueError, match="grid"):
        decoder_nats(vqvae, x, vqvae.encode(x), -2.0)
