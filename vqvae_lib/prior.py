"""What every prior over code grids shares: input checks, sample-argument checks, one draw per position.

A grid prior models code grids ``indices: (B, H, W)`` (long, values in ``[0, num_codes)``), optionally
conditioned on class labels ``(B,)``. :class:`GridPrior` checks inputs and sample arguments the same way
for every prior; :class:`AutoregressivePrior` adds the exact likelihood of a model whose logits at
position t depend only on the codes before t in raster order (the PixelCNN, the transformer):
-log p(z) = sum_t -log p(z_t | z_<t), reported in nats (``nll``) and bits (``bits_per_code``).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .quantize import check_indices


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One code per row from softmax(logits / temperature): logits (B, K) -> (B,) long, on logits' device.

    Drawn on the CPU with ``generator`` (None: torch's global generator, the caller's choice), so the same
    generator gives the same codes on any device. At least float32 (bf16 logits under autocast), and
    float64 stays float64, so two computations of the same logits in float64 draw the same codes.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


class GridPrior:
    """Checks shared by the priors (a mixin for an ``nn.Module`` with ``num_codes`` and ``num_classes``).

    max_grid: the largest (height, width) the model was built for (learned positions), or None (any size:
    convolutions).
    """

    num_codes: int
    num_classes: int | None
    max_grid: tuple[int, int] | None = None

    def input_range(self) -> int:
        """Token ids ``forward`` accepts are ``[0, input_range())``: the codes (a masked prior adds [MASK])."""
        return self.num_codes

    def check_grid(self, height: int, width: int) -> None:
        if self.max_grid is not None and (height > self.max_grid[0] or width > self.max_grid[1]):
            raise ValueError(f"a {height} x {width} grid is larger than the {self.max_grid[0]} x {self.max_grid[1]} "
                             f"grid this {type(self).__name__} was built for (max_height, max_width)")

    def check_labels(self, labels: torch.Tensor | None, batch: int) -> None:
        if labels is None:
            return
        if not self.num_classes:
            raise ValueError("labels given, but this prior was built without num_classes")
        if labels.shape != (batch,) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be ({batch},) in [0, {self.num_classes})")

    def check_input(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """indices: (B, H, W) int64 in [0, input_range()); labels: (B,) in [0, num_classes), or None."""
        if indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError(f"indices must be a (B, H, W) int64 grid, got {tuple(indices.shape)} {indices.dtype}")
        check_indices(indices, self.input_range())
        self.check_grid(*indices.shape[1:])
        self.check_labels(labels, indices.shape[0])

    def check_sample_args(self, n: int, shape, labels, temperature: float,
                          device: torch.device) -> tuple[int, int, torch.Tensor | None]:
        """Validate ``sample``'s arguments; returns (height, width, labels as (n,) long on device, or None).

        n >= 1; shape a (height, width) pair of positive whole numbers within the grid built for;
        temperature > 0; labels (a class, or one per sample) only for a class-conditional prior.
        """
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive whole number of samples, got {n!r}")
        if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)):
            raise ValueError(f"shape must be (height, width), two positive whole numbers, got {shape!r}")
        height, width = int(shape[0]), int(shape[1])
        self.check_grid(height, width)
        if not temperature > 0:  # also refuses NaN
            raise ValueError(f"temperature must be positive, got {temperature}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device)
            if labels.dim() > 1 or labels.numel() not in (1, n):
                raise ValueError(f"labels must be one class or one per sample ({n},), got {tuple(labels.shape)}")
            labels = labels.expand(n).contiguous()
        self.check_labels(labels, n)
        return height, width, labels


class AutoregressivePrior(GridPrior):
    """A grid prior whose logits at position t depend only on the codes before t (raster order), so the
    cross-entropy of ``forward``'s logits against the grid itself is the exact -log p(z) per code."""

    def nll(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood per code, in nats."""
        return F.cross_entropy(self(indices, labels).float(), indices)

    def bits_per_code(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood per code, in bits (log2 K for a uniform prior)."""
        return self.nll(indices, labels) / math.log(2)

    def training_step(self, batch) -> dict:
        indices, labels = batch[0], batch[1] if self.num_classes else None
        loss = self.nll(indices, labels)
        return {"loss": loss, "bits_per_code": loss / math.log(2)}
