"""Chapter 7's checks accept right answers and refuse wrong ones."""
import pytest
import torch

from conftest import SMALL_VQVAE_CODES
from vqvae_lib import GatedPixelCNN
from vqvae_lib.exercises import ch07
from vqvae_lib.widgets import decoder_reach

K = SMALL_VQVAE_CODES


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(16, 1, 28, 28)


def dead_codes_right(vqvae, images):
    counts = torch.bincount(vqvae.encode(images).flatten(), minlength=vqvae.quantizer.num_codes)
    return torch.nonzero(counts == 0).flatten().tolist()


def test_dead_codes(vqvae, images, capsys):
    assert len(dead_codes_right(vqvae, images)) > 0  # an untrained model leaves codes unused: a real test
    assert ch07.check_dead_codes(dead_codes_right, vqvae, images)
    assert "Correct!" in capsys.readouterr().out
    assert ch07.check_dead_codes(lambda v, x: torch.tensor(dead_codes_right(v, x)), vqvae, images)

    def used_codes(v, x):
        return v.encode(x).unique().tolist()

    with pytest.raises(AssertionError, match="ARE used"):
        ch07.check_dead_codes(used_codes, vqvae, images)
    with pytest.raises(AssertionError):
        ch07.check_dead_codes(lambda v, x: dead_codes_right(v, x)[1:], vqvae, images)
    with pytest.raises(AssertionError, match="None"):
        ch07.check_dead_codes(lambda v, x: None, vqvae, images)


def test_edit_reach(vqvae):
    assert ch07.check_edit_reach(decoder_reach(vqvae), vqvae)
    assert ch07.check_edit_reach(11, vqvae)  # 4 * (1 + 1 residual layer) + 3
    with pytest.raises(AssertionError, match="too small"):
        ch07.check_edit_reach(4, vqvae)
    with pytest.raises(AssertionError, match="too large"):
        ch07.check_edit_reach(12, vqvae)
    with pytest.raises(AssertionError):
        ch07.check_edit_reach(None, vqvae)


def test_remedies():
    outcome = ch07.remedy_outcomes()
    assert outcome["none"] <= 2 and outcome["ema"] <= 2
    assert outcome["kmeans_init"] >= 12 and outcome["restart"] >= 12
    assert ch07.check_remedies({"kmeans_init", "restart"})
    for wrong in [{"ema", "kmeans_init", "restart"}, {"kmeans_init"}, "restart", {"ema"}, set()]:
        with pytest.raises(AssertionError):
            ch07.check_remedies(wrong)
    with pytest.raises(AssertionError, match="unknown"):
        ch07.check_remedies({"dropout"})


def test_commitment_kl():
    assert ch07.check_commitment_kl(lambda d, s: d ** 2 / (2 * s ** 2))
    with pytest.raises(AssertionError, match="twice"):
        ch07.check_commitment_kl(lambda d, s: d ** 2 / s ** 2)
    with pytest.raises(AssertionError, match="variance"):
        ch07.check_commitment_kl(lambda d, s: d ** 2 / (2 * s))
    with pytest.raises(AssertionError):
        ch07.check_commitment_kl(lambda d, s: d / (2 * s ** 2))
    with pytest.raises(AssertionError):
        ch07.check_commitment_kl(lambda d, s: None)


def test_temperature(vqvae):
    torch.manual_seed(3)
    prior = GatedPixelCNN(K, hidden_channels=8, num_layers=2, num_classes=10).eval()
    with torch.no_grad():  # make the prior confident enough that temperature matters clearly
        prior.head[-1].weight.mul_(20)
    assert ch07.check_temperature("fewer", vqvae, prior, (7, 7), num_samples=8)
    with pytest.raises(AssertionError, match="other way"):
        ch07.check_temperature("more", vqvae, prior, (7, 7), num_samples=8)
    with pytest.raises(AssertionError):
        ch07.check_temperature(None, vqvae, prior, (7, 7))
