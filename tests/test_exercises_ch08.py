"""Chapter 8's checks accept the right schedule, causal mask and bound, and reject common mistakes with a hint."""
import math

import pytest
import torch
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch08 import (
    check_causal_mask,
    check_masked_after_round,
    check_whole_model_bound,
    reference_causal_mask,
    reference_whole_model_bound,
)


def stub(*args):
    raise NotImplementedError  # your code here


@pytest.mark.parametrize("check", [check_masked_after_round, check_causal_mask, check_whole_model_bound])
def test_stubs_raise_not_implemented(check):
    with pytest.raises(NotImplementedError):
        check(stub, verbose=False)


def test_accepts_written_schedule(capsys):
    def mine(step, steps, total):
        return math.floor(total * math.cos(math.pi / 2 * step / steps)) if step < steps else 0
    assert check_masked_after_round(mine)
    assert "Correct!" in capsys.readouterr().out


@pytest.mark.parametrize("fn, hint", [
    (lambda s, n, t: math.ceil(t * math.cos(math.pi / 2 * s / n)), "round down"),
    (lambda s, n, t: math.cos(math.pi / 2 * s / n), "fraction"),
    (lambda s, n, t: t * math.cos(math.pi / 2 * s / n) if s < n else 0, "whole number"),
    (lambda s, n, t: t - (math.floor(t * math.cos(math.pi / 2 * s / n)) if s < n else 0), "already decoded"),
    (lambda s, n, t: math.floor(t * (1 - s / n)), "not linear"),
    (lambda s, n, t: None, "None"),
])
def test_rejects_wrong_schedules(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_masked_after_round(fn, verbose=False)


def test_reference_causal_mask_values():
    assert reference_causal_mask(3).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_accepts_bool_and_float_masks():
    assert check_causal_mask(reference_causal_mask, verbose=False)
    assert check_causal_mask(lambda T: torch.tril(torch.ones(T, T)), verbose=False)


@pytest.mark.parametrize("fn, hint", [
    (lambda T: reference_causal_mask(T).T, "AFTER"),
    (lambda T: torch.ones(T, T).tril(-1), "attend to itself"),
    (lambda T: ~reference_causal_mask(T), "hidden slots"),
    (lambda T: torch.ones(T, T), "bidirectional"),
    (lambda T: torch.ones(T, T + 1).tril(), "shape"),
    (lambda T: 2 * torch.ones(T, T).tril(), "only True/1"),
    (lambda T: None, "None"),
])
def test_rejects_wrong_masks(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_causal_mask(fn, verbose=False)


def test_reference_bound_value():
    # 49 codes of 6 bits (a uniform prior over 64 codes) and 784 ln 2 nats: 1 + 294/784 bits per dim
    assert math.isclose(reference_whole_model_bound(784 * math.log(2), 6.0, 49, 784), 1 + 294 / 784)


def test_accepts_written_bound():
    assert check_whole_model_bound(lambda r, b, n, d: (r / math.log(2) + b * n) / d, verbose=False)


@pytest.mark.parametrize("fn, hint", [
    (lambda r, b, n, d: (r + b * n) / d, "in nats"),
    (lambda r, b, n, d: (r / math.log(2) + b) / d, "per code"),
    (lambda r, b, n, d: r / math.log(2) + b * n, "bits per image"),
    (lambda r, b, n, d: r / math.log(2) / d, "KL term"),
    (lambda r, b, n, d: (r / math.log(2) - b * n) / d, "add the prior"),
    (lambda r, b, n, d: 0.0, "nats / ln 2"),
    (lambda r, b, n, d: None, "None"),
])
def test_rejects_wrong_bounds(fn, hint):
    with pytest.raises(Incorrect, match=hint):
        check_whole_model_bound(fn, verbose=False)


# Under `python -O` asserts vanish: each check must still reject a wrong answer there.
WRONG_UNDER_O = {
    "check_masked_after_round": [("lambda s, n, t: t - s", "expected")],
    "check_causal_mask": [("lambda T: torch.ones(T, T)", "bidirectional")],
    "check_whole_model_bound": [("lambda r, b, n, d: (r + b * n) / d", "nats")],
}


def test_checks_reject_wrong_answers_under_python_O():
    rejects_under_python_O("ch08", WRONG_UNDER_O)
