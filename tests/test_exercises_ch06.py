"""Chapter 6's checks accept the right mask and bits per code and reject common mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch06 import check_bits_per_code, check_mask, reference_bits_per_code, reference_mask


def test_reference_mask_values():
    assert reference_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert reference_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_accepts_reference_and_written_mask(capsys):
    assert check_mask(reference_mask)

    def mine(k, t):
        m = torch.ones(k, k)
        m[k // 2, k // 2 + (t == "B"):] = 0
        m[k // 2 + 1:] = 0
        return m
    assert check_mask(mine, verbose=False)
    assert "Correct!" in capsys.readouterr().out


def swapped(k, t):
    return reference_mask(k, "B" if t == "A" else "A")


def no_rows_below(k, t):
    m = reference_mask(k, t)
    m[k // 2 + 1:] = 1
    return m


def upper_row_hidden(k, t):
    m = reference_mask(k, t)
    m[0, -1] = 0
    return m


def right_visible(k, t):
    m = reference_mask(k, t)
    m[k // 2, -1] = 1
    return m


@pytest.mark.parametrize("fn, hint", [
    (swapped, "type A must hide the centre"),
    (no_rows_below, "rows below the centre"),
    (upper_row_hidden, "rows above"),
    (right_visible, "centre row"),
    (lambda k, t: torch.ones(k, k + 1), "shape"),
    (lambda k, t: None, "None"),
])
def test_rejects_wrong_masks(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_mask(fn, verbose=False)


def test_reference_bits_uniform_is_log2_k():
    assert math.isclose(reference_bits_per_code(torch.zeros(2, 8, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long)), 3.0,
                        rel_tol=1e-6)


def test_accepts_reference_and_written_bits():
    assert check_bits_per_code(reference_bits_per_code, verbose=False)

    def mine(logits, codes):
        logp = torch.log_softmax(logits, dim=1).gather(1, codes[:, None]).squeeze(1)
        return -logp.mean() / math.log(2)
    assert check_bits_per_code(mine, verbose=False)


@pytest.mark.parametrize("fn, hint", [
    (lambda logits, codes: F.cross_entropy(logits, codes), "nats"),
    (lambda logits, codes: F.cross_entropy(logits, codes, reduction="sum") / math.log(2), "do not sum"),
    (lambda logits, codes: -F.cross_entropy(logits, codes) / math.log(2), "NEGATIVE"),
    (lambda logits, codes: -torch.log_softmax(logits, dim=2).gather(1, codes[:, None]).mean() / math.log(2),
     "dim 1"),
    (lambda logits, codes: None, "None"),
])
def test_rejects_wrong_bits(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_bits_per_code(fn, verbose=False)


# Under `python -O` asserts vanish: each check must still reject a wrong answer there.
WRONG_UNDER_O = {
    "check_mask": [("lambda k, t: torch.ones(k, k)", "")],
    "check_bits_per_code": [("lambda logits, codes: F.cross_entropy(logits, codes)", "")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch06", WRONG_UNDER_O, setup="import torch\nimport torch.nn.functional as F")
