"""Every quantizer a ``VQVAE`` can use, by name: ``VQVAE(quantizer={"kind": "fsq", "levels": [4, 4, 4]})``.

Each kind maps ``z_e: (B, D, H, W)`` to a :class:`~vqvae_lib.quantizers.vq.VQOutput` and has
``num_codes``, ``code_dim``, ``encode(z_e) -> indices (B, H, W)`` and ``lookup(indices) -> (B, D, H, W)``,
so the VQ-VAE, the priors, the command line and the widgets work with any of them.
A builder takes the VQ-VAE's ``num_codes``, ``code_dim`` and ``beta`` and the kind's own options.

One module per quantizer: ``vq`` (chapters 2-5, with the rotation trick and the cosine, low-dimensional
lookup), ``fsq``, ``lfq``, ``residual``, ``gumbel`` (chapter 9), ``simvq``, ``ibq``, ``bsq`` (chapter 11).
"""
from __future__ import annotations

import copy

from .bsq import BSQ
from .fsq import FSQ
from .gumbel import GumbelQuantizer
from .ibq import IBQ
from .lfq import LFQ
from .residual import ResidualVQ
from .simvq import SimVQ
from .vq import VectorQuantizer

DEFAULT_QUANTIZER = "vq"

QUANTIZERS = {
    "vq": lambda num_codes, code_dim, beta, **options: VectorQuantizer(num_codes, code_dim, beta=beta, **options),
    # num_quantizers stages of stage_codes codes: the VQ-VAE's num_codes must be stage_codes ** num_quantizers
    "residual": lambda num_codes, code_dim, beta, **options: ResidualVQ(code_dim=code_dim, beta=beta, **options),
    # beta unused: the Gumbel quantizer has no commitment term (its KL is weighted by its own kl_weight)
    "gumbel": lambda num_codes, code_dim, beta, **options: GumbelQuantizer(num_codes, code_dim, **options),
    # levels fix num_codes = prod(levels), code_dim = len(levels); beta unused (FSQ's range loss has its own
    # range_weight, see vqvae_lib/quantizers/fsq.py), no draws: seed unused
    "fsq": lambda num_codes, code_dim, beta, seed=0, **options: FSQ(**options),
    # num_codes = 2 ** code_dim; nothing drawn: seed unused
    "lfq": lambda num_codes, code_dim, beta, seed=0, **options: LFQ(code_dim, beta=beta, **options),
    # num_codes = 2 ** num_bits (default num_bits = code_dim: no projections)
    "bsq": lambda num_codes, code_dim, beta, **options: BSQ(code_dim, beta=beta, **options),
    "simvq": lambda num_codes, code_dim, beta, **options: SimVQ(num_codes, code_dim, beta=beta, **options),
    "ibq": lambda num_codes, code_dim, beta, **options: IBQ(num_codes, code_dim, beta=beta, **options),
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


COSINE_LOOKUP_DIM = 8  # ViT-VQGAN looks up in 32 of 768 channels; here 8 of the VQ-VAE's 16
SIX_BITS = 64  # codes per latent position in chapter 9's comparison: 6 bits
# Chapter 9's quantizers at 6 bits per latent position, as changes to a preset's VQ-VAE (its encoder and
# decoder otherwise the same): a quantizer that fixes the number of channels sets code_dim too.
MATCHED_BITS = {
    "vq": dict(num_codes=SIX_BITS, quantizer={}),  # plain: no k-means, no restarts, a gradient codebook
    "vq-remedies": dict(num_codes=SIX_BITS, quantizer=dict(ema=True, kmeans_init=True, restart_after=20)),
    "vq-rotation": dict(num_codes=SIX_BITS, quantizer=dict(rotation_trick=True)),
    "fsq": dict(num_codes=SIX_BITS, code_dim=3, quantizer=dict(kind="fsq", levels=[4, 4, 4])),
    "lfq": dict(num_codes=SIX_BITS, code_dim=6, quantizer=dict(kind="lfq")),
    "residual": dict(num_codes=SIX_BITS, quantizer=dict(kind="residual", num_quantizers=2, stage_codes=8,
                                                        kmeans_init=True, restart_after=20)),
    "gumbel": dict(num_codes=SIX_BITS, quantizer=dict(kind="gumbel")),
}
# Chapter 11's codebook fixes, at the same 6 bits and in the same model as chapter 9's
CODEBOOK_FIXES = {
    "vq-cosine": dict(num_codes=SIX_BITS, quantizer=dict(l2_normalize=True, lookup_dim=COSINE_LOOKUP_DIM)),
    "simvq": dict(num_codes=SIX_BITS, quantizer=dict(kind="simvq")),
    "ibq": dict(num_codes=SIX_BITS, quantizer=dict(kind="ibq")),
    "bsq": dict(num_codes=SIX_BITS, code_dim=6, quantizer=dict(kind="bsq")),
}


ALL_MATCHED = {**MATCHED_BITS, **CODEBOOK_FIXES}


def with_quantizer(model_settings: dict, name: str) -> dict:
    """A VQ-VAE's settings (``preset["vqvae"]["model"]``) with chapter 9's or 11's quantizer ``name`` instead."""
    if name not in ALL_MATCHED:
        raise ValueError(f"unknown quantizer {name!r}; known: {', '.join(ALL_MATCHED)}")
    return {**model_settings, **copy.deepcopy(ALL_MATCHED[name])}  # a caller may change the copy

