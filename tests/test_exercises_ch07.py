"""Chapter 7's checks accept right answers and refuse wrong ones (also under ``python -O``)."""

import pytest
import torch
from conftest import SMALL_VQVAE_CODES, rejects_under_python_O

from vqvae_lib import GatedPixelCNN
from vqvae_lib.exercises import Incorrect, ch07
from vqvae_lib.seeding import seeded
from vqvae_lib.widgets import REMEDIES, decoder_reach

K = SMALL_VQVAE_CODES


@pytest.fixture(scope="module")
def images():
    return torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def confident_prior():
    """A prior confident enough that the temperature clearly changes how many codes a sample uses."""
    with seeded(3):
        prior = GatedPixelCNN(K, hidden_channels=8, num_layers=2, num_classes=10).eval()
    with torch.no_grad():
        prior.head[-1].weight.mul_(20)
    return prior


def dead_codes_right(vqvae, images):
    counts = torch.bincount(vqvae.encode(images).flatten(), minlength=vqvae.quantizer.num_codes)
    return torch.nonzero(counts == 0).flatten().tolist()


def reach_right(num_res_layers):
    return 4 * (1 + num_res_layers) + 3  # the solution's derivation, for downsampling by 4


def test_dead_codes(vqvae, images, capsys):
    assert len(dead_codes_right(vqvae, images)) > 0  # an untrained model leaves codes unused: a real test
    assert ch07.check_dead_codes(dead_codes_right, vqvae, images)
    assert "Correct!" in capsys.readouterr().out
    assert ch07.check_dead_codes(lambda v, x: torch.tensor(dead_codes_right(v, x)), vqvae, images, verbose=False)
    assert capsys.readouterr().out == ""

    def used_codes(v, x):
        return v.encode(x).unique().tolist()

    with pytest.raises(Incorrect, match="ARE used"):
        ch07.check_dead_codes(used_codes, vqvae, images)
    with pytest.raises(Incorrect):
        ch07.check_dead_codes(lambda v, x: dead_codes_right(v, x)[1:], vqvae, images)
    with pytest.raises(Incorrect, match="None"):
        ch07.check_dead_codes(lambda v, x: None, vqvae, images)


def test_edit_reach_is_checked_against_a_measurement(vqvae):
    # the formula, the layer-by-layer derivation and the measurement are three independent routes
    assert reach_right(vqvae.config["num_res_layers"]) == decoder_reach(vqvae)
    assert ch07.check_edit_reach(reach_right, vqvae)
    assert ch07.check_edit_reach(lambda L: decoder_reach(ch07.decoder_like(vqvae, L)), vqvae)
    with pytest.raises(Incorrect, match="too small"):
        ch07.check_edit_reach(lambda L: 4, vqvae)
    with pytest.raises(Incorrect, match="too large"):
        ch07.check_edit_reach(lambda L: reach_right(L) + 1, vqvae)
    with pytest.raises(Incorrect, match="L = 0"):  # right for this model's depth only: the other depths catch it
        ch07.check_edit_reach(lambda L: reach_right(vqvae.config["num_res_layers"]), vqvae)
    with pytest.raises(Incorrect, match="whole number"):
        ch07.check_edit_reach(lambda L: reach_right(L) + 0.5, vqvae)
    with pytest.raises(Incorrect, match="None"):
        ch07.check_edit_reach(lambda L: None, vqvae)


def test_remedies():
    outcome = ch07.remedy_outcomes()
    assert set(outcome) == {"none", *REMEDIES} and set(REMEDIES) == {"ema", "kmeans_init", "restart_after"}
    assert outcome["none"] <= 2 and outcome["ema"] <= 2
    assert outcome["kmeans_init"] >= 12 and outcome["restart_after"] >= 12
    assert ch07.working_remedies() == {"kmeans_init", "restart_after"}
    assert ch07.check_remedies(lambda: {"kmeans_init", "restart_after"})
    assert ch07.check_remedies({"kmeans_init", "restart_after"}, verbose=False)  # a value works too
    for wrong in [{"ema", "kmeans_init", "restart_after"}, {"kmeans_init"}, "restart_after", {"ema"}, set()]:
        with pytest.raises(Incorrect):
            ch07.check_remedies(lambda wrong=wrong: wrong)
    with pytest.raises(Incorrect, match="unknown"):
        ch07.check_remedies(lambda: {"restart"})  # the old toggle name is not an option of the quantizer
    # the threshold follows the parameters: asking for every code of 16 changes nothing here ...
    assert ch07.working_remedies(fraction=1.0) == {"kmeans_init", "restart_after"}
    # ... and at a single code even no remedy "works"
    assert ch07.working_remedies(fraction=1 / 16) == set(REMEDIES)


