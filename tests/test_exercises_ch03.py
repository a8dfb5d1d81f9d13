"""Chapter 3's checks accept right answers and name the mistake in wrong ones."""
import pytest
import torch.nn.functional as F
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch03 import (
    check_straight_through,
    check_vq_losses,
    reference_straight_through,
    reference_vq_losses,
)


def test_straight_through_accepts_reference_and_variants(capsys):
    assert check_straight_through(reference_straight_through)
    assert "Correct!" in capsys.readouterr().out
    assert check_straight_through(lambda z_e, z_q: (z_q - z_e).detach() + z_e, verbose=False)
    assert capsys.readouterr().out == ""


STRAIGHT_THROUGH_WRONG = [
    ("lambda z_e, z_q: z_q", "no gradient reaches z_e"),
    ("lambda z_e, z_q: z_q.detach()", "no gradient reaches z_e"),
    ("lambda z_e, z_q: (z_e + (z_q - z_e)).detach()", "no gradient reaches z_e"),
    ("lambda z_e, z_q: z_e", "value is z_e"),
    ("lambda z_e, z_q: z_q + z_e - z_e.detach()", "gradient also flows into z_q"),
    ("lambda z_e, z_q: 2 * z_e + (z_q - 2 * z_e).detach()", "identity Jacobian"),
    ("lambda z_e, z_q: z_q.flatten()", "shape"),
    ("lambda z_e, z_q: None", "return a tensor"),
]
VQ_LOSSES_WRONG = [
    ("lambda z_e, e: (F.mse_loss(z_e, e.detach()), F.mse_loss(z_e.detach(), e))", "sends no gradient to e"),
    ("lambda z_e, e: (F.mse_loss(z_e, e), F.mse_loss(z_e, e.detach()))", "also moves the encoder output"),
    ("lambda z_e, e: (F.mse_loss(e, z_e.detach()), F.mse_loss(z_e, e))", "also moves the codes"),
    ("lambda z_e, e: (F.mse_loss(e, z_e.detach()), F.mse_loss(z_e.detach(), e.detach()))", "no gradient to z_e"),
    ("lambda z_e, e: (((e - z_e.detach()) ** 2).sum(), F.mse_loss(z_e, e.detach()))", "sum instead of a mean"),
    ("lambda z_e, e: F.mse_loss(e, z_e.detach())", "return two losses"),
    ("lambda z_e, e: (((e - z_e.detach()) ** 2).mean(1), F.mse_loss(z_e, e.detach()))", "scalar"),
]


@pytest.mark.parametrize("source, hint", STRAIGHT_THROUGH_WRONG)
def test_straight_through_rejects_wrong(source, hint):
    with pytest.raises(Incorrect, match=hint):
        check_straight_through(eval(source), verbose=False)


def test_vq_losses_accepts_reference(capsys):
    assert check_vq_losses(reference_vq_losses)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("source, hint", VQ_LOSSES_WRONG)
def test_vq_losses_rejects_wrong(source, hint):
    with pytest.raises(Incorrect, match=hint):
        check_vq_losses(eval(source, {"F": F}), verbose=False)


def test_checks_reject_wrong_answers_under_python_O():
    """Under ``python -O`` asserts vanish: every wrong answer above must still be rejected, with its hint."""
    rejects_under_python_O("ch03", {"check_straight_through": STRAIGHT_THROUGH_WRONG,
                                    "check_vq_losses": VQ_LOSSES_WRONG},
                           setup="import torch.nn.functional as F")
