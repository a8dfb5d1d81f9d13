"""What every prior over code grids shares: input checks, sample-argument checks, one draw per position,
the null class and classifier-free guidance.

A grid prior models code grids ``indices: (B, H, W)`` (long, values in ``[0, num_codes)``), optionally
conditioned on class labels ``(B,)``. :class:`GridPrior` checks inputs and sample arguments the same way
for every prior; :class:`AutoregressivePrior` adds the exact likelihood of a model whose logits at
position t depend only on the codes before t in raster order (the PixelCNN, the transformer):
-log p(z) = sum_t -log p(z_t | z_<t), reported in nats (``nll``) and bits (``bits_per_code``).

A class-conditional prior also learns a **null class** (label :data:`NULL_LABEL`, what ``labels=None``
means): in training each label is replaced by it with probability ``label_dropout``
(:meth:`GridPrior.training_labels`), as in classifier-free guidance (Ho and Salimans, 2022), so the same
network is an unconditional prior too. Sampling with ``guidance=w`` draws from the logits
(1 + w) * logits(z | y) - w * logits(z | null) (:func:`guide`): w = 0 is plain conditional sampling.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ..quantizers.vq import check_indices

# The null class: a label of -1 in a batch given to ``forward`` means "no label" for that row, as
# ``labels=None`` means for every row. A class table with a null class keeps it in row 0, class c in c + 1.
NULL_LABEL = -1
# A class-conditional prior's default probability of training on the null class instead of the label.
# Ho and Salimans (2022) found 0.1 and 0.2 equally good for guided samples and 0.5 worse (ImageNet 64 x 64):
# the unconditional model needs little of the capacity. The smaller keeps 90 % of the examples conditional,
# so the conditional model, the one a labelled sample uses, loses least: under ci the PixelCNN's test bits
# per code given the label moved by less than 0.002 against label_dropout=0 (chapter 6 measures it), and
# 0.2 cost 0.02 bits per code for a null class barely better at sampling (Fréchet ratio 0.32 against 0.34).
DEFAULT_LABEL_DROPOUT = 0.1


def check_label_dropout(label_dropout: float) -> float:
    """``label_dropout`` as a float in [0, 1), or a ValueError (1 would never train on a label)."""
    if (not isinstance(label_dropout, numbers.Real) or isinstance(label_dropout, bool)
            or not 0 <= label_dropout < 1):  # also refuses NaN
        raise ValueError(f"label_dropout must be a probability in [0, 1), got {label_dropout!r}")
    return float(label_dropout)


def class_rows(labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """Each row's index into a class table whose row 0 is the null class: label + 1, and 0 for
    ``NULL_LABEL`` or ``labels=None`` (every row null). (B,) long on ``device``."""
    if labels is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return labels + 1


def guide(logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on a doubled batch: logits (2B, K, ...), the B conditional rows first, then
    the same B rows under the null class -> (B, K, ...) = (1 + w) * conditional - w * null, w = ``guidance``.

    In at least float32 (the difference of two large bf16 logits would lose the small one), float64 kept.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    conditional, null = logits.chunk(2)
    return (1 + guidance) * conditional - guidance * null


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
    label_dropout: float = 0.0
    max_grid: tuple[int, int] | None = None

    def input_range(self) -> int:
        """Token ids ``forward`` accepts are ``[0, input_range())``: the codes (a masked prior adds [MASK])."""
        return self.num_codes

    def check_grid(self, height: int, width: int) -> None:
        if self.max_grid is not None and (height > self.max_grid[0] or width > self.max_grid[1]):
            raise ValueError(f"a {height} x {width} grid is larger than the {self.max_grid[0]} x {self.max_grid[1]} "
                             f"grid this {type(self).__name__} was built for (max_height, max_width)")

    def check_labels(self, labels: torch.Tensor | None, batch: int, null: bool = False) -> None:
        """labels: None, or (batch,) classes in [0, num_classes); with ``null``, NULL_LABEL allowed too."""
        if labels is None:
            return
        if not self.num_classes:
            raise ValueError("labels given, but this prior was built without num_classes")
        low = NULL_LABEL if null else 0
        if labels.shape != (batch,) or labels.min() < low or labels.max() >= self.num_classes:
            also = f" (or {NULL_LABEL}, the null class)" if null else ""
            raise ValueError(f"labels must be ({batch},) in [0, {self.num_classes}){also}")

    def check_input(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """indices: (B, H, W) int64 in [0, input_range()); labels: (B,) in [0, num_classes) or NULL_LABEL
        (the null class, per row), or None (the null class for every row of a class-conditional prior)."""
        if indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError(f"indices must be a (B, H, W) int64 grid, got {tuple(indices.shape)} {indices.dtype}")
        if indices.shape[0] == 0:  # the mean loss over no grid would be a silent NaN
            raise ValueError(f"the batch is empty (shape {tuple(indices.shape)}): pass at least one grid")
        check_indices(indices, self.input_range())
        self.check_grid(*indices.shape[1:])
        self.check_labels(labels, indices.shape[0], null=True)

    def training_labels(self, batch) -> torch.Tensor | None:
        """The labels a training step conditions on: None for a prior without num_classes; else the batch's
        labels ``batch[1]`` (B,), each replaced by NULL_LABEL with probability ``label_dropout`` in training
        mode (classifier-free guidance's training, so that the null class learns the unconditional model).

        The draws come from torch's global RNG, on the CPU (the same on any device), which
        :func:`vqvae_lib.training.train.train` seeds around its loop; none is made in eval mode (a test loss is
        computed with every label) or when label_dropout is 0 (the run is the one without a null class).
        """
        if not self.num_classes:
            return None
        labels = batch[1]
        if not self.training or not self.label_dropout:
            return labels
        dropped = torch.rand(labels.shape) < self.label_dropout
        return labels.masked_fill(dropped.to(labels.device), NULL_LABEL)

    def check_sample_args(self, n: int, shape, labels, temperature: float, device: torch.device,
                          guidance: float = 0.0) -> tuple[int, int, torch.Tensor | None]:
        """Validate ``sample``'s arguments; returns (height, width, labels as (n,) long on device, or None).

        n >= 1; shape a (height, width) pair of positive whole numbers within the grid built for;
        temperature > 0; labels (a class, or one per sample) only for a class-conditional prior (None: the
        null class, the unconditional model); guidance a finite w >= 0, and w > 0 only with labels.
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
        self.check_guidance(guidance, labels)
        return height, width, labels

    def check_guidance(self, guidance: float, labels: torch.Tensor | None) -> None:
        """Guidance is a finite number w >= 0; w > 0 needs a class-conditional prior and labels to steer to.
        A class-conditional prior trained with label_dropout=0 has no trained null class to sample from
        (labels None) or to guide against."""
        if (not isinstance(guidance, numbers.Real) or isinstance(guidance, bool)
                or not math.isfinite(guidance) or guidance < 0):
            raise ValueError(f"guidance must be a finite number >= 0 (0: no guidance), got {guidance!r}")
        if guidance and not self.num_classes:
            raise ValueError("guidance needs a class-conditional prior (num_classes); this one has no classes")
        if guidance and labels is None:
            raise ValueError("guidance needs labels: it steers the samples towards their class, away from "
                             "the null class")
        if self.num_classes and not self.label_dropout and (labels is None or guidance):
            # its null class never trained: what the issue saw, strokes no better than random codes
            raise ValueError("this prior was trained without a null class (label_dropout=0): sample it with "
                             "labels and no guidance")

    @staticmethod
    def null_doubled(labels: torch.Tensor | None, guidance: float) -> torch.Tensor | None:
        """The labels of a guided step's batch: ``labels`` (B,) as they are when guidance is 0; else (2B,),
        the labels, then as many NULL_LABELs (the rows :func:`guide` takes apart)."""
        return torch.cat([labels, torch.full_like(labels, NULL_LABEL)]) if guidance else labels

    def with_null(self, indices: torch.Tensor, labels: torch.Tensor | None, guidance: float):
        """The batch a guided step runs: (indices (B, ...), labels) as they are when guidance is 0; else
        both doubled, (2B, ...), the second copy under the null class (:meth:`null_doubled`)."""
        return (torch.cat([indices, indices]) if guidance else indices), self.null_doubled(labels, guidance)

    @staticmethod
    def guided(logits: torch.Tensor, guidance: float) -> torch.Tensor:
        """``logits`` as they are when guidance is 0 (the unguided draw, exactly); else :func:`guide`."""
        return guide(logits, guidance) if guidance else logits


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
        """The mean -log p(z | y) of a batch (indices (B, H, W), labels (B,)), the labels dropped to the
        null class with probability label_dropout in training (:meth:`GridPrior.training_labels`)."""
        indices, labels = batch[0], self.training_labels(batch)
        loss = self.nll(indices, labels)
        return {"loss": loss, "bits_per_code": loss / math.log(2)}
