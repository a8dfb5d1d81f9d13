"""Residual vector quantisation (Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec", algorithm 1).

A stack of Q :class:`~vqvae_lib.quantizers.vq.VectorQuantizer` stages of K codes each. Stage 0 quantises the
encoder output, every later stage what the stages before it left over:

    r_0 = z_e,   i_s = nearest code of r_s in codebook s,   e_s = codebook_s[i_s],   r_{s+1} = r_s - e_s
    z_q = e_0 + e_1 + ... + e_{Q-1}

so Q small codebooks describe K^Q distinct vectors at the cost of storing Q * K.

The priors of the book (PixelCNN, transformer, masked prior) read one index grid (B, H, W). This quantizer
therefore reports the JOINT index, the mixed-radix number of the stage indices with stage 0 the least
significant digit, i = i_0 + K i_1 + K^2 i_2 + ..., and ``num_codes = K ** Q``: the priors model the
joint index as one categorical variable, so 2 stages of 8 codes are 64 joint codes to them (a prior does
not see that joint codes sharing a stage-0 digit share a vector part). :meth:`ResidualVQ.stage_indices`
splits a joint grid into its digits (B, Q, H, W), :meth:`ResidualVQ.joint_indices` composes them.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from ..seeding import stream_seed
from .vq import VectorQuantizer, VQOutput, check_indices, check_z_e, perplexity_from_counts

# The joint index space K^Q is what the priors' embeddings and logits and the usage counts are as wide as:
# beyond this many joint codes a prior over the joint index is not a sensible model.
MAX_JOINT_CODES = 2 ** 20
# What the ResidualVQ sets itself on every stage; the rest of VectorQuantizer's arguments may be passed through.
STAGE_OWN_ARGS = ("num_codes", "code_dim", "beta")
# Stage options that would be silently ignored: the sum's gradient goes to z_e straight through, not through
# the stages' own z_q.
UNSUPPORTED_STAGE_OPTIONS = ("rotation_trick",)
STAGE_OPTIONS = tuple(name for name in inspect.signature(VectorQuantizer.__init__).parameters
                      if name not in ("self", *STAGE_OWN_ARGS, *UNSUPPORTED_STAGE_OPTIONS))


class ResidualVQ(nn.Module):
    """Residual VQ (Zeghidour et al. 2021): ``num_quantizers`` VectorQuantizer stages of ``stage_codes`` codes.

    z_e: (B, D, H, W) -> VQOutput with
      z_q: (B, D, H, W), value the sum of the stages' codes, gradient passed straight through to z_e
        unchanged (d z_q / d z_e = identity, as for one VectorQuantizer);
      indices: (B, H, W) long, the JOINT index sum_s K^s i_s in [0, K^Q) (stage 0 the least significant digit);
      codebook_loss, commitment_loss: the SUMS over the stages of each stage's loss on its own residual
        (stage s: ||sg[r_s] - e_s||^2 and ||r_s - sg[e_s]||^2, means over the elements); summed, not averaged,
        so every stage's codebook and the encoder get the gradient a lone VectorQuantizer would give them;
      loss: the sum of the stages' ``loss`` (codebook_loss + beta * commitment_loss, or beta * commitment_loss
        with ``ema=True``);
      perplexity: of the joint indices, between 1 and K^Q;
      terms: ``stage{s}_perplexity`` for every stage s.

    The residual r_s = z_e - sg[e_0 + ... + e_{s-1}] keeps its gradient to z_e, so each stage's commitment
    loss pulls the encoder towards the sum of the codes up to that stage.
    ``vq_options`` (ema, decay, eps, kmeans_init, restart_after, seed, ...) go to every stage; k-means
    initialisation then clusters each stage's first residuals. Stage s's codebook draws come from the seed
    ``stream_seed(seed, s)``, so the stages start from different codes.
    """

    @register_to_config
    def __init__(self, num_quantizers: int, stage_codes: int, code_dim: int, beta: float = 0.25, **vq_options):
        super().__init__()
        if num_quantizers < 1 or stage_codes < 1 or code_dim < 1:
            raise ValueError(f"num_quantizers, stage_codes and code_dim must be positive, got "
                             f"{num_quantizers}, {stage_codes}, {code_dim}")
        if stage_codes ** num_quantizers > MAX_JOINT_CODES:
            raise ValueError(f"{num_quantizers} stages of {stage_codes} codes make {stage_codes ** num_quantizers} "
                             f"joint codes, more than the {MAX_JOINT_CODES} a prior over the joint index can model")
        unsupported = sorted(set(vq_options) & set(UNSUPPORTED_STAGE_OPTIONS))
        if unsupported:
            raise ValueError(f"ResidualVQ does not take {unsupported}: the gradient of z_q is passed straight "
                             f"through to z_e, not through each stage's own estimator")
        unknown = sorted(set(vq_options) - set(STAGE_OPTIONS))
        if unknown:
            raise ValueError(f"unknown stage options {unknown}; a stage takes {', '.join(STAGE_OPTIONS)}")
        self.num_quantizers, self.stage_codes, self.code_dim, self.beta = num_quantizers, stage_codes, code_dim, beta
        self.num_codes = stage_codes ** num_quantizers
        options = {k: v for k, v in vq_options.items() if k != "seed"}
        seed = vq_options.get("seed", 0)
        self.stages = nn.ModuleList(
            VectorQuantizer(stage_codes, code_dim, beta=beta, seed=stream_seed(seed, s), **options)
            for s in range(num_quantizers))
        # digit s of a joint index has weight K^s
        self.register_buffer("radix", stage_codes ** torch.arange(num_quantizers), persistent=False)

    @property
    def config(self) -> dict:
        return self._config

    @config.setter
    def config(self, value: dict) -> None:
        """Flatten the captured ``vq_options`` into the config, so that ``ResidualVQ(**config)`` rebuilds it."""
        value = dict(value)
        options = value.pop("vq_options", {})
        self._config = {**value, **options}

    def stage_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Joint indices (B, H, W) long -> the stages' indices (B, Q, H, W), digit s = (i // K^s) mod K."""
        check_indices(indices, self.num_codes)
        if indices.dim() != 3:
            raise ValueError(f"indices must be (B, H, W), got {tuple(indices.shape)}")
        return torch.div(indices[:, None], self.radix[:, None, None], rounding_mode="floor") % self.stage_codes

    def joint_indices(self, stage_indices: torch.Tensor) -> torch.Tensor:
        """The stages' indices (B, Q, H, W) long, each in [0, K) -> joint indices (B, H, W), sum_s K^s i_s."""
        if stage_indices.dim() != 4 or stage_indices.shape[1] != self.num_quantizers:
            raise ValueError(f"stage indices must be (B, {self.num_quantizers}, H, W), "
                             f"got {tuple(stage_indices.shape)}")
        check_indices(stage_indices, self.stage_codes, "stage indices")
        return (stage_indices * self.radix[:, None, None]).sum(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Joint indices (B, H, W) long -> the sum of the stages' codes (B, D, H, W)."""
        digits = self.stage_indices(indices)
        z_q = self.stages[0].lookup(digits[:, 0])
        for s in range(1, self.num_quantizers):
            z_q = z_q + self.stages[s].lookup(digits[:, s])  # the order of forward's sum: the same bits
        return z_q

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> joint indices (B, H, W) long, stage by stage on the residuals (no update)."""
        check_z_e(z_e, self.code_dim)
        residual, digits = z_e.float(), []
        for stage in self.stages:
            idx = stage.encode(residual)
            residual = residual - stage.lookup(idx)
            digits.append(idx)
        return self.joint_indices(torch.stack(digits, 1))

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        check_z_e(z_e, self.code_dim)
        # float32 even under autocast, as VectorQuantizer: bf16 residuals would flip the later stages' argmins
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            residual, codes, outs = z, None, []
            for stage in self.stages:
                out = stage(residual)
                # this stage's codes, detached: the codebooks learn from their own codebook losses only
                e = stage.lookup(out.indices).detach()
                codes = e if codes is None else codes + e
                residual = residual - e  # the next stage's input, still with its gradient to z_e
                outs.append(out)
            # value: exactly the sum of the codes (z - z.detach() is 0); gradient: the identity to z_e
            z_q = codes + (z - z.detach())
            indices = self.joint_indices(torch.stack([out.indices for out in outs], 1))
            counts = torch.bincount(indices.flatten(), minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage, as VectorQuantizer's
            codebook_loss = torch.stack([out.codebook_loss for out in outs]).sum()
            commitment_loss = torch.stack([out.commitment_loss for out in outs]).sum()
            loss = torch.stack([out.loss for out in outs]).sum()
        terms = {f"stage{s}_perplexity": out.perplexity for s, out in enumerate(outs)}
        return VQOutput(z_q.to(z_e.dtype), indices, codebook_loss, commitment_loss, loss,
                        perplexity_from_counts(counts), terms)
