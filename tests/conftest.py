import os

import pytest
import torch

from vqvae_lib import VQVAE

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)  # CI's machine; also keeps timings comparable


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


SMALL_VQVAE_CODES = 16


@pytest.fixture(scope="module")
def vqvae():
    """An untrained VQ-VAE with 16 codes of size 4, for tests of shapes and wiring."""
    torch.manual_seed(0)
    return VQVAE(num_codes=SMALL_VQVAE_CODES, code_dim=4, hidden_channels=16, res_channels=8,
                 num_res_layers=1).eval()
