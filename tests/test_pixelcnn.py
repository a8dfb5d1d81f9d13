import math

import pytest
import torch
from conftest import input_dependence

from vqvae_lib.priors.pixelcnn import GatedPixelCNN, MaskedConv2d, PlainPixelCNN

H = W = 7


def dependency_map(model, i, j, labels=None):
    """|d logits[:, :, i, j] / d input embedding| per position, via autograd: (H, W) bool."""
    return input_dependence(model, model.embed, torch.randint(model.embed.num_embeddings, (1, H, W)), i, j, labels)


def raster_before(i, j):
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (rows < i) | ((rows == i) & (cols < j))


@pytest.mark.parametrize("i,j", [(0, 0), (0, 3), (3, 3), (4, 2), (6, 6), (2, 0), (5, 1)])
def test_gated_pixelcnn_is_causal(i, j):
    dep = dependency_map(GatedPixelCNN(16, hidden_channels=8, num_layers=8), i, j)
    assert not (dep & ~raster_before(i, j)).any(), "logits depend on the current or a later position"


def test_gated_pixelcnn_has_no_blind_spot():
    i, j = 3, 3
    dep = dependency_map(GatedPixelCNN(16, hidden_channels=8, num_layers=8), i, j)
    assert dep[i - 1, j + 2] and dep[i - 2, j + 3]
    # with enough layers every earlier position is seen
    assert torch.equal(dep, raster_before(i, j))


def test_plain_masked_stack_is_causal_but_has_the_blind_spot():
    i, j = 3, 3
    dep = dependency_map(PlainPixelCNN(16, hidden_channels=8, num_layers=8), i, j)
    assert not (dep & ~raster_before(i, j)).any()
    assert not dep[i - 1, j + 2] and not dep[i - 2, j + 3]
    assert dep[i - 1, j + 1] and dep[i, j - 1]


def test_class_conditioning_keeps_causality_and_changes_logits():
    model = GatedPixelCNN(16, hidden_channels=8, num_layers=4, num_classes=3)
    dep = dependency_map(model, 2, 2, labels=torch.tensor([1]))
    assert not (dep & ~raster_before(2, 2)).any()
    idx = torch.randint(16, (2, H, W))
    with torch.no_grad():
        model.layers[0].class_embed.weight.normal_()
        assert not torch.allclose(model(idx, torch.tensor([0, 0])), model(idx, torch.tensor([1, 1])))


def test_mask_types():
    a, b = MaskedConv2d("A", 1, 1, 3).mask, MaskedConv2d("B", 1, 1, 3).mask
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_shapes_bits_and_sampling():
    model = GatedPixelCNN(10, hidden_channels=8, num_layers=3, num_classes=2)
    idx = torch.randint(10, (4, 5, 6))
    assert model(idx).shape == (4, 10, 5, 6)
    # an untrained prior is close to uniform: about log2(10) bits per code
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.zero_()
    with torch.no_grad():
        assert float(model.bits_per_code(idx)) == pytest.approx(math.log2(10), rel=1e-5)
    g = torch.Generator().manual_seed(0)
    s1 = model.sample(3, (5, 6), labels=torch.tensor(1), generator=g)
    s2 = model.sample(3, (5, 6), labels=torch.tensor(1), generator=torch.Generator().manual_seed(0))
    assert s1.shape == (3, 5, 6) and s1.dtype == torch.long and torch.equal(s1, s2)
    assert s1.min() >= 0 and s1.max() < 10


def test_low_temperature_sampling_is_greedy():
    model = GatedPixelCNN(10, hidden_channels=8, num_layers=2)
    a = model.sample(2, (3, 3), temperature=1e-4, generator=torch.Generator().manual_seed(0))
    b = model.sample(2, (3, 3), temperature=1e-4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 3, 3), 10), r"\[0, 10\)"),
    (torch.full((1, 3, 3), -1), r"\[0, 10\)"),
    (torch.zeros(3, 3, dtype=torch.long), "grid"),
    (torch.zeros(1, 3, 3), "int64"),
])
def test_bad_indices_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        GatedPixelCNN(10, hidden_channels=8, num_layers=2)(bad)


