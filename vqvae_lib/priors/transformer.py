"""A decoder-only (GPT-style) transformer prior over code grids, written out in nanoGPT's spirit.

The grid ``indices: (B, H, W)`` is flattened in raster order to T = H * W codes. Slot t of the input holds
the code before it (slot 0 a start token: the class embedding when conditioned) plus the learned position
of code t (a row embedding plus a column embedding, so the model knows the 2-D layout); causal
self-attention lets slot t see slots <= t, i.e. codes < t, so the output at t gives p(z_t | z_<t) and
-log p(z) = sum_t -log p(z_t | z_<t) exactly, as for the PixelCNN.

Sampling draws one code per step. With ``cache=True`` each attention layer keeps the keys and values of
the slots so far (a KV cache), so a step runs the network on one new slot: O(T) work, not O(T^2).
A class-conditional prior's start token of the null class (``labels=None``) is trained too, with
probability ``label_dropout`` in place of the label, for ``sample(..., guidance=w)``
(classifier-free guidance, :mod:`vqvae_lib.priors.base`).
:class:`Block` takes ``causal=False`` for the bidirectional transformer of :mod:`vqvae_lib.priors.maskgit`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import PretrainedMixin, register_to_config
from .base import DEFAULT_LABEL_DROPOUT, AutoregressivePrior, check_label_dropout, class_rows, draw

INIT_STD = 0.02  # GPT-2's initialisation of every linear and embedding weight
MLP_RATIO = 4    # the MLP's hidden width, in multiples of embed_dim (GPT-2's)


class KVCache:
    """The keys and values one attention layer has computed so far: each (B, heads, slots so far, head_dim)."""

    def __init__(self):
        self.k = self.v = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new slots' keys and values (B, heads, new, head_dim); returns all of them so far."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class SelfAttention(nn.Module):
    """Multi-head self-attention: x (B, L, D) -> (B, L, D).

    causal=True: slot t attends to slots <= t (the GPT prior); False: to every slot (MaskGIT).
    With a :class:`KVCache`, x holds only the newest slot (B, 1, D); it attends to the cached slots and
    itself, which are exactly the slots <= t, so no mask is needed.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        self.num_heads, self.dropout, self.causal = num_heads, dropout, causal
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, L, D = x.shape
        # (B, L, 3D) -> three (B, heads, L, head_dim)
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if cache is not None:
            if L != 1 or not self.causal:
                raise ValueError("the KV cache takes one new slot at a time, in a causal model")
            k, v = cache.extend(k, v)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.causal and cache is None)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    """Position-wise feed-forward network: (B, L, D) -> (B, L, D), D -> MLP_RATIO * D -> D with a GELU."""

    def __init__(self, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(embed_dim, MLP_RATIO * embed_dim)
        self.proj = nn.Linear(MLP_RATIO * embed_dim, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attention(norm(x)), then x + mlp(norm(x)). (B, L, D) -> (B, L, D)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = SelfAttention(embed_dim, num_heads, dropout, causal)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cache))
        return x + self.mlp(self.norm2(x))


class GridPositions(nn.Module):
    """Learned 2-D positions: row embedding + column embedding. (height, width) -> (height * width, D),
    in raster order; a grid smaller than (max_height, max_width) uses the first rows and columns."""

    def __init__(self, max_height: int, max_width: int, embed_dim: int):
        super().__init__()
        self.rows = nn.Embedding(max_height, embed_dim)
        self.cols = nn.Embedding(max_width, embed_dim)

    def forward(self, height: int, width: int) -> torch.Tensor:
        device = self.rows.weight.device
        rows = self.rows(torch.arange(height, device=device))
        cols = self.cols(torch.arange(width, device=device))
        return (rows[:, None] + cols[None, :]).reshape(height * width, -1)


