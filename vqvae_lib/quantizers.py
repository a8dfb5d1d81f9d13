"""Every quantizer a ``VQVAE`` can use, by name: ``VQVAE(quantizer={"kind": "fsq", "levels": [4, 4, 4]})``.

Each kind maps ``z_e: (B, D, H, W)`` to a :class:`~vqvae_lib.quantize.VQOutput` and has
``num_codes``, ``code_dim``, ``encode(z_e) -> indices (B, H, W)`` and ``lookup(indices) -> (B, D, H, W)``,
so the VQ-VAE, the priors, the command line and the widgets work with any of them.
A builder takes the VQ-VAE's ``num_codes``, ``code_dim`` and ``beta`` and the kind's own options.
"""
from __future__ import annotations

from .quantize import VectorQuantizer

DEFAULT_QUANTIZER = "vq"

QUANTIZERS = {
    "vq": lambda num_codes, code_dim, beta, **options: VectorQuantizer(num_codes, code_dim, beta=beta, **options),
}


def build_quantizer(num_codes: int, code_dim: int, beta: float, options: dict | None = None):
    """The quantizer ``options["kind"]`` (default "vq") with the rest of ``options``; it must model
    exactly ``num_codes`` codes of ``code_dim`` channels, else a ValueError says what it models."""
    options = dict(options or {})
    kind = options.pop("kind", DEFAULT_QUANTIZER)
    if kind not in QUANTIZERS:
        raise ValueError(f"unknown quantizer kind {kind!r}; known: {', '.join(sorted(QUANTIZERS))}")
    quantizer = QUANTIZERS[kind](num_codes, code_dim, beta, **options)
    if (quantizer.num_codes, quantizer.code_dim) != (num_codes, code_dim):
        raise ValueError(f"the {kind} quantizer with {options} has {quantizer.num_codes} codes of "
                         f"{quantizer.code_dim} channels, but the VQ-VAE has num_codes={num_codes}, "
                         f"code_dim={code_dim}")
    return quantizer
