"""Chapter 10's checks accept the right hinge loss and adaptive weight, and reject common mistakes with a hint."""
import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch10 import check_adaptive_weight, check_hinge_d_loss


def stub(*args):
    raise NotImplementedError  # your code here


@pytest.mark.parametrize("check", [check_hinge_d_loss, check_adaptive_weight])
def test_stubs_raise_not_implemented(check):
    with pytest.raises(NotImplementedError):
        check(stub, verbose=False)


def test_accepts_written_answers(capsys):
    def hinge(real, fake):
        return 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())

    def weight(rec, adv, layer):
        (a,) = torch.autograd.grad(rec, layer, retain_graph=True)
        (b,) = torch.autograd.grad(adv, layer, retain_graph=True)
        return (a.norm() / (b.norm() + 1e-4)).clamp(0, 1e4).detach()

    assert check_hinge_d_loss(hinge) and check_adaptive_weight(weight)
    assert capsys.readouterr().out.count("Correct!") == 2


@pytest.mark.parametrize("fn, hint", [
    (lambda r, f: 0.5 * (torch.relu(1 + r).mean() + torch.relu(1 - f).mean()), "swapped"),
    (lambda r, f: torch.relu(1 - r).mean() + torch.relu(1 + f).mean(), "halved"),
    (lambda r, f: 0.5 * ((1 - r).mean() + (1 + f).mean()), "relu"),
    (lambda r, f: torch.relu(1 - r), "one number"),
    (lambda r, f: None, "None"),
])
def test_rejects_wrong_hinge_losses(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_hinge_d_loss(fn, verbose=False)


def ratio(rec, adv, layer, upside_down=False, clamp=True, detach=True):
    (a,) = torch.autograd.grad(rec, layer, retain_graph=True)
    (b,) = torch.autograd.grad(adv, layer, retain_graph=True)
    w = b.norm() / (a.norm() + 1e-4) if upside_down else a.norm() / (b.norm() + 1e-4)
    w = w.clamp(0, 1e4) if clamp else w
    return w.detach() if detach else w + 0 * layer.sum()


@pytest.mark.parametrize("fn, hint", [
    (lambda r, a, w: ratio(r, a, w, upside_down=True), "upside down"),
    (lambda r, a, w: ratio(r, a, w, clamp=False), "clamp"),
    (lambda r, a, w: ratio(r, a, w, detach=False), "detach"),
    (lambda r, a, w: 1.0, "tensor"),
])
def test_rejects_wrong_adaptive_weights(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_adaptive_weight(fn, verbose=False)


WRONG_UNDER_O = {
    "check_hinge_d_loss": [("lambda r, f: 0.5 * ((1 - r).mean() + (1 + f).mean())", "relu")],
    "check_adaptive_weight": [("lambda r, a, w: torch.tensor(1.0)", "expected")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch10", WRONG_UNDER_O)
