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


def plot_history(history, keys=None, axes=None):
    """One panel per logged quantity, train (and eval, where logged) against the step. Returns the figure."""
    keys = keys or list(history.train)
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    for ax, k in zip(axes, keys):
        ax.plot(history.train_steps, history.train[k], label="train")
        if k in history.eval:
            ax.plot(history.eval_steps, history.eval[k], "o-", label="test")
        ax.set_title(k)
        ax.set_xlabel("step")
        if k in ("loss", "nmse", "recon", "kl", "commitment", "codebook"):
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    return fig
