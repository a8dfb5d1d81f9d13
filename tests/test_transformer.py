"""The GPT-style transformer prior: causal by autograd, KV cache == naive path, a proper distribution, learns."""
import itertools
import math

import pytest
import torch
from conftest import input_dependence
from torch.utils.data import TensorDataset

from vqvae_lib.priors.transformer import GridPositions, TransformerPrior
from vqvae_lib.seeding import seeded
from vqvae_lib.training.train import evaluate, train

H = W = 5


def small(**kw):
    args = dict(num_codes=10, max_height=H, max_width=W, embed_dim=16, num_layers=2, num_heads=2)
    with seeded(0):
        return TransformerPrior(**{**args, **kw})


def dependency_map(model, i, j, labels=None):
    """Which codes the logits at (i, j) depend on, by autograd: (H, W) bool.

    Slot s of the input embeds code s - 1, so the gradient at code_embed's output slot s is code s's;
    the last code is never embedded and so never a dependency.
    """
    slots = input_dependence(model, model.code_embed, torch.randint(model.num_codes, (1, H, W)), i, j, labels)
    dep = torch.zeros(H * W, dtype=torch.bool)
    dep[:-1] = slots
    return dep.view(H, W)


def raster_before(i, j):
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (rows < i) | ((rows == i) & (cols < j))


@pytest.mark.parametrize("i,j", [(0, 0), (0, 3), (2, 2), (4, 1), (4, 4)])
def test_transformer_is_causal_and_sees_the_whole_past(i, j):
    dep = dependency_map(small(), i, j)
    assert torch.equal(dep, raster_before(i, j))


def test_conditioning_keeps_causality_and_changes_logits():
    model = small(num_classes=3)
    assert torch.equal(dependency_map(model, 2, 3, labels=torch.tensor([1])), raster_before(2, 3))
    idx = torch.randint(10, (2, H, W))
    with torch.no_grad():
        assert not torch.allclose(model(idx, torch.tensor([0, 0])), model(idx, torch.tensor([1, 1])))


def test_the_causality_check_catches_a_transformer_without_its_mask():
    model = small()
    for block in model.blocks:
        block.attn.causal = False
    dep = dependency_map(model, 2, 2)
    assert (dep & ~raster_before(2, 2)).any()


def test_positions_follow_the_raster_layout_by_row_and_column():
    positions = GridPositions(max_height=4, max_width=6, embed_dim=3)
    table = positions(3, 5)  # a grid smaller than built for: the first rows and columns
    assert table.shape == (15, 3)
    for t in range(15):
        row, col = divmod(t, 5)
        assert torch.equal(table[t], positions.rows.weight[row] + positions.cols.weight[col])


def test_exp_minus_nll_sums_to_one_over_every_grid():
    """An exact likelihood: over all 2^4 grids of 2 x 2 binary codes, the probabilities sum to 1."""
    with seeded(0):
        model = TransformerPrior(2, 2, 2, embed_dim=8, num_layers=2, num_heads=2).double()
    grids = torch.tensor(list(itertools.product(range(2), repeat=4))).view(16, 2, 2)
    with torch.no_grad():
        nll_per_grid = torch.nn.functional.cross_entropy(model(grids), grids, reduction="none").sum((1, 2))
    assert float(torch.exp(-nll_per_grid).sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("conditional", [False, True])
def test_cached_and_naive_sampling_draw_the_same_grids_in_float64(seed, conditional):
    model = small(num_classes=3 if conditional else None).double()
    labels = torch.tensor([0, 2, 1, 2]) if conditional else None
    for shape in [(H, W), (3, 4)]:  # the full grid, and a smaller one (positions by row and column)
        cached = model.sample(4, shape, labels=labels, generator=torch.Generator().manual_seed(seed))
        naive = model.sample(4, shape, labels=labels, generator=torch.Generator().manual_seed(seed), cache=False)
        assert cached.shape == (4, *shape) and torch.equal(cached, naive)


def test_cached_logits_equal_the_full_forward_in_float32():
    model = small(num_classes=3)
    steps = []
    handle = model.head.register_forward_hook(lambda module, inputs, output: steps.append(output[:, 0]))
    try:
        grid = model.sample(3, (H, W), labels=torch.tensor([1, 0, 2]), generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    cached = torch.stack(steps, dim=2).view(3, 10, H, W)  # one (3, K) per step, in raster order
    with torch.no_grad():
        full = model(grid, torch.tensor([1, 0, 2]))
    assert torch.allclose(cached, full, atol=1e-5, rtol=0)


def test_shapes_sampling_is_seeded_and_restores_training_mode():
    model = small(num_classes=2, dropout=0.1).train()
    idx = torch.randint(10, (4, 3, 5))
    assert model(idx).shape == (4, 10, 3, 5)
    a = model.sample(3, (4, 4), labels=1, generator=torch.Generator().manual_seed(5))
    b = model.sample(3, (4, 4), labels=torch.tensor([1, 1, 1]), generator=torch.Generator().manual_seed(5))
    assert a.dtype == torch.long and torch.equal(a, b) and 0 <= int(a.min()) and int(a.max()) < 10
    assert model.training


def test_low_temperature_sampling_is_greedy():
    model = small()
    a = model.sample(2, (3, 3), temperature=1e-4, generator=torch.Generator().manual_seed(0))
    b = model.sample(2, (3, 3), temperature=1e-4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 3, 3), 10), r"\[0, 10\)"),
    (torch.full((1, 3, 3), -1), r"\[0, 10\)"),
    (torch.zeros(3, 3, dtype=torch.long), "grid"),
    (torch.zeros(1, 3, 3), "int64"),
    (torch.zeros(1, H + 1, 3, dtype=torch.long), "larger than the 5 x 5 grid"),
    (torch.zeros(1, 3, W + 1, dtype=torch.long), "larger than the 5 x 5 grid"),
])
def test_bad_indices_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        small()(bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0, shape=(3, 3)), "n must be a positive"),
    (dict(n=2.5, shape=(3, 3)), "n must be a positive"),
    (dict(n=2, shape=()), "shape must be"),
    (dict(n=2, shape=(0, 3)), "shape must be"),
    (dict(n=2, shape=(3,)), "shape must be"),
    (dict(n=2, shape=(6, 3)), "larger than"),
    (dict(n=2, shape=(3, 3), temperature=0.0), "temperature must be positive"),
    (dict(n=2, shape=(3, 3), temperature=-1.0), "temperature must be positive"),
    (dict(n=2, shape=(3, 3), labels=torch.tensor([0, 1])), "without num_classes"),
])
def test_bad_sample_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small().sample(**kwargs)


