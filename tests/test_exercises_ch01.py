"""The chapter 1 checks accept a right answer and reject common wrong ones with a hint."""
import pytest
import torch

from vqvae_lib.exercises.ch01 import check_gaussian_kl, check_reparameterize
from vqvae_lib.vae import gaussian_kl, reparameterize


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
])
def test_gaussian_kl_rejects_wrong(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
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
    with pytest.raises(AssertionError, match=hint):
        check_reparameterize(wrong)
