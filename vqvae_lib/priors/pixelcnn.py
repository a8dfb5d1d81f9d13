"""Autoregressive priors over code grids: masked convolutions and the gated PixelCNN.

A code grid ``indices: (B, H, W)`` is modelled in raster order,
p(z) = prod_ij p(z_ij | z_<ij), with logits ``(B, K, H, W)`` where position (i, j) sees only
positions before it. The gated PixelCNN (van den Oord et al. 2016) splits the receptive field
into a vertical stack (rows above) and a horizontal stack (left in the same row), which removes
the blind spot of a plain stack of masked 3x3 convolutions.

Sampling is cached by default (in the spirit of Fast PixelCNN++, Ramachandran et al. 2017): the
vertical stack of a row is computed once when the row is complete, and each new position computes
only its own horizontal stack, from small caches, instead of a full pass over the grid.

A class-conditional prior's class embedding has one more row, the null class (row 0), trained with
probability ``label_dropout`` in place of the label; ``labels=None`` samples from it, and
``sample(..., guidance=w)`` applies classifier-free guidance (:mod:`vqvae_lib.priors.base`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import PretrainedMixin, register_to_config
from .base import DEFAULT_LABEL_DROPOUT, AutoregressivePrior, check_label_dropout, class_rows, draw


class MaskedConv2d(nn.Conv2d):
    """A k x k convolution whose weights after the centre (raster order) are zeroed.

    Type "A" also zeroes the centre (first layer: a position must not see itself);
    type "B" keeps it (later layers: the centre holds only the past already).
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int = 3):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PlainPixelCNN(nn.Module):
    """A plain stack of masked convolutions over an index grid (has the blind spot).

    indices: (B, H, W) -> logits (B, K, H, W).
    """

    def __init__(self, num_codes: int, hidden_channels: int = 32, num_layers: int = 6):
        super().__init__()
        self.embed = nn.Embedding(num_codes, hidden_channels)
        layers = [MaskedConv2d("A", hidden_channels, hidden_channels)]
        for _ in range(num_layers - 1):
            layers += [nn.ReLU(), MaskedConv2d("B", hidden_channels, hidden_channels)]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(hidden_channels, num_codes, 1))

    def forward(self, indices):
        return self.net(self.embed(indices).permute(0, 3, 1, 2))


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b) over the two halves of the channels."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer with a vertical and a horizontal stack.

    v: (B, C, H, W), the vertical stack: at row i it has seen rows <= i (any column within reach).
    h: (B, C, H, W), the horizontal stack: at (i, j) it has seen (i, <j) (first layer) or (i, <=j),
       plus the vertical stack shifted down one row, i.e. rows < i.
    class_embed: (num_classes + 1) rows of 2C, row 0 the null class (:func:`~vqvae_lib.priors.base.class_rows`).
    """

    def __init__(self, channels: int, kernel_size: int, first: bool, num_classes: int | None):
        super().__init__()
        k = kernel_size
        self.k, self.first = k, first
        # vertical: (k//2 + 1) x k kernel over rows i - k//2 .. i
        self.v_conv = nn.Conv2d(channels, 2 * channels, (k // 2 + 1, k))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        # horizontal: 1 x (k//2 + 1) kernel over columns j - k//2 .. j; the first layer drops column j
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, k // 2 + 1))
        if first:
            mask = torch.ones(1, k // 2 + 1)
            mask[0, -1] = 0
            self.register_buffer("h_mask", mask)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.class_embed = nn.Embedding(num_classes + 1, 2 * channels) if num_classes else None  # +null

    def forward(self, v, h, labels=None):
        k = self.k
        v_pre = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))
        # shift down one row: horizontal position (i, j) may only use vertical features of row i - 1
        v_shift = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]
        w = self.h_conv.weight * self.h_mask if self.first else self.h_conv.weight
        h_pre = F.conv2d(F.pad(h, (k // 2, 0, 0, 0)), w, self.h_conv.bias) + self.v_to_h(v_shift)
        if self.class_embed is not None:  # labels None (or -1): the null class's row
            c = self.class_embed(class_rows(labels, v.shape[0], v.device))[:, :, None, None]
            v_pre, h_pre = v_pre + c, h_pre + c
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new if self.first else h + h_new

    # ---- cached sampling: the same layer, one row (vertical) or one position (horizontal) at a time
    def vertical_row(self, window, c=None):
        """The vertical stack at one row i, from this layer's cached vertical inputs above it.

        window: (B, C, k//2 + 1, W + 2 * (k//2)), the layer's vertical input on rows i - k//2 .. i,
        zero-padded as in forward. c: (B, 2C) class embedding or None. Returns the next layer's
        vertical input at row i, (B, C, W), and ``v_to_h`` of this row, (B, W, 2C): what the
        horizontal stack of row i + 1 adds (forward's shifted ``v_to_h(v_shift)``).
        """
        v_pre = self.v_conv(window)                                    # (B, 2C, 1, W)
        to_h = self.v_to_h(v_pre)[:, :, 0].transpose(1, 2).contiguous()
        if c is not None:
            v_pre = v_pre + c[:, :, None, None]
        return gate(v_pre)[:, :, 0], to_h

    def step_weights(self):
        """The horizontal stack's weights as matrices for :meth:`step`: (w_h, b_h, w_out, b_out).

        w_h: (2C, taps * C) over a channels-last window of taps columns; the first layer's masked
        column j is dropped (taps = k//2), the others keep it (taps = k//2 + 1).
        """
        w = self.h_conv.weight[:, :, 0]                                # (2C, C, k//2 + 1)
        if self.first:
            w = w[:, :, :-1]
        w_h = w.permute(0, 2, 1).reshape(w.shape[0], -1)
        return w_h, self.h_conv.bias, self.h_out.weight.flatten(1), self.h_out.bias

    def step(self, window, h, to_h, c, weights):
        """The horizontal stack at one position (i, j).

        window: (B, taps, C), this layer's horizontal input at columns j - k//2 .. j of row i
        (first layer: .. j - 1), channels last. h: (B, C), the input at (i, j), for the residual
        (None for the first layer). to_h: (B, 2C), ``v_to_h`` of row i - 1 at column j. c: (B, 2C)
        or None. weights: :meth:`step_weights`. Returns the layer's horizontal output at (i, j), (B, C).
        """
        w_h, b_h, w_out, b_out = weights
        h_pre = F.linear(window.reshape(window.shape[0], -1), w_h, b_h) + to_h
        if c is not None:
            h_pre = h_pre + c
        h_new = F.linear(gate(h_pre), w_out, b_out)
        return h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module, AutoregressivePrior, PretrainedMixin):
    """Gated PixelCNN prior over code grids (input checks, ``nll``, ``bits_per_code`` and ``training_step``
    from :class:`~vqvae_lib.priors.base.AutoregressivePrior`).

    forward(indices: (B, H, W) long, labels: (B,) long | None) -> logits (B, K, H, W); a label of -1 (or
      labels None) is the null class. sample(n, shape=(h, w), labels, guidance=w) -> (n, h, w) long, drawn
      code by code in raster order. label_dropout: the probability that a training example's label is
      replaced by the null class (class-conditional priors only).
    """

    @register_to_config
    def __init__(self, num_codes: int, hidden_channels: int = 64, num_layers: int = 8,
                 num_classes: int | None = None, kernel_size: int = 3,
                 label_dropout: float = DEFAULT_LABEL_DROPOUT):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        self.label_dropout = check_label_dropout(label_dropout)
        self.num_codes, self.num_classes = num_codes, num_classes
        self.embed = nn.Embedding(num_codes, hidden_channels)
        self.layers = nn.ModuleList(GatedLayer(hidden_channels, kernel_size, i == 0, num_classes)
                                    for i in range(num_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(),
                                  nn.Conv2d(hidden_channels, num_codes, 1))

    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(indices, labels)
        x = self.embed(indices).permute(0, 3, 1, 2)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], labels: torch.Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               cache: bool = True, *, guidance: float = 0.0) -> torch.Tensor:
        """Draw n grids of the given (h, w) in raster order. Returns (n, h, w) long.

        labels: a class or (n,) classes; None on a class-conditional prior samples the null class (the
        unconditional model). guidance: w >= 0, with labels; each code is drawn from softmax(((1 + w) *
        logits(. | y) - w * logits(. | null)) / temperature), both logits from one pass over a doubled
        batch; w = 0 is plain conditional sampling (one pass, the same codes as without guidance).
        cache=True computes per position only what that position changes (a row's vertical stack
        once, then one position's horizontal stack per layer); cache=False runs the whole network on
        the whole grid once per position. Both draw the same codes for the same generator.
        """
        device = next(self.parameters()).device
        h, w, labels = self.check_sample_args(n, shape, labels, temperature, device, guidance)
        was_training = self.training
        self.eval()
        try:
            if cache:
                rows = self.null_doubled(labels, guidance)  # (n,), or guided (2n,)

                def choose(logits, i, j):  # logits (len(rows), K) -> a code for every row
                    codes = draw(self.guided(logits, guidance), temperature, generator)
                    return codes.repeat(2) if guidance else codes  # a grid and its null copy agree
                return self._raster_cached(2 * n if guidance else n, (h, w), rows, choose)[:n]
            return self._sample_naive(n, (h, w), labels, temperature, generator, guidance=guidance)
        finally:
            self.train(was_training)

    def _sample_naive(self, n, shape, labels, temperature, generator, rows=None, guidance=0.0):
        """The uncached path: a full forward pass per position (over the doubled batch when guided).
        rows: stop after that many rows (the benchmark times the first rows of a large grid; every step
        costs the same full pass)."""
        h, w = shape
        grid = torch.zeros(n, h, w, dtype=torch.long, device=self.embed.weight.device)
        for i in range(h if rows is None else min(rows, h)):
            for j in range(w):
                logits = self(*self.with_null(grid, labels, guidance))[:, :, i, j]
                grid[:, i, j] = draw(self.guided(logits, guidance), temperature, generator)
        return grid

    def _head_step(self, x):
        """The head (ReLU, 1x1 conv, ReLU, 1x1 conv) at one position: (B, C) -> logits (B, K)."""
        for module in self.head:
            x = F.linear(x, module.weight.flatten(1), module.bias) if isinstance(module, nn.Conv2d) else module(x)
        return x

    def _raster_cached(self, n, shape, labels, choose):
        """Run the network position by position in raster order, from caches; returns the (n, h, w) grid.

        choose(logits (n, K), i, j) -> codes (n,) picks the code at (i, j): a draw when sampling,
        the given grid's code in teacher forcing (:meth:`_cached_logits`).
        """
        h, w = shape
        p, C, L = self.layers[0].k // 2, self.embed.embedding_dim, len(self.layers)
        ref = self.embed.weight
        rows = class_rows(labels, n, ref.device)  # the null class's row where labels is None or -1
        cs = [layer.class_embed(rows) if layer.class_embed is not None else None for layer in self.layers]
        weights = [layer.step_weights() for layer in self.layers]
        # each layer's vertical input, zero-padded as in forward (p rows above, p columns each side):
        # (n, C, p + h, p + w + p), row i at p + i
        v_in = [ref.new_zeros(n, C, p + h, w + 2 * p) for _ in range(L)]
        # each layer's horizontal input along the current row, channels last, p zero columns on the
        # left: (n, p + w, C), column j at p + j. Columns are written before they are read, so the
        # previous row's values never leak in and the buffers need no reset.
        h_in = [ref.new_zeros(n, p + w, C) for _ in range(L)]
        # v_to_h of the row above; above row 0 forward shifts in zeros, and v_to_h(0) is its bias
        to_h = [layer.v_to_h.bias.expand(n, w, -1) for layer in self.layers]
        grid = torch.zeros(n, h, w, dtype=torch.long, device=ref.device)
        for i in range(h):
            for j in range(w):
                x = None
                for d, layer in enumerate(self.layers):  # d: the layer's depth
                    if d > 0:
                        h_in[d][:, p + j] = x
                    x = layer.step(h_in[d][:, j:j + p + (not layer.first)], x, to_h[d][:, j], cs[d], weights[d])
                grid[:, i, j] = code = choose(self._head_step(x), i, j)
                h_in[0][:, p + j] = self.embed(code)
            if i + 1 < h:  # row i is complete: its vertical stack, layer by layer, for the rows below
                v_in[0][:, :, p + i, p:p + w] = self.embed(grid[:, i]).transpose(1, 2)
                for d, layer in enumerate(self.layers):
                    v_out, to_h[d] = layer.vertical_row(v_in[d][:, :, i:i + p + 1], cs[d])
                    if d + 1 < L:
                        v_in[d + 1][:, :, p + i, p:p + w] = v_out
        return grid

    @torch.no_grad()
    def _cached_logits(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing through the cached sampling path: feed the given grid code by code and collect
        the logits each position sees, (B, K, H, W); equal to ``self(indices, labels)`` up to rounding."""
        self.check_input(indices, labels)
        n, h, w = indices.shape
        logits = indices.new_zeros(n, self.num_codes, h, w, dtype=self.embed.weight.dtype)

        def teacher(step_logits, i, j):
            logits[:, :, i, j] = step_logits
            return indices[:, i, j]
        self._raster_cached(n, (h, w), labels, teacher)
        return logits
