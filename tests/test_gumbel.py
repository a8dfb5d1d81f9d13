"""The Gumbel-softmax quantizer (vqvae_lib.quantizers.gumbel): the sampler, its KL, its gradient's bias, and a VQ-VAE
with it that learns on the ci data."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import saved_and_loaded, short_ci_run
from torch.distributions import Categorical, kl_divergence

from vqvae_lib.quantizers import build_quantizer
from vqvae_lib.quantizers.gumbel import (
    GumbelQuantizer,
    categorical_kl_to_uniform,
    exact_expectation_gradient,
    gumbel_gradient_bias,
    gumbel_softmax,
)
from vqvae_lib.quantizers.vq import perplexity_from_counts

pytestmark = pytest.mark.usefixtures("one_thread")

K, D = 16, 4


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_kl_term_matches_torch_distributions():
    gq = GumbelQuantizer(K, D, kl_weight=0.3)
    with torch.no_grad():
        gq.proj.weight.mul_(20)  # peaked, varied posteriors, not all near uniform
    z_e = torch.randn(3, D, 4, 5)
    out = gq(z_e)
    logits = F.conv2d(z_e, gq.proj.weight, gq.proj.bias).movedim(1, -1)  # (B, H, W, K)
    expected = kl_divergence(Categorical(logits=logits), Categorical(probs=torch.full((K,), 1 / K))).mean()
    assert torch.allclose(out.terms["kl"], expected, atol=1e-5)
    assert 0.5 < float(expected.detach()) < math.log(K)  # the example is not a trivial one
    assert torch.allclose(out.loss, 0.3 * expected, atol=1e-6)
    assert float(out.codebook_loss) == 0.0 and float(out.commitment_loss) == 0.0


def test_kl_to_uniform_bounds():
    assert float(categorical_kl_to_uniform(torch.zeros(1, K, 1, 1))) == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.full((1, K, 1, 1), -1e4)
    one_hot[0, 3] = 0.0
    assert float(categorical_kl_to_uniform(one_hot)) == pytest.approx(math.log(K), abs=1e-4)


def test_soft_samples_lie_on_the_simplex_and_approach_one_hot_as_the_temperature_falls():
    logits = torch.randn(2000, K)
    means = []
    for tau in (4.0, 1.0, 0.5, 0.1, 0.01):
        y = gumbel_softmax(logits, tau, generator=gen(1))
        assert (y >= 0).all() and torch.allclose(y.sum(-1), torch.ones(2000), atol=1e-5)
        assert torch.equal(y.argmax(-1), gumbel_softmax(logits, 1.0, generator=gen(1)).argmax(-1))  # same noise
        means.append(float(y.max(-1).values.mean()))
    assert means == sorted(means) and means[-1] > 0.99, means


def test_the_argmax_is_an_exact_sample_of_the_categorical():
    """Gumbel-max: argmax(logits + g) ~ softmax(logits), whatever the temperature."""
    logits, n = torch.tensor([1.0, 0.0, -1.0, 0.5]), 200_000
    y = gumbel_softmax(logits.expand(n, -1), 0.3, generator=gen(2))
    freq = torch.bincount(y.argmax(-1), minlength=4).float() / n
    assert torch.allclose(freq, torch.softmax(logits, 0), atol=0.005), freq  # 0.005 ~ 4.5 standard errors


def test_hard_samples_are_one_hot_with_the_soft_gradient():
    logits = torch.randn(64, K, requires_grad=True)
    weights = torch.randn(64, K)
    hard = gumbel_softmax(logits, 0.7, hard=True, generator=gen(3))
    soft = gumbel_softmax(logits, 0.7, hard=False, generator=gen(3))
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0} and torch.equal(hard.detach().sum(-1), torch.ones(64))
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    (g_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    (g_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert torch.allclose(g_hard, g_soft, atol=1e-6) and g_soft.abs().sum() > 0


def test_the_sample_follows_the_generator_and_dim():
    logits = torch.randn(3, K, 2, 2)
    a = gumbel_softmax(logits, 1.0, generator=gen(4), dim=1)
    assert torch.equal(a, gumbel_softmax(logits, 1.0, generator=gen(4), dim=1))
    assert not torch.equal(a, gumbel_softmax(logits, 1.0, generator=gen(5), dim=1))
    assert torch.allclose(a.sum(1), torch.ones(3, 2, 2), atol=1e-5)


def test_training_mode_samples_and_eval_mode_is_the_deterministic_argmax():
    gq = GumbelQuantizer(K, D)
    z_e = torch.randn(2, D, 5, 5)
    torch.manual_seed(0)
    first = gq(z_e)
    second = gq(z_e)
    torch.manual_seed(0)
    again = gq(z_e)
    assert not torch.equal(first.z_q, second.z_q) and torch.equal(first.z_q, again.z_q)  # noise: global RNG
    gq.eval()
    out, out2 = gq(z_e), gq(z_e)
    logits = F.conv2d(z_e, gq.proj.weight, gq.proj.bias)
    assert torch.equal(out.indices, logits.argmax(1)) and torch.equal(out.z_q, out2.z_q)
    assert torch.equal(out.z_q, gq.lookup(out.indices)) and torch.equal(gq.encode(z_e), out.indices)
    counts = torch.bincount(out.indices.flatten(), minlength=K)
    assert torch.equal(out.perplexity, perplexity_from_counts(counts))


def test_hard_training_value_is_the_sampled_code_and_gradients_reach_everything():
    gq = GumbelQuantizer(K, D, hard=True)
    z_e = torch.randn(2, D, 3, 3, requires_grad=True)
    out = gq(z_e)
    assert torch.equal(out.z_q, gq.lookup(out.indices))
    grads = torch.autograd.grad((out.z_q ** 2).sum() + out.loss, [z_e, gq.proj.weight, gq.codebook])
    assert all(g.abs().sum() > 0 for g in grads)


def test_soft_training_value_is_the_mixture_of_the_codes():
    gq = GumbelQuantizer(K, D, temperature=0.5)
    z_e = torch.randn(2, D, 3, 3)
    torch.manual_seed(7)
    out = gq(z_e)
    torch.manual_seed(7)
    y = gumbel_softmax(F.conv2d(z_e, gq.proj.weight, gq.proj.bias), 0.5, dim=1)  # the same draw
    assert torch.allclose(out.z_q, torch.einsum("bkhw,kd->bdhw", y, gq.codebook), atol=1e-6)
    assert torch.equal(out.indices, y.argmax(1))


def test_float32_under_autocast():
    gq = GumbelQuantizer(K, D).eval()
    z_e = torch.randn(4, D, 6, 6).bfloat16()
    expected = gq(z_e.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gq(z_e)
    assert torch.equal(out.indices, expected.indices) and torch.equal(out.terms["kl"], expected.terms["kl"])
    assert out.terms["kl"].dtype == torch.float32 and out.z_q.dtype == torch.bfloat16


def test_exact_gradient_matches_autograd_of_the_exact_expectation():
    logits, values = torch.randn(6, requires_grad=True), torch.randn(6)
    (auto,) = torch.autograd.grad((torch.softmax(logits, 0) * values).sum(), logits)
    assert torch.allclose(exact_expectation_gradient(logits.detach(), values), auto, atol=1e-6)


def test_the_gradient_bias_shrinks_as_the_temperature_falls():
    """Seeded: logits (1, 0, -1, 0.5), values (1, -2, 3, 0.5), 200,000 draws. Measured:
    tau      4      2      1      0.5    0.25   0.1
    bias     0.362  0.250  0.127  0.044  0.011  0.003   (||exact|| = 0.525)
    std err  0.0001 0.0003 0.0009 0.0017 0.0029 0.0049  (the variance grows as tau falls)."""
    temperatures = [4.0, 2.0, 1.0, 0.5, 0.25, 0.1]
    result = gumbel_gradient_bias(torch.tensor([1.0, 0.0, -1.0, 0.5]), torch.tensor([1.0, -2.0, 3.0, 0.5]),
                                  temperatures, samples=200_000, generator=gen(0))
    bias, std_error = result["bias"].tolist(), result["std_error"].tolist()
    print("bias", [round(b, 4) for b in bias], "std error", [round(s, 4) for s in std_error])
    assert bias == sorted(bias, reverse=True)
    assert bias[0] > 0.3 * float(result["exact"].norm())  # a hot relaxation is far off
    # the bias is real, not Monte Carlo noise, down to tau = 0.5; at 0.1 it is within the noise
    assert all(b > 5 * s for b, s in zip(bias[:4], std_error[:4]))
    assert bias[-1] < 3 * std_error[-1]
    assert std_error == sorted(std_error)
    assert torch.allclose(result["exact"], exact_expectation_gradient(torch.tensor([1.0, 0.0, -1.0, 0.5]),
                                                                      torch.tensor([1.0, -2.0, 3.0, 0.5])))


def test_config_is_json_and_rebuilds_the_quantizer():
    gq = GumbelQuantizer(K, D, temperature=0.5, hard=True, kl_weight=0.1, seed=3)
    config = json.loads(json.dumps(gq.config))
    again = GumbelQuantizer(**config)
    assert torch.equal(again.codebook, gq.codebook) and again.config == gq.config
    built = build_quantizer(K, D, 0.25, {"kind": "gumbel", "hard": True})
    assert isinstance(built, GumbelQuantizer) and built.hard and (built.num_codes, built.code_dim) == (K, D)


@pytest.mark.parametrize("args, match", [
    (dict(num_codes=0, code_dim=D), "positive"),
    (dict(num_codes=K, code_dim=0), "positive"),
    (dict(num_codes=K, code_dim=D, temperature=0.0), "temperature"),
    (dict(num_codes=K, code_dim=D, temperature=-1.0), "temperature"),
    (dict(num_codes=K, code_dim=D, temperature=float("nan")), "temperature"),
    (dict(num_codes=K, code_dim=D, kl_weight=-0.1), "kl_weight"),
    (dict(num_codes=K, code_dim=D, kl_weight=float("inf")), "kl_weight"),
])
def test_bad_constructor_arguments_raise(args, match):
    with pytest.raises(ValueError, match=match):
        GumbelQuantizer(**args)


def test_bad_inputs_raise():
    gq = GumbelQuantizer(K, D)
    for bad, match in [(torch.randn(2, D + 1, 3, 3), "z_e must be"), (torch.randn(D, 3, 3), "z_e must be"),
                       (torch.full((1, D, 2, 2), float("nan")), "NaN")]:
        with pytest.raises(ValueError, match=match):
            gq(bad)
        with pytest.raises(ValueError, match=match):
            gq.encode(bad)
    with pytest.raises(ValueError, match="int64"):
        gq.lookup(torch.zeros(1, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        gq.lookup(torch.full((1, 2, 2), K))
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax(torch.zeros(3, K), 0.0)
    with pytest.raises(ValueError, match="temperatures"):
        gumbel_gradient_bias(torch.zeros(4), torch.zeros(4), [1.0, 0.0], 10, gen())
    with pytest.raises(ValueError, match=r"\(K,\)"):
        gumbel_gradient_bias(torch.zeros(4), torch.zeros(3), [1.0], 10, gen())
    with pytest.raises(ValueError, match="2 samples"):
        gumbel_gradient_bias(torch.zeros(4), torch.zeros(4), [1.0], 1, gen())


# ---- inside the VQ-VAE, on the ci data ----

TRAIN_IMAGES, STEPS, CODES = 2000, 250, 64
# Measured with these settings (seed 0, one thread): test NMSE untrained 5.234, trained 0.286, 51 of 64 codes
# in use (perplexity 25.2); the training took 8.1 s (10.9 s under load) on a shared 2-core machine.
MAX_TRAINED_NMSE, MIN_CODES_USED = 0.36, 32


@pytest.fixture(scope="module")
def trained(one_thread):
    """The ci VQ-VAE (code_dim 16) with a Gumbel quantizer of 64 codes and its default settings, trained."""
    return short_ci_run(dict(num_codes=CODES, quantizer=dict(kind="gumbel")), STEPS, TRAIN_IMAGES)


def test_gumbel_vqvae_learns_on_the_ci_data(trained):
    model, _, untrained, result, seconds, history = trained
    print(f"Gumbel VQ-VAE: untrained NMSE {untrained['nmse']:.3f}, trained {result['nmse']:.3f} in {seconds:.1f} s, "
          f"perplexity {result['perplexity']:.1f}, {result['codes_used']} of {CODES} codes, "
          f"final train kl {history.train['kl'][-1]:.3f}")
    assert result["nmse"] < MAX_TRAINED_NMSE and result["nmse"] < untrained["nmse"]
    assert result["codes_used"] >= MIN_CODES_USED  # the default KL weight keeps the codebook in use
    assert "kl" in history.train and result["num_codes"] == CODES


def test_save_and_load_give_the_same_outputs(trained, tmp_path):
    model, test_set, *_ = trained
    x = torch.stack([test_set[i][0] for i in range(8)])
    loaded, a, b = saved_and_loaded(model, x, tmp_path)
    assert isinstance(loaded.quantizer, GumbelQuantizer)
    assert torch.equal(a.vq.terms["kl"], b.vq.terms["kl"])
