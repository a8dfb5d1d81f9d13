"""The Fréchet distance (closed forms, the properties of a distance) and the digit classifier behind it."""
import math

import pytest
import torch

from vqvae_lib.data import load_images
from vqvae_lib.evaluation.sample_quality import (
    DigitClassifier,
    accuracy,
    extract_features,
    feature_statistics,
    frechet_distance,
    frechet_from_statistics,
    frechet_to_data,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # the classifier's budget was measured on one thread
# The ci classifier reached 96.0-96.8 % test accuracy over seeds 0-4 (one thread); a point of margin.
MIN_TEST_ACCURACY = 0.95


def gaussian_samples(n, mean, cov, seed):
    """n draws from N(mean, cov) from an explicit generator: (n, F) float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def random_spd(dim, seed):
    """A random symmetric positive-definite (dim, dim) matrix, float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_one_dimension_is_mean_and_std_gap():
    """In 1-D, W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2."""
    got = frechet_from_statistics(torch.tensor([1.0]), torch.tensor([[4.0]]),
                                  torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert got == pytest.approx(3.0 ** 2 + (2.0 - 3.0) ** 2, rel=1e-12)


def test_diagonal_covariances_closed_form():
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    want = float((mu_a - mu_b).pow(2).sum() + (var_a.sqrt() - var_b.sqrt()).pow(2).sum())
    assert frechet_from_statistics(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b)) == pytest.approx(want, rel=1e-12)


def test_full_covariances_match_scipy_sqrtm():
    """Non-commuting covariances: against the textbook Tr(S_a + S_b - 2 sqrtm(S_a S_b)) (pytorch-fid's formula)."""
    linalg = pytest.importorskip("scipy.linalg")
    sigma_a, sigma_b = random_spd(6, 0), random_spd(6, 1)
    mu_a, mu_b = torch.zeros(6, dtype=torch.float64), torch.linspace(-1, 1, 6, dtype=torch.float64)
    covmean = linalg.sqrtm((sigma_a @ sigma_b).numpy()).real
    want = float((mu_a - mu_b).pow(2).sum() + sigma_a.trace() + sigma_b.trace()) - 2 * float(covmean.trace())
    assert frechet_from_statistics(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(want, rel=1e-9)


def test_large_samples_approach_the_closed_form():
    mean_b = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    sigma_a, sigma_b = random_spd(4, 2), random_spd(4, 3)
    exact = frechet_from_statistics(torch.zeros(4), sigma_a, mean_b, sigma_b)
    sampled = frechet_distance(gaussian_samples(100_000, torch.zeros(4, dtype=torch.float64), sigma_a, 0),
                               gaussian_samples(100_000, mean_b, sigma_b, 1))
    assert sampled == pytest.approx(exact, rel=0.02)


def test_statistics_are_mean_and_unbiased_covariance():
    feats = gaussian_samples(50, torch.zeros(3, dtype=torch.float64), random_spd(3, 4), 5)
    mu, sigma = feature_statistics(feats.float())
    centred = feats - feats.mean(0)
    assert mu.dtype == sigma.dtype == torch.float64
    assert torch.allclose(mu, feats.mean(0), atol=1e-6)
    assert torch.allclose(sigma, centred.T @ centred / 49, atol=1e-6)
    assert feature_statistics(feats[:, :1])[1].shape == (1, 1)


def test_distance_properties():
    cov = random_spd(5, 6)
    a = gaussian_samples(400, torch.zeros(5, dtype=torch.float64), cov, 7)
    b = gaussian_samples(300, torch.zeros(5, dtype=torch.float64), random_spd(5, 8), 9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) > 0.1  # different covariances are told apart
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    perm = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a[perm], b) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    shifts = [frechet_distance(a, a + shift) for shift in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([5 * 0.5 ** 2, 5 * 1.0, 5 * 4.0], rel=1e-9)  # exactly ||shift||^2
    assert all(frechet_distance(x, y) >= 0 for x, y in [(a, b), (b, a), (a, a), (a[:2], a[2:4])])


def test_rank_deficient_covariances_stay_finite_and_non_negative():
    """Fewer samples than features (singular covariances): eigenvalues are clamped, never a NaN."""
    a = gaussian_samples(5, torch.zeros(16, dtype=torch.float64), torch.eye(16, dtype=torch.float64), 10)
    got = frechet_distance(a, a.flip(0))
    assert math.isfinite(got) and got == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("a, b, message", [
    (torch.zeros(5, 3), torch.zeros(5, 4), "same F"),
    (torch.zeros(5, 3), torch.zeros(1, 3), "at least 2"),
    (torch.zeros(1, 3), torch.zeros(5, 3), "at least 2"),
    (torch.zeros(5), torch.zeros(5), r"\(N, F\)"),
    (torch.full((5, 3), math.nan), torch.zeros(5, 3), "NaN"),
])
def test_bad_features_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(a, b)


def test_bad_statistics_are_refused():
    with pytest.raises(ValueError, match="means"):
        frechet_from_statistics(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_from_statistics(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))


def test_classifier_shapes_and_refusals():
    model = DigitClassifier(feature_dim=12, channels=4).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model.features(x).shape == (3, 12) and model(x).shape == (3, 10)
    assert model.features(torch.rand(2, 1, 32, 32)).shape == (2, 12)  # the adaptive pool takes other sizes
    assert extract_features(model, x, device="cpu").shape == (3, 12)
    for bad, message in [(x * 2, r"\[0, 1\]"), (torch.rand(3, 3, 28, 28), "channel|shape"),
                         (torch.full((1, 1, 28, 28), math.nan), "NaN")]:
        with pytest.raises(ValueError, match=message):
            model(bad)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(model, torch.rand(28, 28))


@pytest.fixture(scope="module")
def splits():
    return load_images("mnist-5k", "train"), load_images("mnist-5k", "test")


@pytest.fixture(scope="module")
def classifier(splits):
    return train_classifier(splits[0], "ci", seed=0, device="cpu")


def test_ci_classifier_is_accurate(classifier, splits):
    assert accuracy(classifier, splits[1], device="cpu") >= MIN_TEST_ACCURACY


def test_frechet_to_data_orders_real_reconstructed_and_noise(classifier, splits):
    """Two real splits are closer to each other than the test split is to noise; a set to itself is 0."""
    train_set, test_set = splits
    noise = torch.rand(len(test_set), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    floor = frechet_to_data(classifier, test_set, train_set, device="cpu")
    same = frechet_to_data(classifier, test_set, test_set.images.float() / 255, device="cpu")  # a dataset, a tensor
    assert same == pytest.approx(0.0, abs=1e-6)
    assert 0 < floor < frechet_to_data(classifier, noise, test_set, device="cpu") / 10


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(0, 1, 28, 28), "empty"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), r"x.float\(\) / 255"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.float64), "torch.float32"),
    (torch.zeros(2, 3, 28, 28), "channel"),
])
def test_the_classifier_refuses_bad_batches_early(bad, message):
    with pytest.raises(ValueError, match=message):
        DigitClassifier().features(bad)


def test_the_classifier_takes_bfloat16_images_as_autocast_gives_them():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert DigitClassifier().features(x.bfloat16()).shape == (2, 64)
