"""The power spectrum of chapter 10: Parseval's identity, a cosine's single ring, blur removing high frequencies."""
import math

import pytest
import torch
import torch.nn.functional as F

from vqvae_lib.evaluation.spectrum import (
    frequency_radius,
    grid_harmonic_power_ratio,
    grid_harmonics,
    high_frequency_energy,
    high_frequency_energy_ratio,
    power_spectrum_2d,
    radial_power_spectrum,
)


def test_the_spectrum_sums_to_the_squared_deviations():
    # Parseval: sum_k |X_k|^2 / (HW) = sum_n (x_n - mean)^2, exactly up to float64 rounding
    x = torch.rand(5, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    deviations = ((x.double() - x.double().mean(dim=(-2, -1), keepdim=True)) ** 2).sum(dim=(-2, -1)).mean()
    assert float(power_spectrum_2d(x).sum()) == pytest.approx(float(deviations), rel=1e-12)


def test_a_cosine_puts_all_its_power_in_one_ring():
    size, k = 32, 5  # k cycles across the image: frequency k / size cycles per pixel
    col = torch.arange(size, dtype=torch.float64)
    x = torch.cos(2 * math.pi * k * col / size).expand(size, size)[None, None].clone()
    freqs, power = radial_power_spectrum(x)
    peak = int(power.argmax())
    assert abs(float(freqs[peak]) - k / size) <= 0.5 / len(freqs) / 2 + 1e-12
    assert float(power[peak]) / float(power.sum()) > 0.999


def test_blur_lowers_the_high_frequency_ratio_and_identity_keeps_it_at_one():
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert high_frequency_energy_ratio(x, x) == pytest.approx(1.0, abs=1e-12)
    # a 3x3 box filter's gain at 0.25 cycles per pixel along one axis is (1 + 2 cos(pi / 2)) / 3 = 1/3
    assert high_frequency_energy_ratio(blurred, x) < 1 / 3


def test_the_radius_is_zero_only_at_the_origin_and_reaches_nyquist():
    r = frequency_radius(8, 8)
    assert float(r[0, 0]) == 0 and int((r == 0).sum()) == 1
    assert float(r[4, 0]) == pytest.approx(0.5)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(0, 3, 8, 8), "non-empty"),
    (torch.zeros(3, 8, 8), r"\(N, C, H, W\)"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floats"),
])
def test_bad_images_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        power_spectrum_2d(bad)


def test_mismatched_shapes_and_a_bad_cutoff_are_refused():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        high_frequency_energy_ratio(x, x[:1])
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_energy_ratio(x, x, cutoff=0.7)


def test_the_band_stops_at_nyquist_and_leaves_the_corners_out():
    # a checkerboard's power is all at (0.5, 0.5), length 0.71: outside [0.25, 0.5]; stripes at 0.5 are inside
    i = torch.arange(8, dtype=torch.float64)
    checkerboard = ((i[:, None] + i[None, :]) % 2)[None, None]
    stripes = (i[None, :] % 2).expand(8, 8)[None, None].clone()
    assert high_frequency_energy(checkerboard) == 0
    assert high_frequency_energy(stripes) == pytest.approx(float(power_spectrum_2d(stripes).sum()))


def test_a_pattern_of_period_four_lies_on_the_grid_harmonics():
    g = torch.Generator().manual_seed(2)
    tile = torch.rand(3, 4, 4, generator=g, dtype=torch.float64)
    pattern = tile.repeat(1, 8, 8)[None]  # (1, 3, 32, 32), repeating every 4 pixels
    power = power_spectrum_2d(pattern)
    on = grid_harmonics(32, 32, 4)
    assert int(on.sum()) == 4 * 4 - 1
    assert float(power[on].sum()) == pytest.approx(float(power.sum()), rel=1e-12)
    noise = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    assert grid_harmonic_power_ratio(noise + pattern, noise, 4) > 1
