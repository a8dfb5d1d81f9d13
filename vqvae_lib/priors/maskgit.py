"""A masked (MaskGIT-style) prior over code grids: a bidirectional transformer that fills in [MASK]ed codes.

MaskGIT (Chang et al. 2022) trains a non-causal transformer to predict a random subset of masked codes
from the rest, the mask ratio drawn from a cosine schedule, and samples by *parallel decoding*: start
from an all-[MASK] grid and, over a few rounds, commit the most confident predictions, the number left
masked after each round following the same cosine schedule.

Its training loss, the mean cross-entropy on the masked positions under cosine-schedule masks
(``masked_nll``), is not itself comparable with the autoregressive priors' bits per code. Two figures are:

- :meth:`MaskedPrior.ordered_bits_per_code`: the network decoding one code per step in one fixed order
  (raster by default) is an autoregressive model, and this is its exact -log2 p(z) per code (T passes).
- :meth:`MaskedPrior.random_order_bits_per_code`: the order-agnostic bound (Uria et al. 2014; Hoogeboom
  et al. 2022), E_sigma[-log p_sigma(z)] over uniformly random decoding orders sigma, an upper bound on
  -log E_sigma p_sigma(z) by Jensen. With m ~ U{1..T} codes masked uniformly at random and the
  cross-entropies of the masked codes summed and weighted by T / m, the same terms MaskGIT trains on are an
  unbiased one-pass estimate of it; MaskGIT's cosine schedule weights them differently.

Both are likelihoods of one-code-per-step decoders built from the network, not of the few-round parallel
sampler, whose distribution has no tractable likelihood.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import PretrainedMixin, register_to_config
from .base import DEFAULT_LABEL_DROPOUT, GridPrior, draw
from .transformer import build_grid_transformer

MASKGIT_CHOICE_TEMPERATURE = 4.5  # MaskGIT's scale of the Gumbel noise on the confidences, annealed to 0
EVAL_MASK_SEED = 0  # eval-mode masks come from a generator seeded with this, so a test loss is repeatable
GUMBEL_EPS = 1e-20  # keeps log(-log(u)) finite when a uniform draw is 0
# The passes of ordered_nll and of sampling run over this many grids at a time: on 2 CPU threads the exact
# likelihood of 500 test grids of 7 x 7 took 5.0 s in batches of 64 against 8.2 s in one batch (the
# activations stay in cache); the logits, and so the draws, are the same.
PASS_BATCH = 64


def cosine_ratio(progress: torch.Tensor | float):
    """MaskGIT's cosine schedule: the fraction of codes masked at ``progress`` in [0, 1] (1 -> 0)."""
    return torch.cos(math.pi / 2 * progress) if torch.is_tensor(progress) else math.cos(math.pi / 2 * progress)


def mask_schedule(step: int, steps: int, total: int) -> int:
    """How many of ``total`` codes are still masked after ``step`` of ``steps`` decoding rounds:
    floor(total * cos(pi/2 * step / steps)); ``total`` at step 0, 0 after the last round."""
    if steps < 1 or not 0 <= step <= steps:
        raise ValueError(f"need steps >= 1 and 0 <= step <= steps, got step {step} of {steps}")
    return 0 if step == steps else math.floor(total * cosine_ratio(step / steps))


