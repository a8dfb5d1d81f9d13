"""Where an image's energy sits in frequency: the radially averaged power spectrum, and how much of the
originals' high-frequency energy a set of reconstructions keeps.

A squared-error decoder that cannot tell which of several sharp images it should draw outputs their mean,
and a mean of sharp images is a blurred one: the blur shows as missing power at high spatial frequencies.
Frequencies are in cycles per pixel, from 0 to the Nyquist limit 0.5 along each axis.
"""
from __future__ import annotations

import torch

# cycles per pixel: the band [0.25, 0.5] of frequency-vector lengths (0.5 is the Nyquist limit along an axis; the
# corners of the 2-D spectrum beyond it, up to 0.5 * sqrt 2, are left out, as in the radial spectrum's plot)
HIGH_FREQUENCY_CUTOFF = 0.25
NYQUIST = 0.5


def _check_images(images: torch.Tensor, what: str) -> None:
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"{what} must be a non-empty batch (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floats (got {images.dtype}); convert uint8 images with x.float() / 255")


def power_spectrum_2d(images: torch.Tensor) -> torch.Tensor:
    """images: (N, C, H, W) -> power (H, W): |FFT2|^2 / (H W) of each mean-free channel, averaged over N and C.

    Normalised so that ``power.sum()`` is the mean over images and channels of the channel's sum of
    squared deviations from its mean (Parseval's theorem). Index [0, 0] is the zero frequency.
    """
    _check_images(images, "images")
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)  # the mean (zero frequency) is not detail
    h, w = x.shape[-2:]
    return (torch.fft.fft2(x).abs() ** 2).mean(dim=(0, 1)) / (h * w)


def frequency_radius(h: int, w: int) -> torch.Tensor:
    """(H, W): the length of each FFT bin's frequency vector in cycles per pixel (0 to 0.5 * sqrt 2)."""
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def radial_power_spectrum(images: torch.Tensor, num_bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images: (N, C, H, W) -> (frequency (F,), power (F,)): the mean power per FFT bin in F rings of equal width
    from 0 to 0.5 cycles per pixel (default F = min(H, W) // 2); the corners past 0.5 are left out."""
    power = power_spectrum_2d(images)
    h, w = power.shape
    num_bins = num_bins or min(h, w) // 2
    radius = frequency_radius(h, w)
    ring = torch.floor(radius / 0.5 * num_bins).long()
    keep = (ring < num_bins) & (radius > 0)
    total = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, ring[keep], power[keep])
    count = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, ring[keep], torch.ones_like(power[keep]))
    centres = (torch.arange(num_bins, dtype=torch.float64) + 0.5) * 0.5 / num_bins
    filled = count > 0
    return centres[filled], total[filled] / count[filled]


def high_frequency_energy(images: torch.Tensor, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Mean power per image and channel at frequency vectors of length in [cutoff, 0.5] cycles per pixel."""
    if not 0 < cutoff <= NYQUIST:
        raise ValueError(f"cutoff is a frequency in cycles per pixel in (0, 0.5], got {cutoff}")
    power = power_spectrum_2d(images)
    radius = frequency_radius(*power.shape)
    return float(power[(radius >= cutoff) & (radius <= NYQUIST)].sum())


def high_frequency_energy_ratio(reconstructions: torch.Tensor, originals: torch.Tensor,
                                cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """reconstructions, originals: (N, C, H, W) -> the reconstructions' high-frequency energy over the originals'.

    1 keeps the originals' power in the band. It measures power, not detail: noise or artefacts raise it (above 1
    is possible), and lost contrast lowers it as blur does.
    """
    _check_images(reconstructions, "reconstructions")
    if reconstructions.shape != originals.shape:
        raise ValueError(f"reconstructions {tuple(reconstructions.shape)} and originals {tuple(originals.shape)} "
                         f"must have the same shape")
    return high_frequency_energy(reconstructions, cutoff) / high_frequency_energy(originals, cutoff)


def grid_harmonics(h: int, w: int, period: int) -> torch.Tensor:
    """(H, W) bool: the FFT bins whose two frequency components are both multiples of 1 / period cycles per pixel,
    the zero frequency left out: where a pattern repeating every ``period`` pixels puts all its power."""
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    on_y = torch.isclose(torch.remainder(fy * period + 0.5, 1.0), torch.tensor(0.5, dtype=torch.float64))
    on_x = torch.isclose(torch.remainder(fx * period + 0.5, 1.0), torch.tensor(0.5, dtype=torch.float64))
    mask = on_y[:, None] & on_x[None, :]
    mask[0, 0] = False
    return mask


def grid_harmonic_power_ratio(reconstructions: torch.Tensor, originals: torch.Tensor, period: int) -> float:
    """The reconstructions' power at the harmonics of a ``period``-pixel grid (:func:`grid_harmonics`) over the
    originals' there: how strongly a decoder imprints its code grid (one code per period x period pixels)."""
    if reconstructions.shape != originals.shape:
        raise ValueError(f"reconstructions {tuple(reconstructions.shape)} and originals {tuple(originals.shape)} "
                         f"must have the same shape")
    recon, data = power_spectrum_2d(reconstructions), power_spectrum_2d(originals)
    mask = grid_harmonics(*recon.shape, period)
    return float(recon[mask].sum() / data[mask].sum())
