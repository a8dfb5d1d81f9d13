"""The Gumbel-softmax quantizer: a categorical posterior over the codes, relaxed so that it can be trained
by backpropagation (Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax"; Maddison et al.
2017, "The Concrete Distribution"), as in the discrete VAE of DALL-E (Ramesh et al. 2021, section 2.1).

Gumbel-max trick: with g_k = -log(-log u_k), u_k ~ Uniform(0, 1), argmax_k (l_k + g_k) is an exact sample of
the categorical q_k = softmax(l)_k. Gumbel-softmax replaces the argmax by softmax((l + g) / tau): a point of
the simplex, differentiable in l, that tends to the one-hot sample as the temperature tau -> 0. Its gradient
is a biased estimate of the gradient of E_{k~q}[f(k)]; :func:`gumbel_gradient_bias` measures the bias.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from ..seeding import generator as seeded_generator
from .vq import VQOutput, check_indices, check_z_e, perplexity_from_counts

# The codes start as nn.Embedding's do (the dVAE of taming-transformers' GumbelQuantize uses one): N(0, 1).
CODEBOOK_INIT_STD = 1.0
# The KL weight: taming-transformers' GumbelQuantize (from Karpathy's deep-vector-quantization) uses 5e-4;
# on mnist-5k with the ci VQ-VAE and 64 codes that left 3 codes in use after 500 steps, this kept 59 of 64
# (test NMSE 0.18 against 0.23). A larger KL weight keeps q(k|x) broad, and the codebook in use, as DALL-E
# found (Ramesh et al. 2021, section 2.1: raising it "promotes better codebook usage").
DEFAULT_KL_WEIGHT = 0.05


def gumbel_noise(shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel draws g = -log(-log u), u ~ Uniform(0, 1), float32 of ``shape``.

    generator: a CPU generator (the draw is made on the CPU, then moved to ``device``); None draws from torch's
    global RNG on ``device``. u is kept above the smallest normal float so that both logarithms stay finite.
    """
    if generator is not None:
        u = torch.rand(shape, generator=generator).to(device)
    else:
        u = torch.rand(shape, device=device)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))


def gumbel_softmax(logits: torch.Tensor, temperature: float, hard: bool = False,
                   generator: torch.Generator | None = None, dim: int = -1) -> torch.Tensor:
    """A Gumbel-softmax sample y = softmax((logits + g) / temperature) along ``dim`` (Jang et al. 2017, eq. 2).

    logits: (..., K, ...) unnormalised log-probabilities, K along ``dim`` -> y of the same shape, float32,
    on the simplex along ``dim``. hard=True: the value is the one-hot of argmax y (an exact sample of
    softmax(logits), the Gumbel-max trick) and the gradient is that of the soft y (the straight-through
    Gumbel estimator, Jang et al. section 2.2). Noise from ``generator`` (CPU) or torch's global RNG.
    """
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    logits = logits.float()
    g = gumbel_noise(logits.shape, logits.device, generator)
    y = torch.softmax((logits + g) / temperature, dim=dim)
    if not hard:
        return y
    one_hot = torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)
    return one_hot + (y - y.detach())  # value exactly one-hot (y - y.detach() is 0), gradient that of y


def exact_expectation_gradient(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """d E_{k~q}[values_k] / d logits for q = softmax(logits): logits, values (K,) -> (K,).

    E = sum_k q_k v_k and d q_k / d l_j = q_k (delta_kj - q_j), so the gradient is q_j (v_j - E_q[v]).
    """
    q = torch.softmax(logits.float(), -1)
    return q * (values.float() - (q * values.float()).sum())


def gumbel_gradient_bias(logits: torch.Tensor, values: torch.Tensor, temperatures, samples: int,
                         generator: torch.Generator) -> dict:
    """The bias of the Gumbel-softmax gradient estimator against the temperature, on one categorical.

    The objective is E_{k~q}[values_k], q = softmax(logits). For each temperature tau, ``samples`` draws
    y = gumbel_softmax(logits, tau) give the per-draw gradients d (sum_k y_k values_k) / d logits (autograd);
    their mean is the estimator's expectation (up to Monte Carlo error), compared with
    :func:`exact_expectation_gradient`. The same noise serves every temperature (common random numbers).

    logits, values: (K,); temperatures: a sequence of T positive floats; generator: a CPU generator.
    Returns {"temperatures": (T,), "exact": (K,), "estimate": (T, K) mean gradient,
    "bias": (T,) ||estimate - exact||_2, "std_error": (T,) the Monte Carlo standard error of that difference,
    sqrt(sum_k var_k / samples), "relative_bias": (T,) bias / ||exact||_2}.
    """
    if logits.dim() != 1 or values.shape != logits.shape:
        raise ValueError(f"logits and values must both be (K,), got {tuple(logits.shape)} and {tuple(values.shape)}")
    if samples < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {samples}")
    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t > 0 or not math.isfinite(t) for t in temperatures):
        raise ValueError(f"temperatures must be positive and finite, got {temperatures}")
    logits, values = logits.detach().float().cpu(), values.detach().float().cpu()
    g = gumbel_noise((samples, logits.shape[0]), generator=generator)
    exact = exact_expectation_gradient(logits, values)
    estimates, errors = [], []
    for tau in temperatures:
        copies = logits.expand(samples, -1).clone().requires_grad_(True)  # one per draw: per-draw gradients
        y = torch.softmax((copies + g) / tau, -1)
        (per_draw,) = torch.autograd.grad((y * values).sum(), copies)
        estimates.append(per_draw.mean(0))
        errors.append(per_draw.var(0).div(samples).sum().sqrt())
    estimate = torch.stack(estimates)
    bias = (estimate - exact).norm(dim=1)
    return {"temperatures": torch.tensor(temperatures), "exact": exact, "estimate": estimate, "bias": bias,
            "std_error": torch.stack(errors), "relative_bias": bias / exact.norm()}