def test_bad_labels_are_refused():
    idx = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="num_classes"):
        GatedPixelCNN(10, hidden_channels=8, num_layers=2)(idx, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        GatedPixelCNN(10, hidden_channels=8, num_layers=2, num_classes=2)(idx, torch.tensor([0, 2]))


# ---------------------------------------------------------------- cached sampling
def random_prior(kernel_size=3, num_classes=None, num_codes=12, seed=0, scale=0.6):
    """A small prior with every weight redrawn at a larger scale, so that its logits are far from
    uniform and depend strongly on the codes seen (a wrong cache changes the draws)."""
    torch.manual_seed(seed)
    model = GatedPixelCNN(num_codes, hidden_channels=8, num_layers=3, num_classes=num_classes,
                          kernel_size=kernel_size)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


CACHE_CASES = [(3, None, (5, 9)), (3, 3, (5, 9)), (5, None, (5, 9)), (5, 3, (6, 4)), (3, 3, (1, 1)),
               (5, None, (1, 1)), (3, None, (1, 7)), (5, 3, (7, 1))]


@pytest.mark.parametrize("kernel_size, num_classes, shape", CACHE_CASES)
def test_cached_and_naive_sampling_draw_the_same_codes(kernel_size, num_classes, shape):
    model = random_prior(kernel_size, num_classes).double()
    labels = torch.tensor([0, 2, 1, 2]) if num_classes else None
    for seed in range(3):
        draws = [model.sample(4, shape, labels=labels, generator=torch.Generator().manual_seed(seed), cache=cache)
                 for cache in (True, False)]
        assert draws[0].shape == (4, *shape) and torch.equal(draws[0], draws[1])
    if num_classes:  # the labels reach the cached path: other labels, other codes
        other = model.sample(4, shape, labels=torch.tensor([1, 0, 2, 0]), generator=torch.Generator().manual_seed(0))
        assert shape == (1, 1) or not torch.equal(other, draws[0])


@pytest.mark.parametrize("kernel_size, num_classes, shape", CACHE_CASES)
def test_cached_logits_equal_the_full_forward(kernel_size, num_classes, shape):
    """Teacher forcing through the cached step functions gives forward's logits at every position."""
    model = random_prior(kernel_size, num_classes, scale=0.3)  # logits of order 1: float32 rounds to ~1e-6
    indices = torch.randint(model.num_codes, (3, *shape), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([2, 0, 1]) if num_classes else None
    with torch.no_grad():
        full = model(indices, labels)
    cached = model._cached_logits(indices, labels)
    assert cached.shape == full.shape and cached.dtype == torch.float32
    assert (cached - full).abs().max() < 1e-5


def test_sampling_defaults_to_the_cache_and_restores_training_mode():
    # float64: the cached and the naive path compute the logits in different orders (~3e-7 apart in float32),
    # and a draw whose two likeliest codes tie that closely could flip between them on another CPU
    model = random_prior(3, 2).double().train()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    cached = model.sample(2, (3, 4), labels=1, generator=g())
    assert model.training
    assert torch.equal(cached, model.sample(2, (3, 4), labels=torch.tensor([1, 1]), generator=g(), cache=True))
    assert torch.equal(cached, model.sample(2, (3, 4), labels=1, generator=g(), cache=False))


def test_naive_path_stopped_after_some_rows_draws_those_rows_alike():
    """The benchmark times the naive path's first rows; they are the first rows of a full draw."""
    model = random_prior(3)
    full = model._sample_naive(2, (4, 5), None, 1.0, torch.Generator().manual_seed(3))
    part = model._sample_naive(2, (4, 5), None, 1.0, torch.Generator().manual_seed(3), rows=2)
    assert torch.equal(part[:, :2], full[:, :2]) and not part[:, 2:].any()


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be"),
    (dict(n=-2), "n must be"),
    (dict(n=1.5), "n must be"),
    (dict(shape=(0, 3)), "shape"),
    (dict(shape=(3, -1)), "shape"),
    (dict(shape=(3,)), "shape"),
    (dict(shape=(2, 2, 2)), "shape"),
    (dict(shape=()), "shape"),
    (dict(shape=(2.0, 3)), "shape"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(labels=torch.tensor([0, 1])), "num_classes"),
])
def test_bad_sampling_arguments_are_refused(cache, kwargs, message):
    args = dict(n=2, shape=(3, 3)) | kwargs
    with pytest.raises(ValueError, match=message):
        GatedPixelCNN(10, hidden_channels=8, num_layers=2).sample(**args, cache=cache)


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("labels", [torch.tensor([0, 3]), torch.tensor(-1), torch.tensor([0, 1, 2]),
                                    torch.zeros(2, 1, dtype=torch.long)])
def test_bad_sampling_labels_are_refused(cache, labels):
    with pytest.raises(ValueError, match="labels"):
        GatedPixelCNN(10, hidden_channels=8, num_layers=2, num_classes=3).sample(2, (3, 3), labels=labels,
                                                                                 cache=cache)