def random_mask(batch: int, height: int, width: int, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """MaskGIT's training masks: (batch, height, width) bool, True where a code is hidden.

    Per example r ~ U(0, 1) and max(1, floor(T * cos(pi/2 * r))) of the T positions, chosen uniformly,
    are masked. generator None draws from torch's global RNG (inside :func:`vqvae_lib.training.train.train`, which
    seeds it).
    """
    total = height * width
    r = torch.rand(batch, generator=generator)
    num_masked = (total * cosine_ratio(r)).floor().long().clamp(min=1)
    # a uniformly random subset of num_masked positions: those whose random rank is below num_masked
    ranks = torch.rand(batch, total, generator=generator).argsort(dim=1).argsort(dim=1)
    return (ranks < num_masked[:, None]).view(batch, height, width).to(device)


def uniform_count_mask(batch: int, height: int, width: int, generator: torch.Generator | None = None,
                       device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The order-agnostic bound's masks: m ~ U{1, ..., T} per example, then m of the T positions uniformly.

    Returns (mask (batch, height, width) bool, True where hidden; m (batch,) long). A uniformly random order
    sigma and a uniform step t leave exactly such a set hidden: the codes at sigma(t), ..., sigma(T).
    """
    total = height * width
    num_masked = torch.randint(1, total + 1, (batch,), generator=generator)
    ranks = torch.rand(batch, total, generator=generator).argsort(dim=1).argsort(dim=1)
    return (ranks < num_masked[:, None]).view(batch, height, width).to(device), num_masked.to(device)


def gumbel(shape, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise of ``shape``, drawn on the CPU."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return -torch.log(-torch.log(u + GUMBEL_EPS) + GUMBEL_EPS)


class MaskedPrior(nn.Module, GridPrior, PretrainedMixin):
    """MaskGIT-style prior over code grids of up to (max_height, max_width), with a [MASK] token id num_codes.

    forward(indices: (B, H, W) long in [0, num_codes], num_codes = [MASK]; labels (B,) | None)
      -> logits (B, K, H, W) over the K real codes, every position seeing every other.
    training_step: cross-entropy on the masked positions (``masked_nll``, nats per masked code; not a
      likelihood). sample(n, (h, w), labels, temperature, generator, steps=8, guidance=0.0) -> (n, h, w) long.
    A label of -1 (or labels None) is the null class, trained with probability label_dropout in place of
    the label (classifier-free guidance, :mod:`vqvae_lib.priors.base`).
    """

    @register_to_config
    def __init__(self, num_codes: int, max_height: int = 7, max_width: int = 7, embed_dim: int = 64,
                 num_layers: int = 4, num_heads: int = 4, num_classes: int | None = None, dropout: float = 0.0,
                 label_dropout: float = DEFAULT_LABEL_DROPOUT):
        super().__init__()
        self.num_codes, self.num_classes = num_codes, num_classes
        self.mask_id = num_codes
        build_grid_transformer(self, num_codes + 1, max_height, max_width, embed_dim, num_layers, num_heads,  # +[MASK]
                               num_classes, dropout, causal=False, label_dropout=label_dropout)

    def input_range(self) -> int:
        return self.num_codes + 1  # the codes and [MASK]

    def check_codes(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """A grid of codes to score: (B, H, W) int64 in [0, num_codes), no [MASK]."""
        self.check_input(indices, labels)
        if (indices == self.mask_id).any():
            raise ValueError(f"indices to score must be codes in [0, {self.num_codes}); "
                             f"{self.mask_id} is [MASK]")

    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(indices, labels)
        B, height, width = indices.shape
        x = self.drop(self.code_embed(indices.flatten(1)) + self.positions(height, width))
        # the condition (class, or the start token) is one more slot that every position attends to
        x = torch.cat([self.condition(labels, B), x], dim=1)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x[:, 1:]))                      # (B, T, K), condition slot dropped
        return logits.transpose(1, 2).reshape(B, self.num_codes, height, width)

    def masked_nll(self, indices: torch.Tensor, mask: torch.Tensor,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats) of the codes at the masked positions, given the others.

        indices: (B, H, W) codes; mask: (B, H, W) bool, True where hidden. Averaged over masked codes, as
        MaskGIT trains; :meth:`random_order_bits_per_code` weights the same terms into a likelihood bound.
        """
        self.check_codes(indices, labels)
        logits = self(indices.masked_fill(mask, self.mask_id), labels)
        return F.cross_entropy(logits.float().permute(0, 2, 3, 1)[mask], indices[mask])

    def training_step(self, batch) -> dict:
        """MaskGIT's loss on a batch (indices (B, H, W), labels (B,)): ``masked_nll`` under random masks.

        Training (``train()``) draws the masks from torch's global RNG, which :func:`vqvae_lib.training.train.train`
        seeds around its loop (as for the VAE's noise), so a run is reproducible. In eval mode
        (:func:`vqvae_lib.training.train.evaluate`) the masks come from a generator seeded with EVAL_MASK_SEED on
        every call: a test loss is repeatable and the global RNG is not touched. Training also drops each
        label to the null class with probability label_dropout (:meth:`GridPrior.training_labels`, drawn
        after the masks); eval mode keeps every label.
        The loss is not comparable with bits per code: compare priors with :meth:`ordered_bits_per_code`
        or :meth:`random_order_bits_per_code`.
        """
        indices = batch[0]
        self.check_input(indices)  # before random_mask, which would fail on a wrong shape with a TypeError
        generator = None if self.training else torch.Generator().manual_seed(EVAL_MASK_SEED)
        mask = random_mask(*indices.shape, generator=generator, device=indices.device)
        loss = self.masked_nll(indices, mask, self.training_labels(batch))
        return {"loss": loss, "masked_nll": loss}

    def batched_logits(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``self(indices, labels)``, PASS_BATCH grids at a time: (B, h, w) -> logits (B, K, h, w)."""
        return torch.cat([self(indices[i:i + PASS_BATCH], None if labels is None else labels[i:i + PASS_BATCH])
                          for i in range(0, len(indices), PASS_BATCH)])

    @torch.no_grad()
    def ordered_nll(self, indices: torch.Tensor, labels: torch.Tensor | None = None,
                    order: torch.Tensor | None = None) -> torch.Tensor:
        """Exact -log p(z) in nats per grid (B,) of decoding one code per step in ``order``.

        order: (T,) a permutation of the raster positions 0..T-1 (default: raster order). Step t sees the
        codes at order[:t] and [MASK] elsewhere and predicts the code at order[t]: a product of normalised
        conditionals, so exp(-ordered_nll) sums to 1 over all grids. T forward passes.
        """
        self.check_codes(indices, labels)
        B, height, width = indices.shape
        total = height * width
        order = torch.arange(total) if order is None else order
        if sorted(order.tolist()) != list(range(total)):
            raise ValueError(f"order must be a permutation of the {total} grid positions")
        codes = indices.flatten(1)
        seen = torch.full_like(codes, self.mask_id)
        nll = torch.zeros(B, dtype=torch.float64, device=indices.device)
        for t in order.tolist():
            logits = self.batched_logits(seen.view(B, height, width), labels).flatten(2)[:, :, t]  # (B, K)
            nll -= F.log_softmax(logits.double(), dim=1).gather(1, codes[:, t:t + 1]).squeeze(1)
            seen[:, t] = codes[:, t]
        return nll

    def ordered_bits_per_code(self, indices: torch.Tensor, labels: torch.Tensor | None = None,
                              order: torch.Tensor | None = None) -> torch.Tensor:
        """Mean exact -log2 p(z) per code of one-code-per-step decoding in ``order`` (default raster):
        comparable with the autoregressive priors' ``bits_per_code``."""
        return self.ordered_nll(indices, labels, order).mean() / (indices[0].numel() * math.log(2))

    @torch.no_grad()
    def masked_nats(self, indices: torch.Tensor, mask: torch.Tensor,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per grid (B,) float64: the summed -log p(z_i | visible codes) over the masked positions i.

        indices: (B, H, W) codes; mask: (B, H, W) bool, True where hidden. One pass (PASS_BATCH at a time).
        """
        self.check_codes(indices, labels)
        logits = self.batched_logits(indices.masked_fill(mask, self.mask_id), labels)  # (B, K, H, W)
        nats = -F.log_softmax(logits.double(), dim=1).gather(1, indices[:, None]).squeeze(1)  # (B, H, W)
        return (nats * mask).flatten(1).sum(1)

    def random_order_bits_per_code(self, indices: torch.Tensor, labels: torch.Tensor | None = None,
                                   samples: int = 1, generator: torch.Generator | None = None) -> dict:
        """The order-agnostic bound in bits per code, by Monte Carlo: {"bits_per_code", "std_error"}.

        Estimates E_sigma[-log2 p_sigma(z)] / T averaged over the grids ``indices: (B, H, W)``, sigma a
        uniformly random decoding order: per grid and draw, m ~ U{1..T} codes are masked uniformly at
        random and T / m times the masked codes' summed -log p (:meth:`masked_nats`) is an unbiased
        estimate of the grid's E_sigma[-log p_sigma(z)]. ``samples`` draws per grid, one pass each, averaged
        per grid first; std_error is the standard error of the mean over the B grids (the draws of one grid
        share its variance, so they are not independent of each other). generator: the CPU generator of the
        masks (None: one seeded with EVAL_MASK_SEED, so the figure is repeatable).
        """
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be a positive whole number of draws per grid, got {samples!r}")
        self.check_codes(indices, labels)
        generator = generator or torch.Generator().manual_seed(EVAL_MASK_SEED)
        B, height, width = indices.shape
        total = height * width
        estimates = []
        for _ in range(samples):
            mask, num_masked = uniform_count_mask(B, height, width, generator, indices.device)
            estimates.append(self.masked_nats(indices, mask, labels) * total / num_masked)
        bits = torch.stack(estimates).mean(0).cpu() / (total * math.log(2))  # (B,): per code, per grid
        std_error = float(bits.std() / math.sqrt(B)) if B > 1 else math.nan
        return {"bits_per_code": float(bits.mean()), "std_error": std_error}

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], labels: torch.Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None, *, steps: int = 8,
               choice_temperature: float = MASKGIT_CHOICE_TEMPERATURE,
               on_round: Callable[[int, torch.Tensor], None] | None = None,
               guidance: float = 0.0) -> torch.Tensor:
        """Draw n grids of shape (h, w) by parallel decoding in ``steps`` rounds: (n, h, w) long.

        labels: a class or (n,) classes; None on a class-conditional prior decodes with its null class (the
        unconditional model). guidance: w >= 0, with labels: every round predicts from the logits
        (1 + w) * logits(. | y) - w * logits(. | null), both from one pass over a doubled batch, and draws
        and scores its candidates under them; w = 0 is plain conditional decoding (the same codes).

        Each round predicts every masked position, draws a candidate code for each (softmax at
        ``temperature``, with ``generator``), scores it by its log-probability plus Gumbel noise scaled by
        choice_temperature * (1 - (s + 1) / steps) (MaskGIT's annealing; 0 turns the noise off), and
        commits the most confident ones, leaving mask_schedule(s + 1, steps, h * w) masked. A committed
        code never changes. on_round(s, grid (n, h, w)) is called after each round (num_codes = [MASK]).
        """
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive whole number of decoding rounds, got {steps!r}")
        if choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0, got {choice_temperature}")
        device = next(self.parameters()).device
        height, width, labels = self.check_sample_args(n, shape, labels, temperature, device, guidance)
        was_training = self.training
        self.eval()
        try:
            grid = torch.full((n, height, width), self.mask_id, dtype=torch.long, device=device)
            for s in range(steps):
                noise = choice_temperature * (1 - (s + 1) / steps)
                grid = self.decode_round(grid, labels, mask_schedule(s + 1, steps, height * width),
                                         temperature, noise, generator, guidance)
                if on_round is not None:
                    on_round(s, grid.clone())
            return grid
        finally:
            self.train(was_training)

    def decode_round(self, grid: torch.Tensor, labels, keep_masked: int, temperature: float, noise: float,
                     generator, guidance: float = 0.0) -> torch.Tensor:
        """One round of parallel decoding: grid (n, h, w) with [MASK]s -> the grid with all but
        ``keep_masked`` positions per grid filled; the committed codes are left as they are. guidance > 0:
        the guided logits of a doubled batch (the grid under its labels, then under the null class)."""
        n = grid.shape[0]
        flat = grid.flatten(1)
        masked = flat == self.mask_id                                              # (n, T)
        logits = self.guided(self.batched_logits(*self.with_null(grid, labels, guidance)), guidance)
        logits = logits.flatten(2).transpose(1, 2)[masked]                         # (masked, K)
        candidates = draw(logits, temperature, generator)                          # (masked,)
        log_p = F.log_softmax(logits.double() / temperature, dim=1).gather(1, candidates[:, None]).squeeze(1)
        confidence = torch.full(masked.shape, math.inf, dtype=torch.float64, device=grid.device)
        confidence[masked] = log_p + noise * gumbel(log_p.shape, generator).to(grid.device) if noise else log_p
        # the keep_masked least confident stay masked; committed positions (+inf) are never chosen
        stay = torch.zeros_like(masked)
        stay.scatter_(1, confidence.argsort(dim=1, stable=True)[:, :keep_masked], True)
        filled = torch.zeros_like(flat).masked_scatter_(masked, candidates)
        return torch.where(masked & ~stay, filled, flat).view(n, *grid.shape[1:])
