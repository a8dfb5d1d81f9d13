"""Matplotlib figures: image grids, originals beside reconstructions, codebook usage, loss curves."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """images: (N, C, H, W) in [0, 1] -> one (H', W', C) or (H', W') numpy array for imshow."""
    from torchvision.utils import make_grid
    images = images.detach().float().cpu().clamp(0, 1)
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = make_grid(images, nrow=nrow, padding=pad, pad_value=1.0)
    return (grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)).numpy()


def show_images(images: torch.Tensor, title: str = "", nrow: int | None = None, ax=None):
    """Show (N, C, H, W) images in [0, 1] as one grid. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image_grid(images, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return ax


def show_reconstructions(x: torch.Tensor, x_recon: torch.Tensor, n: int = 8, title: str = ""):
    """Originals (top row) above their reconstructions (bottom row). Returns the figure."""
    n = min(n, len(x))
    fig, axes = plt.subplots(2, 1, figsize=(n, 2.4))
    show_images(x[:n], "original", nrow=n, ax=axes[0])
    show_images(x_recon[:n], "reconstruction", nrow=n, ax=axes[1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_codebook_usage(counts: torch.Tensor, title: str = "codebook usage", ax=None):
    """Bar chart of how often each code is used, sorted from most to least used. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5))
    counts = counts.detach().cpu().float()
    ax.bar(range(len(counts)), counts.sort(descending=True).values, width=1.0)
    ax.set_xlabel("code (sorted by usage)")
    ax.set_ylabel("count")
    used = int((counts > 0).sum())
    ax.set_title(f"{title}: {used}/{len(counts)} codes used")
    return ax


# What each logged quantity is, for the y-axis: (label with unit, log scale?). Keys are the output
# fields that the models' training_step logs.
HISTORY_AXES = {
    "loss": ("training loss", True),
    "recon_loss": ("reconstruction (NMSE)", True),
    "commitment_loss": ("mean (z_e − e)² per element", True),
    "codebook_loss": ("mean (z_e − e)² per element", True),
    "perplexity": ("perplexity (codes)", False),
    "kl": ("KL (nats per image)", True),
    "bits_per_code": ("bits per code", False),
    "masked_nll": ("nats per masked code (not a likelihood)", False),
}


def plot_history(history, keys=None, axes=None, title: str | None = None):
    """One panel per logged quantity against the step: train batches and, where logged, the eval split.

    The perplexity of a training batch and of the test split are different estimators (a batch sees
    fewer positions, so fewer codes); the legend says which is which. ``title`` goes above the panels,
    clear of their labels (constrained layout). Returns the figure.
    """
    keys = keys or list(history.train)
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False,
                                 layout="constrained")
        axes = axes[0]
    else:
        fig = axes[0].figure
    for ax, k in zip(axes, keys):
        label, log = HISTORY_AXES.get(k, (k, False))
        ax.plot(history.train_steps, history.train[k], label="training batch")
        if k in history.eval:
            ax.plot(history.eval_steps, history.eval[k], "o-", label="whole test split")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


def code_colormap(num_codes: int):
    """A categorical colour map for code indices: neighbouring indices get unrelated colours, since
    code 7 is no closer to code 8 than to code 50 (viridis or turbo would suggest an order)."""
    from matplotlib.colors import ListedColormap
    base = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    return ListedColormap([base[i % len(base)] for i in range(num_codes)], name=f"codes{num_codes}")


def show_codes(indices: torch.Tensor, num_codes: int, ax=None, title: str = "", annotate: bool | None = None):
    """Draw one (h, w) grid of code indices in a categorical colour map, with the indices written in
    small grids (annotate=None: when h, w <= 8). Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    grid = indices.detach().cpu()
    ax.imshow(grid, cmap=code_colormap(num_codes), vmin=-0.5, vmax=num_codes - 0.5, interpolation="nearest")
    h, w = grid.shape
    if annotate if annotate is not None else max(h, w) <= 8:
        for i in range(h):
            for j in range(w):
                ax.text(j, i, int(grid[i, j]), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    ax.axis("off")
    return ax


SPECTRUM_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5)


def plot_power_spectra(image_sets: dict, ax=None, cutoff: float | None = None):
    """The radially averaged power spectrum (:func:`vqvae_lib.evaluation.spectrum.radial_power_spectrum`) of each
    {label: (N, C, H, W) images in [0, 1]}, on log axes; ``cutoff`` draws the high-frequency band's edge.
    Returns the axes."""
    from .evaluation.spectrum import radial_power_spectrum

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, images in image_sets.items():
        freqs, power = radial_power_spectrum(images.detach().float().cpu())
        ax.loglog(freqs, power, "o-", markersize=3, label=label)
    if cutoff is not None:
        ax.axvline(cutoff, color="grey", linestyle=":", label=f"{cutoff} cycles/pixel")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.set_xticks(SPECTRUM_TICKS)  # the log axis' default labels (3x10^-1, 4x10^-1) run together
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("spatial frequency (cycles per pixel)")
    ax.set_ylabel("mean power per FFT bin\n(pixel values in [0, 1])²")
    ax.legend(fontsize=8)
    return ax