def test_remedy_history_chunks_change_nothing():
    one = ch07.remedy_history((60,))[60]
    two = ch07.remedy_history((20, 60))[60]
    assert one == two


def test_kl_from_distance():
    assert ch07.check_kl_from_distance(lambda d, s: d ** 2 / (2 * s ** 2))
    with pytest.raises(Incorrect, match="twice"):
        ch07.check_kl_from_distance(lambda d, s: d ** 2 / s ** 2)
    with pytest.raises(Incorrect, match="variance"):
        ch07.check_kl_from_distance(lambda d, s: d ** 2 / (2 * s))
    with pytest.raises(Incorrect):
        ch07.check_kl_from_distance(lambda d, s: d / (2 * s ** 2))
    with pytest.raises(Incorrect):
        ch07.check_kl_from_distance(lambda d, s: None)
    with pytest.raises(Incorrect):  # a tolerance tighter than the error of an approximation refuses it
        ch07.check_kl_from_distance(lambda d, s: d ** 2 / (2 * s ** 2) * (1 + 1e-4))
    assert ch07.check_kl_from_distance(lambda d, s: d ** 2 / (2 * s ** 2) * (1 + 1e-4), rel_tol=1e-3)


def test_temperature(vqvae, confident_prior):
    counts = ch07.distinct_codes_at(vqvae, confident_prior, (7, 7), num_samples=8)
    assert counts[ch07.LOW_T] < counts[ch07.HIGH_T]
    assert ch07.check_temperature(lambda: "fewer", vqvae, confident_prior, (7, 7), num_samples=8)
    with pytest.raises(Incorrect, match="other way"):
        ch07.check_temperature(lambda: "more", vqvae, confident_prior, (7, 7), num_samples=8)
    with pytest.raises(Incorrect, match="other way"):  # swapping the temperatures swaps the answer
        ch07.check_temperature(lambda: "fewer", vqvae, confident_prior, (7, 7), low=ch07.HIGH_T,
                               high=ch07.LOW_T, num_samples=8)
    with pytest.raises(Incorrect):
        ch07.check_temperature(lambda: None, vqvae, confident_prior, (7, 7))


def test_stubs_raise_not_implemented(vqvae, images, confident_prior):
    """The notebook's stubs raise NotImplementedError; a check lets it through (the cell catches it)."""
    def stub(*args):
        raise NotImplementedError

    for check, args in [(ch07.check_dead_codes, (vqvae, images)), (ch07.check_edit_reach, (vqvae,)),
                        (ch07.check_remedies, ()), (ch07.check_kl_from_distance, ()),
                        (ch07.check_temperature, (vqvae, confident_prior, (7, 7)))]:
        with pytest.raises(NotImplementedError):
            check(stub, *args)


SETUP_UNDER_O = """
import torch
from vqvae_lib import VQVAE, GatedPixelCNN
from vqvae_lib.seeding import seeded
with seeded(0):
    vqvae = VQVAE(num_codes=16, code_dim=4, hidden_channels=16, res_channels=8, num_res_layers=1).eval()
    prior = GatedPixelCNN(16, hidden_channels=8, num_layers=2, num_classes=10).eval()
images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
"""
WRONG_UNDER_O = {
    "check_dead_codes": [("lambda v, x: None, vqvae, images", "")],
    "check_edit_reach": [("lambda L: 4, vqvae", "")],
    # a small playground (8 codes, 50 points, 20 steps) where only k-means init revives 3/4 of the codes
    "check_remedies": [("lambda: {'ema'}, 20, 50, 8", "")],
    "check_kl_from_distance": [("lambda d, s: d ** 2 / s ** 2", "")],
    "check_temperature": [("lambda: 'warmer', vqvae, prior, (7, 7)", "")],
}


def test_every_check_refuses_a_wrong_answer_under_python_O():
    """``python -O`` strips assert statements: the checks must refuse wrong answers without them."""
    rejects_under_python_O("ch07", WRONG_UNDER_O, setup=SETUP_UNDER_O)
