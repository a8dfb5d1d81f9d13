"""Trained models for the chapters: train with a preset, or reuse a matching run saved under ``root``.

Training is seeded, so a reused run equals a fresh one; chapters stay runnable on their own.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cli import train_prior, train_vqvae
from .pixelcnn import GatedPixelCNN
from .presets import get_preset
from .vqvae import VQVAE


def _matches(directory: Path, preset: str, data: str) -> bool:
    meta = directory / "metrics.json"
    if not meta.exists():
        return False
    m = json.loads(meta.read_text())
    return m.get("preset") == preset and m.get("data") == data


def trained_vqvae(preset: str | None = None, data: str | None = None, root="runs", progress: bool = True):
    """(VQVAE, metrics dict) for the preset; trains on first use, then loads ``root/<preset>-<data>/vqvae``."""
    p = get_preset(preset)
    data = data or p["data"]
    out = Path(root) / f"{p['name']}-{Path(data).name}" / "vqvae"
    if not _matches(out, p["name"], data):
        train_vqvae(data, p["name"], out, progress=progress)
    return VQVAE.from_pretrained(out), json.loads((out / "metrics.json").read_text())


def trained_prior(preset: str | None = None, data: str | None = None, root="runs", progress: bool = True):
    """(GatedPixelCNN, metrics dict) fitted to the codes of :func:`trained_vqvae`'s model."""
    p = get_preset(preset)
    data = data or p["data"]
    trained_vqvae(p["name"], data, root, progress)
    base = Path(root) / f"{p['name']}-{Path(data).name}"
    out = base / "prior"
    if not _matches(out, p["name"], data):
        train_prior(base / "vqvae", p["name"], out, data=data, progress=progress)
    return GatedPixelCNN.from_pretrained(out), json.loads((out / "metrics.json").read_text())
