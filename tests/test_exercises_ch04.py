"""Chapter 4's checks accept right KL formulas and name the mistake in wrong ones."""
import math

import pytest

from vqvae_lib.exercises.ch04 import (check_commitment_kl, check_isotropic_kl, reference_commitment_kl,
                                      reference_isotropic_kl)


def test_commitment_kl_accepts_reference(capsys):
    assert check_commitment_kl(reference_commitment_kl)
    assert "Correct!" in capsys.readouterr().out
    # the equal-scale case of the general formula is right too
    assert check_commitment_kl(lambda z_e, e, s: reference_isotropic_kl(z_e, s, e, s), verbose=False)


@pytest.mark.parametrize("fn, hint", [
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / s ** 2, "twice the KL"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / (4 * s ** 2), "half the KL"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / (2 * s), "enters squared"),
    (lambda z_e, e, s: ((z_e - e) ** 2).mean(-1) / (2 * s ** 2), "mean over the D coordinates"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum() / (2 * s ** 2), "one KL per row"),
    (lambda z_e, e, s: (z_e - e).abs().sum(-1) / (2 * s ** 2), r"expected \|\|z_e - e\|\|\^2"),
])
def test_commitment_kl_rejects_wrong(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        check_commitment_kl(fn, verbose=False)


def test_isotropic_kl_accepts_reference(capsys):
    assert check_isotropic_kl(reference_isotropic_kl)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("fn, hint", [
    (lambda mq, sq, mp, sp: reference_commitment_kl(mq, mp, sp), "scales do not cancel"),
    (lambda mq, sq, mp, sp: reference_isotropic_kl(mp, sp, mq, sq), "KL\\(p \\|\\| q\\)"),
    (lambda mq, sq, mp, sp: reference_commitment_kl(mq, mp, sp) * 2, "equal scales"),
])
def test_isotropic_kl_rejects_wrong(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        check_isotropic_kl(fn, verbose=False)


def test_reference_kl_blows_up_as_the_posterior_shrinks():
    import torch
    mu_q, mu_p = torch.zeros(1, 4), torch.ones(1, 4)
    kls = [float(reference_isotropic_kl(mu_q, s, mu_p, 1.0)) for s in (1e-1, 1e-2, 1e-3)]
    assert kls[0] < kls[1] < kls[2]
    # each factor 10 in s_q adds D log 10 nats
    assert math.isclose(kls[2] - kls[1], 4 * math.log(10), rel_tol=1e-3)