class ConditionToken(nn.Module):
    """The extra first slot: a learned start token, or one embedding per class. labels (B,) | None -> (B, 1, D).

    Row 0 is the start token without a class: an unconditional model's only one, and a conditional model's
    null class (labels None, or a label of -1), trained with probability label_dropout in place of the
    label (:meth:`~vqvae_lib.priors.base.GridPrior.training_labels`); class c is row c + 1.
    """

    def __init__(self, num_classes: int | None, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding((num_classes or 0) + 1, embed_dim)

    def forward(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.embed(class_rows(labels, batch, self.embed.weight.device))[:, None]


def init_weights(model: nn.Module, num_layers: int) -> None:
    """GPT-2's initialisation: N(0, INIT_STD) weights, zero biases, and the projections that write into the
    residual stream scaled by 1 / sqrt(2 * num_layers), so the stream's variance does not grow with depth."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = INIT_STD / math.sqrt(2 * num_layers) if name.endswith(".proj") else INIT_STD
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def build_grid_transformer(model: nn.Module, num_tokens: int, max_height: int, max_width: int, embed_dim: int,
                           num_layers: int, num_heads: int, num_classes: int | None, dropout: float,
                           causal: bool, label_dropout: float = DEFAULT_LABEL_DROPOUT) -> None:
    """Give ``model`` the layers of a transformer over a code grid, shared by :class:`TransformerPrior`
    (causal) and the masked prior (bidirectional, one more token: [MASK]): a start/class token (row 0 the
    null class, trained with probability ``label_dropout``), token and 2-D position embeddings,
    ``num_layers`` blocks, a final norm and a head over ``model.num_codes``."""
    model.label_dropout = check_label_dropout(label_dropout)
    model.max_grid = (max_height, max_width)
    model.condition = ConditionToken(num_classes, embed_dim)
    model.code_embed = nn.Embedding(num_tokens, embed_dim)
    model.positions = GridPositions(max_height, max_width, embed_dim)
    model.drop = nn.Dropout(dropout)
    model.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout, causal=causal) for _ in range(num_layers))
    model.norm = nn.LayerNorm(embed_dim)
    model.head = nn.Linear(embed_dim, model.num_codes)
    init_weights(model, num_layers)


class TransformerPrior(nn.Module, AutoregressivePrior, PretrainedMixin):
    """GPT-style prior over code grids of up to (max_height, max_width).

    forward(indices: (B, H, W) long, labels: (B,) long | None) -> logits (B, K, H, W), the logits at (i, j)
    computed from the codes before (i, j) in raster order only; a label of -1 (or labels None) is the null class.
    sample(n, (h, w), labels, temperature, generator, cache=True, guidance=0.0) -> (n, h, w) long.
    label_dropout: the probability that a training example's label is replaced by the null class.
    """

    @register_to_config
    def __init__(self, num_codes: int, max_height: int = 7, max_width: int = 7, embed_dim: int = 64,
                 num_layers: int = 4, num_heads: int = 4, num_classes: int | None = None, dropout: float = 0.0,
                 label_dropout: float = DEFAULT_LABEL_DROPOUT):
        super().__init__()
        self.num_codes, self.num_classes = num_codes, num_classes
        build_grid_transformer(self, num_codes, max_height, max_width, embed_dim, num_layers, num_heads,
                               num_classes, dropout, causal=True, label_dropout=label_dropout)

    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(indices, labels)
        B, height, width = indices.shape
        codes = indices.flatten(1)                                    # (B, T), raster order
        # slot t holds code t - 1 (slot 0 the start token) and the position of code t, the one it predicts
        x = torch.cat([self.condition(labels, B), self.code_embed(codes[:, :-1])], dim=1)
        x = self.drop(x + self.positions(height, width))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))                              # (B, T, K)
        return logits.transpose(1, 2).reshape(B, self.num_codes, height, width)

    def step(self, token: torch.Tensor, position: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """One slot through the network with the KV caches: token (B, 1, D), position (D,) -> logits (B, K)."""
        x = token + position
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache)
        return self.head(self.norm(x))[:, 0]

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], labels: torch.Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               cache: bool = True, *, guidance: float = 0.0) -> torch.Tensor:
        """Draw n grids of shape (h, w), code by code in raster order: (n, h, w) long.

        labels: a class or (n,) classes, for a class-conditional prior; None samples its null class (the
        unconditional model). guidance: w >= 0, with labels; each code is drawn from softmax(((1 + w) *
        logits(. | y) - w * logits(. | null)) / temperature), both from one pass over a doubled batch;
        w = 0 is plain conditional sampling (the same codes, one pass). generator: a CPU generator for the
        draws (None: torch's global one). cache=True runs one new slot per step through the KV caches
        (one cache row per batch row, so the doubled batch needs nothing else); cache=False the whole grid
        per step. Both draw the same codes with the same generator (exactly in float64; in float32 the
        logits agree to rounding).
        """
        device = next(self.parameters()).device
        height, width, labels = self.check_sample_args(n, shape, labels, temperature, device, guidance)
        was_training = self.training
        self.eval()
        try:
            sampler = self._sample_cached if cache else self._sample_naive
            return sampler(n, height, width, labels, temperature, generator, guidance)
        finally:
            self.train(was_training)

    def _sample_naive(self, n, height, width, labels, temperature, generator, guidance=0.0) -> torch.Tensor:
        grid = torch.zeros(n, height, width, dtype=torch.long, device=next(self.parameters()).device)
        for t in range(height * width):
            i, j = divmod(t, width)
            # codes at and after t are still 0, and causality keeps them from affecting position t
            logits = self(*self.with_null(grid, labels, guidance))[:, :, i, j]
            grid[:, i, j] = draw(self.guided(logits, guidance), temperature, generator)
        return grid

    def _sample_cached(self, n, height, width, labels, temperature, generator, guidance=0.0) -> torch.Tensor:
        positions = self.positions(height, width)
        caches = [KVCache() for _ in self.blocks]
        token = self.condition(self.null_doubled(labels, guidance), 2 * n if guidance else n)
        codes = []
        for t in range(height * width):
            codes.append(draw(self.guided(self.step(token, positions[t], caches), guidance), temperature, generator))
            # a guided grid and its null copy continue from the same code
            token = self.code_embed(codes[-1].repeat(2) if guidance else codes[-1])[:, None]
        return torch.stack(codes, dim=1).view(n, height, width)
