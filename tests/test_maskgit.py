"""The MaskGIT-style prior: the cosine schedule, training masks, parallel decoding, an exact ordered likelihood."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import input_dependence
from test_transformer import NUM_CODES, SIDE, markov_task
from torch.utils.data import TensorDataset

from vqvae_lib.priors.maskgit import MaskedPrior, mask_schedule, random_mask, uniform_count_mask
from vqvae_lib.seeding import seeded
from vqvae_lib.training.train import evaluate, train

K, H, W = 10, 4, 5


def small(**kw):
    args = dict(num_codes=K, max_height=H, max_width=W, embed_dim=16, num_layers=2, num_heads=2)
    with seeded(0):
        return MaskedPrior(**{**args, **kw})


# ---------------------------------------------------------------- schedules and masks
@pytest.mark.parametrize("steps, total", [(1, 20), (8, 20), (8, 49), (12, 7), (3, 1)])
def test_the_schedule_starts_full_falls_monotonically_and_ends_at_zero(steps, total):
    counts = [mask_schedule(s, steps, total) for s in range(steps + 1)]
    assert counts[0] == total and counts[-1] == 0
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[1:-1] == [math.floor(total * math.cos(math.pi / 2 * s / steps)) for s in range(1, steps)]


@pytest.mark.parametrize("step, steps", [(-1, 8), (9, 8), (0, 0)])
def test_the_schedule_refuses_steps_out_of_range(step, steps):
    with pytest.raises(ValueError, match="0 <= step <= steps"):
        mask_schedule(step, steps, 10)


def test_training_masks_follow_the_cosine_ratio_with_at_least_one_masked():
    masks = random_mask(4000, 7, 7, torch.Generator().manual_seed(0))
    per_grid = masks.flatten(1).sum(1)
    assert masks.shape == (4000, 7, 7) and masks.dtype == torch.bool and int(per_grid.min()) >= 1
    # E[max(1, floor(49 cos(pi/2 r)))] for r ~ U(0, 1), by quadrature
    r = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    expected = float((49 * torch.cos(math.pi / 2 * r)).floor().clamp(min=1).mean())
    assert float(per_grid.double().mean()) == pytest.approx(expected, rel=0.02)
    # every position is masked about equally often
    assert float(masks.double().mean(0).std()) < 0.03
    assert torch.equal(masks, random_mask(4000, 7, 7, torch.Generator().manual_seed(0)))


def test_the_masked_loss_is_the_cross_entropy_at_the_masked_positions_only():
    model = small(num_classes=2)
    idx = torch.randint(K, (3, H, W))
    labels = torch.tensor([0, 1, 1])
    mask = random_mask(3, H, W, torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx.masked_fill(mask, K), labels)
        want = F.cross_entropy(logits.permute(0, 2, 3, 1)[mask], idx[mask])
        assert float(model.masked_nll(idx, mask, labels)) == pytest.approx(float(want), rel=1e-6)
        # one masked position: the loss is that position's cross-entropy, the other codes are only context
        one = torch.zeros_like(mask)
        one[:, 1, 2] = True
        logits = model(idx.masked_fill(one, K), labels)
        want = F.cross_entropy(logits[:, :, 1, 2], idx[:, 1, 2])
        assert float(model.masked_nll(idx, one, labels)) == pytest.approx(float(want), rel=1e-6)


def test_training_step_is_seeded_in_training_and_leaves_the_global_rng_alone_in_eval():
    model = small()
    batch = (torch.randint(K, (8, H, W)), torch.zeros(8, dtype=torch.long))
    with seeded(3):
        a = model.training_step(batch)
    with seeded(3):
        b = model.training_step(batch)
    assert set(a) == {"loss", "masked_nll"} and torch.equal(a["loss"], b["loss"])
    model.eval()
    state = torch.get_rng_state()
    first = float(model.training_step(batch)["masked_nll"].detach())
    assert torch.equal(torch.get_rng_state(), state)
    assert float(model.training_step(batch)["masked_nll"].detach()) == first
    assert evaluate(model, TensorDataset(*batch))["masked_nll"] == pytest.approx(first, rel=1e-6)


# ---------------------------------------------------------------- the exact ordered likelihood
@pytest.mark.parametrize("order", [None, torch.tensor([3, 0, 2, 1])])
def test_ordered_likelihood_sums_to_one_over_every_grid(order):
    with seeded(0):
        model = MaskedPrior(2, 2, 2, embed_dim=8, num_layers=2, num_heads=2).double()
    grids = torch.tensor(list(itertools.product(range(2), repeat=4))).view(16, 2, 2)
    assert float(torch.exp(-model.ordered_nll(grids, order=order)).sum()) == pytest.approx(1.0, abs=1e-12)
    bits = model.ordered_bits_per_code(grids, order=order)
    assert float(bits) == pytest.approx(float(model.ordered_nll(grids, order=order).mean()) / (4 * math.log(2)))


def test_passes_in_batches_keep_each_grid_with_its_label():
    with seeded(0):
        model = MaskedPrior(2, 2, 2, embed_dim=8, num_layers=2, num_heads=2, num_classes=5).double()
    grids = torch.tensor(list(itertools.product(range(2), repeat=4))).view(16, 2, 2)
    labels = torch.arange(5).repeat_interleave(16)  # 80 grids: more than one PASS_BATCH
    nll = model.ordered_nll(grids.repeat(5, 1, 1), labels).view(5, 16)
    assert torch.allclose(torch.exp(-nll).sum(1), torch.ones(5, dtype=torch.float64), atol=1e-12)
    for c in range(5):
        assert torch.allclose(nll[c], model.ordered_nll(grids, torch.full((16,), c)), rtol=1e-12)
    assert not torch.allclose(nll[0], nll[4])  # the label matters, so a misaligned one would show


# ---------------------------------------------------------------- the order-agnostic (random-order) bound
def tiny_double_prior(num_classes=None):
    with seeded(0):
        model = MaskedPrior(3, 2, 2, embed_dim=8, num_layers=2, num_heads=2, num_classes=num_classes).double()
    with torch.no_grad():  # an untrained head is nearly uniform; sharpen it so the orders disagree
        model.head.weight.mul_(30)
    return model


def test_the_weighted_masked_terms_average_to_the_mean_over_every_decoding_order():
    # 2 x 2 grids: all 4! = 24 orders and all 15 non-empty masks can be enumerated. The estimator's exact
    # expectation (m ~ U{1..4}, then a uniform m-subset) must equal the average of the 24 exact ordered
    # likelihoods; in float64 both are sums of the same log-probabilities, so 1e-10 is rounding only.
    model = tiny_double_prior()
    grids = torch.randint(3, (5, 2, 2), generator=torch.Generator().manual_seed(1))
    orders = [torch.tensor(o) for o in itertools.permutations(range(4))]
    over_orders = torch.stack([model.ordered_nll(grids, order=o) for o in orders]).mean(0)  # (5,)
    expected = torch.zeros(5, dtype=torch.float64)
    for m in range(1, 5):
        subsets = list(itertools.combinations(range(4), m))
        for subset in subsets:
            mask = torch.zeros(5, 4, dtype=torch.bool)
            mask[:, list(subset)] = True
            expected += model.masked_nats(grids, mask.view(5, 2, 2)) * 4 / m / 4 / len(subsets)
    assert torch.allclose(expected, over_orders, rtol=0, atol=1e-10)
    # and it is no one order's likelihood: the orders differ, so the average is a real mixture
    assert float(torch.stack([model.ordered_nll(grids, order=o) for o in orders]).std(0).min()) > 1e-3


def test_the_random_order_estimate_is_unbiased_within_its_standard_error():
    model = tiny_double_prior(num_classes=2)
    grids = torch.randint(3, (32, 2, 2), generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1] * 16)
    orders = [torch.tensor(o) for o in itertools.permutations(range(4))]
    exact = float(torch.stack([model.ordered_nll(grids, labels, o) for o in orders]).mean()) / (4 * math.log(2))
    # 40 independent estimates of 5 draws per grid: their spread is the order-sampling noise alone
    estimates = torch.tensor([model.random_order_bits_per_code(
        grids, labels, samples=5, generator=torch.Generator().manual_seed(seed))["bits_per_code"]
        for seed in range(40)], dtype=torch.float64)
    noise = float(estimates.std()) / math.sqrt(len(estimates))
    assert 0 < noise < 0.01 * exact
    # 4 standard errors: a false failure about once in 16,000 seeds; a bias of that size fails
    assert abs(float(estimates.mean()) - exact) < 4 * noise
    # the reported standard error is over the grids (each grid's draws averaged first)
    one = model.random_order_bits_per_code(grids, labels, samples=3)
    assert one["std_error"] > noise and math.isfinite(one["std_error"])
    # repeatable by default, and the draws come from the generator, not the global RNG
    state = torch.get_rng_state()
    assert model.random_order_bits_per_code(grids, labels) == model.random_order_bits_per_code(grids, labels)
    assert torch.equal(torch.get_rng_state(), state)


def test_uniform_count_masks_hide_each_count_equally_often():
    mask, m = uniform_count_mask(20_000, 2, 3, torch.Generator().manual_seed(0))
    assert torch.equal(mask.flatten(1).sum(1), m) and int(m.min()) == 1 and int(m.max()) == 6
    counts = torch.bincount(m, minlength=7)[1:].double() / 20_000
    assert torch.allclose(counts, torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.015)  # 5 sigma


def test_the_random_order_bound_refuses_bad_samples_and_mask_tokens():
    model = small()
    with pytest.raises(ValueError, match="samples"):
        model.random_order_bits_per_code(torch.randint(K, (2, 2, 2)), samples=0)
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        model.random_order_bits_per_code(torch.full((1, 2, 2), K))


def test_ordered_likelihood_refuses_a_bad_order_and_mask_tokens():
    model = small()
    idx = torch.randint(K, (2, 2, 2))
    with pytest.raises(ValueError, match="permutation"):
        model.ordered_nll(idx, order=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        model.ordered_nll(torch.full((1, 2, 2), K))


# ---------------------------------------------------------------- parallel decoding
@pytest.mark.parametrize("steps", [1, 3, 8, 30])
@pytest.mark.parametrize("choice_temperature", [0.0, 4.5])
def test_decoding_fills_every_position_once_and_never_changes_a_committed_code(steps, choice_temperature):
    model = small(num_classes=3)
    rounds = []
    out = model.sample(3, (H, W), labels=torch.tensor([0, 2, 1]), generator=torch.Generator().manual_seed(0),
                       steps=steps, choice_temperature=choice_temperature,
                       on_round=lambda s, grid: rounds.append((s, grid)))
    assert [s for s, _ in rounds] == list(range(steps))
    before = torch.full((3, H, W), K)
    for s, grid in rounds:
        was_set = before != K
        assert torch.equal(grid[was_set], before[was_set])  # committed codes stay
        assert ((grid == K).flatten(1).sum(1) == mask_schedule(s + 1, steps, H * W)).all()
        assert int(grid.max()) <= K
        before = grid
    assert torch.equal(out, rounds[-1][1]) and int(out.max()) < K and int(out.min()) >= 0


def test_sampling_is_seeded_works_on_smaller_grids_and_restores_training_mode():
    model = small(num_classes=2, dropout=0.1).train()
    a = model.sample(4, (3, 3), labels=1, generator=torch.Generator().manual_seed(7), steps=4)
    b = model.sample(4, (3, 3), labels=torch.tensor([1] * 4), generator=torch.Generator().manual_seed(7), steps=4)
    c = model.sample(4, (3, 3), labels=1, generator=torch.Generator().manual_seed(8), steps=4)
    assert a.shape == (4, 3, 3) and a.dtype == torch.long and torch.equal(a, b) and not torch.equal(a, c)
    assert model.training


def test_forward_is_bidirectional_and_conditioning_changes_logits():
    model = small(num_classes=3)
    idx = torch.randint(K, (1, H, W))
    sees = input_dependence(model, model.code_embed, idx, 0, 0, torch.tensor([1]))
    assert bool(sees.all())  # (0, 0) sees every position, later ones too
    with torch.no_grad():
        out = model(idx.expand(2, H, W), torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])


# ---------------------------------------------------------------- bad inputs, save and load
@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 3, 3), K + 1), r"\[0, 11\)"),
    (torch.full((1, 3, 3), -1), r"\[0, 11\)"),
    (torch.zeros(3, 3, dtype=torch.long), "grid"),
    (torch.zeros(1, 3, 3), "int64"),
    (torch.zeros(1, H + 1, 3, dtype=torch.long), "larger than the 4 x 5 grid"),
])
def test_bad_indices_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        small()(bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0, shape=(3, 3)), "n must be a positive"),
    (dict(n=2, shape=()), "shape must be"),
    (dict(n=2, shape=(3, -1)), "shape must be"),
    (dict(n=2, shape=(3, 6)), "larger than"),
    (dict(n=2, shape=(3, 3), temperature=0), "temperature must be positive"),
    (dict(n=2, shape=(3, 3), labels=1), "without num_classes"),
    (dict(n=2, shape=(3, 3), steps=0), "steps must be a positive"),
    (dict(n=2, shape=(3, 3), choice_temperature=-1.0), "choice_temperature"),
])
def test_bad_sample_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small().sample(**kwargs)


def test_save_load_round_trip_keeps_every_argument(tmp_path):
    model = small(num_codes=7, max_height=3, max_width=6, embed_dim=12, num_layers=3, num_heads=3,
                  num_classes=4, dropout=0.25)
    loaded = MaskedPrior.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- learning
def test_the_masked_prior_learns_and_its_ordered_likelihood_is_honest():
    """On test_transformer's Markov chain: the raster-order likelihood beats the unigram prior, and not
    the process itself (an exact likelihood cannot, beyond the test set's sampling noise)."""
    train_grids, test_grids, unigram, true_bits = markov_task()
    with seeded(0):
        model = MaskedPrior(NUM_CODES, SIDE, SIDE, embed_dim=32, num_layers=2, num_heads=2)
    no_labels = torch.zeros(len(train_grids), dtype=torch.long)
    train(model, TensorDataset(train_grids, no_labels), steps=300, batch_size=32, lr=3e-3, seed=0, progress=False)
    bits = float(model.ordered_bits_per_code(test_grids))
    assert true_bits - 0.05 < bits < unigram - 0.5
