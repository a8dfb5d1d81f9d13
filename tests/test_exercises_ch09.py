"""Chapter 9's checks accept the right FSQ index, code count and rotation, and reject common mistakes with a hint."""
import math

import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch09 import (
    all_digits,
    check_fsq_index,
    check_fsq_num_codes,
    check_rotation,
    reference_fsq_index,
    reference_rotation,
    rotation_cases,
)


def stub(*args):
    raise NotImplementedError  # your code here


@pytest.mark.parametrize("check", [check_fsq_index, check_fsq_num_codes, check_rotation])
def test_stubs_raise_not_implemented(check):
    with pytest.raises(NotImplementedError):
        check(stub, verbose=False)


def test_reference_index_numbers_every_code_once_channel_0_fastest():
    levels = [3, 4, 5]
    index = reference_fsq_index(all_digits(levels), levels)
    assert sorted(index.tolist()) == list(range(60))
    assert reference_fsq_index(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), levels).tolist() == [1, 3, 12]


def test_accepts_a_written_index(capsys):
    def mine(digits, levels):
        index, scale = torch.zeros(len(digits), dtype=torch.long), 1
        for c, n in enumerate(levels):
            index += digits[:, c] * scale
            scale *= n
        return index
    assert check_fsq_index(mine)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("fn, hint", [
    (lambda d, lv: reference_fsq_index(d.flip(-1), list(reversed(lv))), "most significant"),
    (lambda d, lv: d.sum(-1), "summing"),
    (lambda d, lv: (d * torch.tensor(lv)).sum(-1), "BEFORE"),
    (lambda d, lv: d[:, 0], "share an index"),
    (lambda d, lv: reference_fsq_index(d, lv)[:-1], "shape"),
    (lambda d, lv: None, "None"),
])
def test_rejects_wrong_indices(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_fsq_index(fn, verbose=False)


def test_num_codes():
    assert check_fsq_num_codes(math.prod, verbose=False)
    for fn, hint in [(sum, "multiply"), (lambda lv: 2 ** len(lv), "two values"), (len, "combination")]:
        with pytest.raises(Incorrect, match=hint):
            check_fsq_num_codes(fn, verbose=False)


def test_reference_rotation_is_the_plane_rotation():
    for a, b in rotation_cases():
        R = reference_rotation(a, b)
        u, q = a / a.norm(), b / b.norm()
        assert torch.allclose(R @ u, q, atol=1e-12)
        assert torch.allclose(R.T @ R, torch.eye(len(a), dtype=R.dtype), atol=1e-12)
        assert torch.linalg.det(R) > 0
        if len(a) > 2:  # a direction orthogonal to both is fixed
            w = torch.linalg.svd(torch.stack([u, q]), full_matrices=True).Vh[-1]
            assert torch.allclose(R @ w, w, atol=1e-12)


def householder(a, b):
    """The reflection through the bisector of a and -b: it maps a/|a| to b/|b| but has det -1."""
    v = a / a.norm() - b / b.norm()
    v = v / v.norm()
    return torch.eye(len(a), dtype=a.dtype) - 2 * torch.outer(v, v)


def other_rotation(a, b):
    """A rotation mapping a's direction to b's that also turns the orthogonal complement (D >= 4)."""
    R = reference_rotation(a, b)
    if len(a) < 4:  # the complement needs two dimensions to turn in
        return R
    q = b / b.norm()
    basis = torch.linalg.svd(torch.stack([a / a.norm(), q]), full_matrices=True).Vh  # rows: plane, complement
    w1, w2 = basis[-1], basis[-2]
    turn = torch.eye(len(a), dtype=a.dtype) - torch.outer(w1, w1) - torch.outer(w2, w2) \
        + torch.outer(w2, w1) - torch.outer(w1, w2)  # a quarter turn in the complement
    return turn @ R


def test_accepts_a_written_rotation():
    assert check_rotation(reference_rotation, verbose=False)


@pytest.mark.parametrize("fn, hint", [
    (lambda a, b: torch.eye(len(a), dtype=a.dtype) * b.norm() / a.norm(), "lengths"),
    (lambda a, b: torch.eye(len(a), dtype=a.dtype), "does not turn"),
    (householder, "reflection"),
    (other_rotation, "orthogonal to both"),
    (lambda a, b: torch.eye(len(a) + 1), "shape"),
    (lambda a, b: None, "None"),
])
def test_rejects_wrong_rotations(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_rotation(fn, verbose=False)


WRONG_UNDER_O = {
    "check_fsq_index": [("lambda d, lv: d.sum(-1)", "summing")],
    "check_fsq_num_codes": [("sum", "multiply")],
    "check_rotation": [("lambda a, b: torch.eye(len(a), dtype=a.dtype)", "does not turn")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch09", WRONG_UNDER_O)