def categorical_kl_to_uniform(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """KL(q || Uniform(K)) = sum_k q_k log q_k + log K for q = softmax(logits) along ``dim``, in nats.

    logits: (B, K, H, W) -> (B, H, W) with the default dim. Between 0 (q uniform) and log K (q one-hot).
    """
    log_q = torch.log_softmax(logits.float(), dim)
    return (log_q.exp() * log_q).sum(dim) + math.log(logits.shape[dim])


class GumbelQuantizer(nn.Module):
    """A categorical posterior q(k | x) over K codes at each position, relaxed by Gumbel-softmax.

    z_e: (B, D, H, W) -> logits = proj(z_e): (B, K, H, W) (a learned 1x1 convolution), q = softmax(logits)
    over K; the codebook e: (K, D).
      training: y = gumbel_softmax(logits, temperature) over K, z_q = sum_k y_k e_k (B, D, H, W); with
        hard=True y is the one-hot sample (value) with the soft gradient (straight-through);
        indices = argmax_k y, an exact sample of q (Gumbel-max).
      eval, and :meth:`encode`: indices = argmax_k logits, the mode of q, and z_q = e[indices]; deterministic.

    Returns a VQOutput: codebook_loss and commitment_loss are zero (there is no nearest-code assignment to
    pull together: the codes and the encoder get their gradient through z_q); terms["kl"]: the mean over
    positions of KL(q(.|x) || Uniform(K)) in nats per position; loss = kl_weight * terms["kl"].

    In what sense the VQ-VAE's loss plus this term is an ELBO. The VQ-VAE's recon_loss is the NMSE
    ||x - x_recon||^2 / (N var), N the pixels of a batch and var the data variance: a Gaussian log-likelihood
    up to constants and scale. For the decoder p(x | z) = N(x_recon, sigma^2 I),
    -log p(x | z) = N var / (2 sigma^2) * NMSE + (N / 2) log(2 pi sigma^2), and the prior p(z), uniform and
    independent over the P latent positions of the batch, gives KL(q(z|x) || p(z)) = P * terms["kl"]. So
    recon_loss + kl_weight * terms["kl"] = (2 sigma^2 / (N var)) * (-ELBO) + const, a positive multiple of the
    negative ELBO plus a constant, exactly when sigma^2 = kl_weight * N var / (2 P) (28x28 digits on 7x7
    latents: N / P = 16, sigma^2 = 8 kl_weight var, 0.4 var at the default kl_weight 0.05).
    With hard=True it is a one-sample Monte Carlo estimate of that ELBO (the decoder's input is an exact
    sample of q, the KL exact); with hard=False the decoder sees the relaxed y, and the objective is a
    surrogate of the discrete model's (Maddison et al. 2017); the eval-mode argmax is q's mode,
    not a sample. The VQ-VAE's q is one-hot, so its KL to the uniform prior is the constant log K (van den
    Oord et al. 2017, section 3.1) and drops out; here q is a distribution and its KL is learned.

    beta is not used (the registry's builder ignores the VQ-VAE's commitment weight): without a
    nearest-code assignment there is no commitment term. seed: the codebook's initial draw (N(0, 1)).
    Computed in float32 even under autocast, as VectorQuantizer.
    """

    @register_to_config
    def __init__(self, num_codes: int, code_dim: int, temperature: float = 1.0, hard: bool = False,
                 kl_weight: float = DEFAULT_KL_WEIGHT, seed: int = 0):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be positive, got {num_codes}, {code_dim}")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        if not kl_weight >= 0 or not math.isfinite(kl_weight):
            raise ValueError(f"kl_weight must be non-negative and finite, got {kl_weight}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.temperature, self.hard, self.kl_weight, self.seed = temperature, hard, kl_weight, seed
        self.proj = nn.Conv2d(code_dim, num_codes, 1)  # z_e's D channels -> K logits at each position
        init = torch.randn(num_codes, code_dim, generator=seeded_generator(seed)) * CODEBOOK_INIT_STD
        self.codebook = nn.Parameter(init)

    def logits(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> float32 logits (B, K, H, W) of q(k | x)."""
        check_z_e(z_e, self.code_dim)
        with torch.autocast(z_e.device.type, enabled=False):
            return self.proj(z_e.float())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> code vectors (B, D, H, W)."""
        check_indices(indices, self.num_codes)
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long, the most probable code at each position."""
        return self.logits(z_e).argmax(1)

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        logits = self.logits(z_e)
        with torch.autocast(z_e.device.type, enabled=False):
            kl = categorical_kl_to_uniform(logits).mean()
            if self.training:
                y = gumbel_softmax(logits, self.temperature, self.hard, dim=1)  # global RNG: train() seeds it
                indices = y.detach().argmax(1)
                z_q = torch.einsum("bkhw,kd->bdhw", y, self.codebook.float())
            else:
                indices = logits.detach().argmax(1)
                z_q = self.lookup(indices).float()
            counts = torch.bincount(indices.flatten(), minlength=self.num_codes)
            if self.training:
                distributed.all_reduce_sum_(counts)  # the global batch's usage, as VectorQuantizer's
            zero = kl.new_zeros(())
        return VQOutput(z_q.to(z_e.dtype), indices, zero, zero.clone(), self.kl_weight * kl,
                        perplexity_from_counts(counts), {"kl": kl})
