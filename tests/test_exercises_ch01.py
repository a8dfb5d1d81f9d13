"""The chapter 1 checks accept a right answer and reject common wrong ones with a hint, also under ``python -O``."""
import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch01 import check_gaussian_kl, check_reparameterize
from vqvae_lib.models.vae import gaussian_kl, reparameterize


def test_gaussian_kl_accepts_library_and_own_version(capsys):
    assert check_gaussian_kl(gaussian_kl)
    assert check_gaussian_kl(lambda mu, logvar: 0.5 * (mu**2 + torch.exp(logvar) - 1 - logvar).sum(1))
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda mu, lv: (mu**2 + lv.exp() - 1 - lv).sum(-1), "1/2"),                      # no factor 1/2
    (lambda mu, lv: 0.5 * (mu**2 + lv**2 - 1 - torch.log(lv**2)).sum(-1), r"exp\(logvar\)"),  # logvar as sigma
    (lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 - lv), "shape"),                     # not summed
    (lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv).sum(-1), "- 1"),                     # missing -1
    (lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 + lv).sum(-1), "differ"),              # sign of log term
    (lambda mu, lv: None, "return a tensor"),
])
def test_gaussian_kl_rejects_wrong(wrong, hint):
    with pytest.raises(Incorrect, match=hint):
        check_gaussian_kl(wrong)


def test_reparameterize_accepts_library(capsys):
    assert check_reparameterize(reparameterize)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda mu, lv: torch.distributions.Normal(mu, torch.exp(0.5 * lv)).sample(), "no gradient"),
    (lambda mu, lv: mu + torch.exp(lv) * torch.randn_like(mu), "sigma = exp"),   # scales by the variance
    (lambda mu, lv: mu + lv * torch.randn_like(mu), "standard deviations"),      # logvar as sigma
    (lambda mu, lv: torch.randn_like(mu) * torch.exp(0.5 * lv), "means"),        # forgot mu
    (lambda mu, lv: mu[:1] + 0 * lv[:1], "shape"),                               # one sample only
])
def test_reparameterize_rejects_wrong(wrong, hint):
    with pytest.raises(Incorrect, match=hint):
        check_reparameterize(wrong)


def test_verbose_false_is_silent(capsys):
    assert check_gaussian_kl(gaussian_kl, verbose=False)
    assert check_reparameterize(reparameterize, verbose=False)
    assert capsys.readouterr().out == ""


def test_check_reparameterize_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_reparameterize(reparameterize, verbose=False)
    assert torch.equal(torch.rand(3), expected)


def test_check_reparameterize_is_deterministic():
    """The check seeds the answer's noise itself: the same answer gives the same sample whatever ran before."""
    samples = []

    def record(mu, lv):
        z = reparameterize(mu, lv)
        samples.append(z.detach().clone())
        return z

    for seed in (1, 2):
        torch.manual_seed(seed)
        check_reparameterize(record, verbose=False)
    assert torch.equal(*samples)


# Under `python -O` asserts vanish: each check must still reject a wrong answer there, with its hint.
WRONG_UNDER_O = {
    "check_gaussian_kl": [("lambda mu, lv: (mu**2 + lv.exp() - 1 - lv).sum(-1)", "factor 1/2")],
    "check_reparameterize": [("lambda mu, lv: mu + torch.exp(lv) * torch.randn_like(mu)", "scale eps by sigma")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch01", WRONG_UNDER_O)
