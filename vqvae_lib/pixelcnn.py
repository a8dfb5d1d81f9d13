"""Autoregressive priors over code grids: masked convolutions and the gated PixelCNN.

A code grid ``indices: (B, H, W)`` is modelled in raster order,
p(z) = prod_ij p(z_ij | z_<ij), with logits ``(B, K, H, W)`` where position (i, j) sees only
positions before it. The gated PixelCNN (van den Oord et al. 2016) splits the receptive field
into a vertical stack (rows above) and a horizontal stack (left in the same row), which removes
the blind spot of a plain stack of masked 3x3 convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PretrainedMixin, register_to_config
from .prior import AutoregressivePrior


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
        self.class_embed = nn.Embedding(num_classes, 2 * channels) if num_classes else None

    def forward(self, v, h, labels=None):
        k = self.k
        v_pre = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))
        # shift down one row: horizontal position (i, j) may only use vertical features of row i - 1
        v_shift = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]
        w = self.h_conv.weight * self.h_mask if self.first else self.h_conv.weight
        h_pre = F.conv2d(F.pad(h, (k // 2, 0, 0, 0)), w, self.h_conv.bias) + self.v_to_h(v_shift)
        if self.class_embed is not None and labels is not None:
            c = self.class_embed(labels)[:, :, None, None]
            v_pre, h_pre = v_pre + c, h_pre + c
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module, AutoregressivePrior, PretrainedMixin):
    """Gated PixelCNN prior over code grids (input checks, ``nll``, ``bits_per_code`` and ``training_step``
    from :class:`~vqvae_lib.prior.AutoregressivePrior`).

    forward(indices: (B, H, W) long, labels: (B,) long | None) -> logits (B, K, H, W).
    sample(n, shape=(h, w)) -> (n, h, w) long, drawn code by code in raster order.
    """

    @register_to_config
    def __init__(self, num_codes: int, hidden_channels: int = 64, num_layers: int = 8,
                 num_classes: int | None = None, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
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
               temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n grids of the given (h, w) in raster order. Returns (n, h, w) long."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = next(self.parameters()).device
        h, w = shape
        grid = torch.zeros(n, h, w, dtype=torch.long, device=device)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).expand(n).contiguous()
        was_training = self.training
        self.eval()
        for i in range(h):
            for j in range(w):
                probs = torch.softmax(self(grid, labels)[:, :, i, j].float() / temperature, dim=1)
                grid[:, i, j] = torch.multinomial(probs.cpu() if generator is not None else probs, 1,
                                                  generator=generator).squeeze(1).to(device)
        self.train(was_training)
        return grid
