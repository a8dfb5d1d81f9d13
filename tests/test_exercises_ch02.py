"""The chapter 2 checks accept a right answer and reject common wrong ones with a hint."""
import math

import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch02 import check_nearest_code, check_perplexity
from vqvae_lib.quantizers.vq import nearest_code, perplexity_from_counts


def expansion(flat, codebook):
    d2 = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
    return d2.argmin(1)


def test_nearest_code_accepts_right_answers(capsys):
    assert check_nearest_code(nearest_code)
    assert check_nearest_code(expansion)
    assert check_nearest_code(lambda a, b: torch.cdist(a, b).argmin(1))
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: torch.cdist(a, b).argmax(1), "farthest"),
    (lambda a, b: (a @ b.t()).argmax(1), "||b||^2"),
    (lambda a, b: torch.cdist(a, b).argmin(0), "shape"),
    (lambda a, b: torch.cdist(a, b).argmin(1).int(), "int64"),
    (lambda a, b: (b.pow(2).sum(1) + 2 * a @ b.t()).argmin(1), "not the nearest"),   # sign of the cross term
    (lambda a, b: torch.cdist(a, b).min(1).values, "int64"),                           # distances, not indices
])
def test_nearest_code_rejects_wrong(wrong, hint):
    with pytest.raises(Incorrect, match=hint):
        check_nearest_code(wrong)


def test_perplexity_accepts_right_answers(capsys):
    assert check_perplexity(perplexity_from_counts)

    def own(counts):
        p = counts.float() / counts.sum()
        p = p[p > 0]
        return math.exp(-(p * p.log()).sum().item())

    assert check_perplexity(own)
    assert "Correct!" in capsys.readouterr().out


def _entropy(counts):
    p = counts.float() / counts.sum()
    return -(p * p.clamp_min(1e-12).log()).sum()


@pytest.mark.parametrize("wrong, hint", [
    (_entropy, "exp\\(entropy\\)"),
    (lambda c: torch.exp(-((c / c.sum()) * (c / c.sum()).log()).sum()), "NaN"),        # 0 log 0 not handled
    (lambda c: torch.tensor(float((c > 0).sum())), "expected"),                         # counts used codes instead
])
def test_perplexity_rejects_wrong(wrong, hint):
    with pytest.raises(Incorrect, match=hint):
        check_perplexity(wrong)


def test_verbose_false_is_silent(capsys):
    assert check_nearest_code(nearest_code, verbose=False)
    assert check_perplexity(perplexity_from_counts, verbose=False)
    assert capsys.readouterr().out == ""


# Under `python -O` asserts vanish: each check must still reject a wrong answer there.
WRONG_UNDER_O = {
    "check_nearest_code": [("lambda a, b: torch.cdist(a, b).argmax(1)", "")],
    "check_perplexity": [("lambda c: torch.tensor(float((c > 0).sum()))", "")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch02", WRONG_UNDER_O)
