"""Checks of the image batches the models are given, shared so that every model refuses a wrong batch the
same way: early, before any computation, with a message that says what to pass instead (rather than a
RuntimeError from deep inside a convolution, or a silent NaN loss).
"""
from __future__ import annotations

import torch


def check_images(x: torch.Tensor, channels: int, dtype: torch.dtype) -> None:
    """Raise ValueError unless x is a non-empty, finite (B, channels, H, W) batch of floats of ``dtype``.

    dtype: the model's parameter dtype (float32 unless the model was converted). A batch of another float
    dtype is refused, not cast: float64 images nearly always come from a numpy array divided by 255, and
    casting them silently would hide that the data path makes float copies twice the size needed, and
    would hand float32 results back for float64 input. PyTorch's own layers refuse mixed dtypes too; the
    message says how to convert. Under autocast the input stays at the parameter dtype, so this still holds.
    """
    if x.dim() != 4:
        hint = ": one image? add the batch dimension with x[None]" if x.dim() == 3 else ""
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"the batch is empty (shape {tuple(x.shape)}): pass at least one image")
    if not x.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got {x.dtype}: convert 8-bit images with "
                         f"x.float() / 255")
    if x.dtype != dtype:
        raise ValueError(f"images must be {dtype}, the dtype of the model's weights, got {x.dtype}: "
                         f"convert them with x.to({dtype})")
    if x.shape[1] != channels:
        raise ValueError(f"expected {channels} channel(s), the model's in_channels, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError("input contains NaN or infinite values")