def test_bad_labels_are_refused():
    model = small(num_classes=2)
    with pytest.raises(ValueError, match=r"labels must be \(2,\) in \[0, 2\)"):
        model(torch.zeros(2, 3, 3, dtype=torch.long), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one per sample"):
        model.sample(2, (3, 3), labels=torch.tensor([0, 1, 1]))


def test_save_load_round_trip_keeps_every_argument(tmp_path):
    model = small(num_codes=7, max_height=4, max_width=6, embed_dim=12, num_layers=3, num_heads=3,
                  num_classes=4, dropout=0.25)
    model.save_pretrained(tmp_path / "t")
    loaded = TransformerPrior.from_pretrained(tmp_path / "t")
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- learning
NUM_CODES, SIDE = 8, 5
NEXT_WEIGHT, JUMP_WEIGHT, NOISE = 0.6, 0.3, 0.02  # code k goes on to k + 1, or 3k + 2, or (rarely) anything


def transition_matrix() -> torch.Tensor:
    """(K, K): the chain along raster order, with two likely successors per code."""
    P = torch.full((NUM_CODES, NUM_CODES), NOISE, dtype=torch.float64)
    for k in range(NUM_CODES):
        P[k, (k + 1) % NUM_CODES] += NEXT_WEIGHT
        P[k, (3 * k + 2) % NUM_CODES] += JUMP_WEIGHT
    return P / P.sum(1, keepdim=True)


def markov_grids(n: int, seed: int) -> torch.Tensor:
    """n grids (n, SIDE, SIDE): a uniform first code, then the chain, in raster order."""
    g = torch.Generator().manual_seed(seed)
    P = transition_matrix()
    z = torch.zeros(n, SIDE * SIDE, dtype=torch.long)
    z[:, 0] = torch.randint(NUM_CODES, (n,), generator=g)
    for t in range(1, SIDE * SIDE):
        z[:, t] = torch.multinomial(P[z[:, t - 1]], 1, generator=g).squeeze(1)
    return z.view(n, SIDE, SIDE)


def markov_task():
    """(train grids, test grids, the unigram prior's test bits per code, the process's own test bits per code)."""
    train_grids, test_grids = markov_grids(512, seed=0), markov_grids(256, seed=1)
    counts = torch.bincount(train_grids.flatten(), minlength=NUM_CODES).double() + 1  # add-one smoothing
    unigram = float(-torch.log2(counts / counts.sum())[test_grids.flatten()].mean())
    codes = test_grids.flatten(1)
    # the process's own bits per code on the test grids: log2 K for the first code, then the chain
    steps = torch.log2(transition_matrix()[codes[:, :-1], codes[:, 1:]]).sum(1)
    true_bits = float((math.log2(NUM_CODES) - steps).mean() / codes.shape[1])
    return train_grids, test_grids, unigram, true_bits


def test_the_transformer_learns_structure_the_unigram_prior_misses():
    train_grids, test_grids, unigram, true_bits = markov_task()
    with seeded(0):
        model = TransformerPrior(NUM_CODES, SIDE, SIDE, embed_dim=32, num_layers=2, num_heads=2)
    no_labels = torch.zeros(len(train_grids), dtype=torch.long)  # the dataset's (codes, labels) shape
    train(model, TensorDataset(train_grids, no_labels), steps=100, batch_size=32, lr=3e-3, seed=0, progress=False)
    bits = evaluate(model, TensorDataset(test_grids, no_labels[:len(test_grids)]))["bits_per_code"]
    assert bits < unigram - 1.0  # the chain is worth more than a bit per code
    assert bits > true_bits - 0.05  # and no model beats the process itself (it would be seeing the answer)
