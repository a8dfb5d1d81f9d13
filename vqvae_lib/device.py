"""Where tensors live and in which precision they are computed."""
from __future__ import annotations

import torch


def resolve_device(device=None) -> torch.device:
    """The given device, else CUDA when available, else the CPU."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (unless ``enabled=False``); a no-op on the CPU (float32 throughout)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
