"""Chapter 11's checks accept the right cosine lookup and BSQ bound, and reject common mistakes with a hint."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import rejects_under_python_O

from vqvae_lib.exercises import Incorrect
from vqvae_lib.exercises.ch11 import check_bsq_max_error, check_cosine_nearest, cosine_cases, reference_bsq_max_error
from vqvae_lib.quantizers import BSQ, VectorQuantizer


def stub(*args):
    raise NotImplementedError  # your code here


@pytest.mark.parametrize("check", [check_cosine_nearest, check_bsq_max_error])
def test_stubs_raise_not_implemented(check):
    with pytest.raises(NotImplementedError):
        check(stub, verbose=False)


def test_accepts_a_cosine_lookup_and_the_librarys_agrees(capsys):
    assert check_cosine_nearest(lambda z, codes: (F.normalize(z, dim=1) @ F.normalize(codes, dim=1).t()).argmax(1))
    assert capsys.readouterr().out == "Correct!\n"
    z, codes = next(cosine_cases())
    vq = VectorQuantizer(len(codes), codes.shape[1], l2_normalize=True)
    with torch.no_grad():
        vq.codebook.copy_(codes)
    indices = vq.encode(z.float().view(len(z), -1, 1, 1).contiguous()).flatten()
    assert check_cosine_nearest(lambda z_, c_: indices if len(z_) == len(z) else
                                (F.normalize(z_, dim=1) @ F.normalize(c_, dim=1).t()).argmax(1), verbose=False)


def test_rejects_the_nearest_code_by_distance_with_its_hint():
    with pytest.raises(Incorrect, match="nearest codes by distance"):
        check_cosine_nearest(lambda z, codes: torch.cdist(z, codes).argmin(1), verbose=False)


def test_the_bound_is_reached_and_never_exceeded_by_bsq_itself():
    for num_bits in (2, 6, 16):
        bsq = BSQ(num_bits)
        u = F.normalize(torch.randn(1, num_bits, 64, 64, generator=torch.Generator().manual_seed(num_bits)), dim=1)
        error = ((bsq(u).z_q - u) ** 2).sum(1)
        assert float(error.max()) <= reference_bsq_max_error(num_bits) + 1e-6
    assert check_bsq_max_error(lambda L: 2 - 2 / math.sqrt(L))


@pytest.mark.parametrize("wrong", [lambda L: 2.0, lambda L: 2 - 2 / L, lambda L: 1 - 1 / math.sqrt(L)])
def test_rejects_wrong_bounds(wrong):
    with pytest.raises(Incorrect):
        check_bsq_max_error(wrong, verbose=False)


WRONG_UNDER_O = {
    "check_cosine_nearest": [("lambda z, codes: torch.cdist(z, codes).argmin(1)", "nearest codes by distance")],
    "check_bsq_max_error": [("lambda L: 2.0", "is not the largest distance")],
}


def test_checks_fail_under_python_O():
    rejects_under_python_O("ch11", WRONG_UNDER_O)
