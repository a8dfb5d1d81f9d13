"""Images for the visualizers: tensors -> uint8 arrays -> PNG bytes for ``ipywidgets.Image``.

PNG bytes straight from PIL (a few milliseconds) keep slider-to-image latency low; matplotlib
is used only where a plot needs axes, and then on a kept :class:`~matplotlib.figure.Figure`.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

WHITE, RED, ORANGE, BLUE = (255, 255, 255), (220, 40, 40), (255, 150, 0), (40, 110, 255)


def code_colors(num_codes: int) -> np.ndarray:
    """(K, 3) floats in [0, 1]: one color per code index from matplotlib's categorical ``tab20``, repeated
    cyclically for K > 20. A code index is a name, not a quantity: neighbouring indices must not look alike,
    as they would in a sequential map (viridis, turbo)."""
    from matplotlib import colormaps

    palette = np.asarray(colormaps["tab20"].colors, dtype=float)
    return palette[np.arange(num_codes) % len(palette)]


def to_rgb(images: torch.Tensor) -> np.ndarray:
    """images: (N, C, H, W) or (C, H, W) float in [0, 1], C = 1 or 3 -> uint8 (N, H, W, 3) or (H, W, 3)."""
    single = images.dim() == 3
    x = images[None] if single else images
    x = x.detach().float().cpu().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    out = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return out[0] if single else out


def upscale(array: np.ndarray, factor: int, batch: bool = False) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W, ...) array, or (N, H, W, ...) with ``batch``:
    pixels stay crisp squares."""
    a = int(batch)
    return array.repeat(factor, a).repeat(factor, a + 1)


def tile(arrays: np.ndarray, ncol: int | None = None, pad: int = 2, fill=WHITE) -> np.ndarray:
    """arrays: (N, H, W, 3) uint8 -> one (rows*(H+pad)+pad, ncol*(W+pad)+pad, 3) mosaic."""
    n, h, w, _ = arrays.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.empty((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), np.uint8)
    out[:] = fill
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arrays[i]
    return out


def tile_origin(i: int, h: int, w: int, ncol: int, pad: int = 2) -> tuple[int, int]:
    """Top-left (y, x) of tile i in a :func:`tile` mosaic."""
    r, c = divmod(i, ncol)
    return pad + r * (h + pad), pad + c * (w + pad)


def font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def png(array: np.ndarray | Image.Image) -> bytes:
    """uint8 (H, W, 3) array or PIL image -> PNG bytes (fast compression: latency matters more than size)."""
    im = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def figure_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure -> PNG bytes (no display side effects: the figure is not a pyplot one)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure that pyplot does not track, so the notebook never shows it by itself."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw(array: np.ndarray) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.fromarray(array)
    return im, ImageDraw.Draw(im)


def dashed_rectangle(pen: ImageDraw.ImageDraw, box, fill, dash: int = 5, width: int = 1) -> None:
    """Outline box = [x0, y0, x1, y1] with dashes of ``dash`` pixels."""
    x0, y0, x1, y1 = (int(v) for v in box)
    for xa in range(x0, x1 + 1, 2 * dash):
        xb = min(xa + dash - 1, x1)
        pen.line([xa, y0, xb, y0], fill=fill, width=width)
        pen.line([xa, y1, xb, y1], fill=fill, width=width)
    for ya in range(y0, y1 + 1, 2 * dash):
        yb = min(ya + dash - 1, y1)
        pen.line([x0, ya, x0, yb], fill=fill, width=width)
        pen.line([x1, ya, x1, yb], fill=fill, width=width)
