"""The identity of book/notation.md: the library's mean-based loss times CHW equals the summed form,
with the quantiser's terms weighted by CHW / (hwD)."""
import pytest
import torch

from vqvae_lib import VQVAE


@pytest.mark.parametrize("code_dim", [4, 16])
def test_mean_loss_times_pixels_is_the_summed_loss(code_dim):
    model = VQVAE(num_codes=8, code_dim=code_dim, hidden_channels=8, res_channels=4, num_res_layers=1,
                  data_variance=0.2, beta=0.25)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = model(x)
    z_e = model.encode_continuous(x)
    e = model.quantizer.lookup(out.vq.indices)
    C, H, W = x.shape[1:]
    _, D, h, w = z_e.shape
    sq = (z_e - e).pow(2).sum()  # the codebook and the commitment sum have the same value
    summed = (x - out.x_recon).pow(2).sum() / 0.2 + C * H * W / (h * w * D) * (sq + 0.25 * sq)
    assert torch.allclose(C * H * W * out.loss, summed, rtol=1e-5)
