"""Chapter 10's comparison learns what the chapter says: at equal steps from one shared VQ-VAE, the VQGAN's
reconstructions are nearer the test images in a classifier's features and richer in high frequencies, at a
higher NMSE.

Measured at this budget (300 shared steps, 100 per arm, classifiers 200 steps, one thread), seeds 0-3: the
VQGAN's Fréchet distance over the VQ-VAE's was 0.757, 0.787, 0.622, 0.683; its NMSE higher and its
high-frequency ratio higher on all four. The bound below, 0.9, leaves room for another CPU's rounding and
would fail if the two added terms did nothing (a ratio near 1).
"""
import pytest

from vqvae_lib.models.vqgan import PerceptualLoss
from vqvae_lib.presets import get_preset
from vqvae_lib.recipes.colour import ARMS, compare_vqgan, load_colour, train_colour_classifier

FRECHET_RATIO_BOUND = 0.9


@pytest.fixture(scope="module")
def short_budget():
    preset = get_preset("ci")
    colour = preset["colour"]
    colour["shared_steps"], colour["vqgan"]["steps"] = 300, 100
    for role in colour["classifiers"].values():
        role["train"]["steps"] = 200
    return preset


def test_the_vqgan_beats_the_vqvae_on_the_frechet_distance_at_equal_steps(short_budget, one_thread):
    train_set, test_set = load_colour(short_budget, "train"), load_colour(short_budget, "test")
    perceptual = PerceptualLoss(train_colour_classifier(short_budget, train_set, "perceptual", seed=0))
    evaluator = train_colour_classifier(short_budget, train_set, "evaluation", seed=1)
    run = compare_vqgan(short_budget, train_set, test_set, 0, perceptual, evaluator, progress=False)
    vqvae, vqgan = (run[arm] for arm in ARMS)
    assert vqgan["frechet"] < FRECHET_RATIO_BOUND * vqvae["frechet"], (vqgan["frechet"], vqvae["frechet"])
    assert vqgan["hf_ratio"] > vqvae["hf_ratio"]
    assert vqgan["nmse"] > vqvae["nmse"]  # the conditional mean is squared error's optimum
    # the control: the VQ-VAE's reconstructions plus noise, at about the VQGAN's NMSE
    assert run["vqvae+noise"]["nmse"] == pytest.approx(vqgan["nmse"], rel=0.1)
