"""Chapter 4's checks accept right KL formulas and name the mistake in wrong ones, also under ``python -O``."""
import math

import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch04 import (
    check_gaussian_commitment_kl,
    check_isotropic_kl,
    reference_commitment_kl,
    reference_isotropic_kl,
    rtol_for,
)


def test_commitment_kl_accepts_reference(capsys):
    assert check_gaussian_commitment_kl(reference_commitment_kl)
    assert "Correct!" in capsys.readouterr().out
    # the equal-scale case of the general formula is right too
    assert check_gaussian_commitment_kl(lambda z_e, e, s: reference_isotropic_kl(z_e, s, e, s), verbose=False)


def test_commitment_kl_accepts_a_right_answer_in_single_precision():
    assert check_gaussian_commitment_kl(lambda z_e, e, s: reference_commitment_kl(z_e.float(), e.float(), s),
                                        verbose=False)


def test_quiet_check_prints_nothing(capsys):
    check_gaussian_commitment_kl(reference_commitment_kl, verbose=False)
    check_isotropic_kl(reference_isotropic_kl, verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("fn, hint", [
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / s ** 2, "twice the KL"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / (4 * s ** 2), "half the KL"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / (2 * s), "enters squared"),
    (lambda z_e, e, s: ((z_e - e) ** 2).mean(-1) / (2 * s ** 2), "mean over the D coordinates"),
    (lambda z_e, e, s: ((z_e - e) ** 2).sum() / (2 * s ** 2), "one KL per row"),
    (lambda z_e, e, s: (z_e - e).abs().sum(-1) / (2 * s ** 2), r"expected \|\|z_e - e\|\|\^2"),
    (lambda z_e, e, s: [0.0] * len(z_e), "must return a tensor"),
    (lambda z_e, e, s: torch.full((len(z_e),), float("nan"), dtype=z_e.dtype), "non-finite"),
])
def test_commitment_kl_rejects_wrong(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_gaussian_commitment_kl(fn, verbose=False)


def test_isotropic_kl_accepts_reference(capsys):
    assert check_isotropic_kl(reference_isotropic_kl)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("fn, hint", [
    (lambda mq, sq, mp, sp: reference_commitment_kl(mq, mp, sp), "scales do not cancel"),
    (lambda mq, sq, mp, sp: reference_isotropic_kl(mp, sp, mq, sq), "KL\\(p \\|\\| q\\)"),
    (lambda mq, sq, mp, sp: reference_commitment_kl(mq, mp, sp) * 2, "equal scales"),
])
def test_isotropic_kl_rejects_wrong(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_isotropic_kl(fn, verbose=False)


def test_tolerance_comes_from_the_answers_precision():
    # half the significant digits: a right formula is within a few ulps, a wrong one off by a factor
    assert rtol_for(torch.float64) == math.sqrt(torch.finfo(torch.float64).eps)
    assert rtol_for(torch.float64) < rtol_for(torch.float32) < 1e-3


WRONG_UNDER_O = {
    "check_gaussian_commitment_kl": [("lambda z_e, e, s: ((z_e - e) ** 2).sum(-1) / s ** 2", "")],
    "check_isotropic_kl": [("lambda mq, sq, mp, sp: ((mq - mp) ** 2).sum(-1) / (2 * sp ** 2)", "")],
}


def test_checks_fail_under_python_O():
    """``python -O`` strips asserts; a check built on them would pass every wrong answer."""
    rejects_under_python_O("ch04", WRONG_UNDER_O)


def test_reference_kl_blows_up_as_the_posterior_shrinks():
    mu_q, mu_p = torch.zeros(1, 4), torch.ones(1, 4)
    kls = [float(reference_isotropic_kl(mu_q, s, mu_p, 1.0)) for s in (1e-1, 1e-2, 1e-3)]
    assert kls[0] < kls[1] < kls[2]
    # each factor 10 in s_q adds D log 10 nats
    assert math.isclose(kls[2] - kls[1], 4 * math.log(10), rel_tol=1e-3)


def test_reference_kl_forgets_the_distance_as_the_prior_widens():
    """Chapter 4's point about a 'flat' prior: a wider s_p shrinks the distance term, grows the log term."""
    mu_q, mu_p = torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    near, far = (reference_isotropic_kl(mu_q, 0.1, m, 1e3) for m in (mu_q, mu_p))
    assert float(far - near) == pytest.approx(4 / (2 * 1e3 ** 2), rel=1e-3)
    assert float(near) > 4 / 2 * math.log(1e3 ** 2 / 0.1 ** 2) - 4 / 2  # the diverging part
