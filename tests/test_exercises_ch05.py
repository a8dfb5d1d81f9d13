"""Chapter 5's check accepts a right training step and names the mistake in wrong ones."""
import pytest
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch05 import check_training_step, reference_training_step


def test_accepts_reference():
    assert check_training_step(reference_training_step, verbose=False)


def test_accepts_out_loss():
    def step(model, x, opt):
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    assert check_training_step(step, verbose=False)


def make_step(loss_fn, zero_grad=True, backward=True):
    def step(model, x, opt):
        loss = loss_fn(model(x))
        if zero_grad:
            opt.zero_grad()
        if backward:
            loss.backward()
            opt.step()
        return loss
    return step


@pytest.mark.parametrize("step, hint", [
    (make_step(lambda out: out.recon_loss), "VQ-VAE loss"),
    (make_step(lambda out: out.recon_loss + out.vq.commitment_loss * 0.25), "VQ-VAE loss"),
    (make_step(lambda out: out.vq.loss), "VQ-VAE loss"),
    (make_step(lambda out: out.loss, zero_grad=False), "zero_grad"),
    (make_step(lambda out: out.loss, backward=False), "no parameter changed"),
    (lambda model, x, opt: None, "None"),
])
def test_rejects_wrong_steps(step, hint):
    with pytest.raises(Incorrect, match=hint):
        check_training_step(step, verbose=False)


def test_rejects_double_codebook_term():
    # The right loss value, but the codebook term counted twice in the gradient.
    def step(model, x, opt):
        out = model(x)
        loss = out.loss + out.vq.codebook_loss - out.vq.codebook_loss.detach()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    with pytest.raises(Incorrect, match="codebook"):
        check_training_step(step, verbose=False)


def test_prints_verdict(capsys):
    check_training_step(reference_training_step)
    assert "Correct!" in capsys.readouterr().out


def test_check_rejects_a_wrong_step_under_python_O():
    """Under ``python -O`` asserts vanish: the check must still refuse a step that only reconstructs."""
    rejects_under_python_O("ch05", {"check_training_step": [("STEP", "VQ-VAE loss")]},
                           setup="\n".join(["def STEP(model, x, opt):",
                                            "    loss = model(x).recon_loss",
                                            "    opt.zero_grad()",
                                            "    loss.backward()",
                                            "    opt.step()",
                                            "    return loss"]))
