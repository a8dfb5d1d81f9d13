"""Vector quantisation: the codebook, nearest-code lookup and the straight-through estimator.

Shapes follow the paper: an encoder map ``z_e: (B, D, H, W)``, a codebook ``e: (K, D)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..checkpoint import register_to_config
from ..seeding import generator as seeded_generator
from .projection import projection


@dataclass
class VQOutput:
    """What :class:`VectorQuantizer` returns.

    z_q: (B, D, H, W) quantised map; value = chosen codes, gradient flows to z_e unchanged.
    indices: (B, H, W) long, the chosen code at each position.
    codebook_loss: mean ||sg[z_e] - e||^2 (moves the codes).
    commitment_loss: mean ||z_e - sg[e]||^2 (moves the encoder), unweighted.
    loss: the quantiser's contribution to the training loss (see VectorQuantizer).
    perplexity: exp(entropy) of the batch's code usage, between 1 and K.
    terms: a quantizer's own scalars (an entropy penalty, a KL), logged beside the others.

    Every quantizer of the library (:mod:`vqvae_lib.quantizers`) returns one, so ``VQVAE`` and the
    priors work with any of them: a quantizer without a codebook reports zero codebook and commitment
    losses where it has none.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    terms: dict = field(default_factory=dict)


def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for each row. flat: (N, D), codebook: (K, D) -> (N,) long.

    Uses ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b; the ||a||^2 term is the same for every code,
    so the argmin needs only ||b||^2 - 2 a.b (one fused matmul).
    """
    return torch.addmm(codebook.pow(2).sum(1), flat, codebook.t(), alpha=-2.0).argmin(1)


def code_sums(idx: torch.Tensor, x: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Sum of the rows of x assigned to each code. idx: (N,) long, x: (N, D) -> (K, D)."""
    return x.new_zeros(num_codes, x.shape[1]).index_add_(0, idx, x)


def check_z_e(z_e: torch.Tensor, code_dim: int) -> None:
    """Raise ValueError unless ``z_e`` is a finite (B, code_dim, H, W) tensor."""
    if z_e.dim() != 4 or z_e.shape[1] != code_dim:
        raise ValueError(f"z_e must be (B, {code_dim}, H, W), got {tuple(z_e.shape)}")
    if not torch.isfinite(z_e).all():
        raise ValueError("z_e contains NaN or infinite values")


def check_indices(indices: torch.Tensor, num_codes: int, what: str = "indices") -> None:
    """Raise ValueError unless ``indices`` is int64 with every value in [0, num_codes)."""
    if indices.dtype != torch.long:
        raise ValueError(f"{what} must be int64, got {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_codes):
        raise ValueError(f"{what} must lie in [0, {num_codes}), got range "
                         f"[{int(indices.min())}, {int(indices.max())}]")


class ImplicitCodebook:
    """``lookup`` for a quantizer whose code is computed from its index (FSQ, LFQ): no table is stored, the
    subclass's ``indices_to_codes(indices: (B, H, W)) -> (B, D, H, W)`` makes the codes."""

    num_codes: int

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> code vectors (B, D, H, W)."""
        check_indices(indices, self.num_codes)
        return self.indices_to_codes(indices)


class StraightThrough(torch.autograd.Function):
    """The quantiser's training graph as one autograd node, equal in value and gradient to

        e = codebook[indices]                        # (B, D, H, W)
        codebook_loss = mse(e, z_e.detach())         # reaches the codebook only
        commitment_loss = mse(z_e, e.detach())       # reaches the encoder only
        z_q = z_e + (e - z_e).detach()               # value e, gradient passed to z_e unchanged

    (tests/test_quantize.py checks the equality with autograd). One node is cheaper: both losses
    share the one difference z_e - e, z_q needs no arithmetic (its value is e), and the codebook's
    gradient is summed per code with :func:`code_sums`.

    z_e: (B, D, H, W) float32, codebook: (K, D), indices: (B, H, W) long
    -> z_q (B, D, H, W), codebook_loss (), commitment_loss ().
    """

    @staticmethod
    def forward(ctx, z_e, codebook, indices):
        e = codebook.index_select(0, indices.view(-1)).view(*indices.shape, -1).permute(0, 3, 1, 2)
        diff = z_e - e
        sq = diff.square().mean()
        ctx.save_for_backward(diff, indices)
        ctx.num_codes = codebook.shape[0]
        ctx.set_materialize_grads(False)
        return e, sq, sq.clone()

    @staticmethod
    def backward(ctx, grad_zq, grad_codebook_loss, grad_commitment_loss):
        diff, indices = ctx.saved_tensors
        scale = 2.0 / diff.numel()  # d/dx mean(x^2) = 2x / n
        grad_z = grad_codebook = None
        if ctx.needs_input_grad[0]:
            grad_z = grad_zq
            if grad_commitment_loss is not None:
                step = grad_commitment_loss * scale
                grad_z = diff * step if grad_z is None else torch.addcmul(grad_z, diff, step)
        if ctx.needs_input_grad[1] and grad_codebook_loss is not None:
            flat_diff = diff.permute(0, 2, 3, 1).reshape(-1, diff.shape[1])
            grad_codebook = code_sums(indices.view(-1), flat_diff, ctx.num_codes) * (-scale * grad_codebook_loss)
        return grad_z, grad_codebook, None


# Below these norms the rotation trick's construction is undefined (see RotationTrick): an encoder output
# this close to the origin falls back to the straight-through gradient, and a code nearly opposite the
# encoder output (|u + q| under ANTIPODAL_NORM) is reached by the reflection I - 2 u u^T instead.
MIN_NORM = 1e-6
ANTIPODAL_NORM = 1e-4


def rotate(x: torch.Tensor, u: torch.Tensor, q: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """R x for the rotation R that takes the unit vector u to the unit vector q in their common plane and
    fixes the rest of the space (Fifty et al. 2024, sec. 4.2), without forming a D x D matrix:

        R x = x - 2 (x.r) r + 2 (x.u) q,   r = (u + q) / |u + q|

    x, u, q: tensors of one shape whose ``dim`` holds the D components (e.g. (B, D, H, W)); u and q of unit
    norm. ``rotate(x, q, u)`` is R^T x, the inverse rotation. With |u + q|^2 = 2 (1 + u.q),
    2 (x.r) r = (x.u + x.q) / (1 + u.q) (u + q), so r is never formed. Where u = -q (|u + q| < ANTIPODAL_NORM)
    the plane is undefined and r = 0 is used: R x = x + 2 (x.u) q, which for q = -u is the reflection
    I - 2 u u^T: it maps u to q and preserves lengths and angles (to within |u + q| when q is only nearly -u).
    """
    half_sq = 1 + (u * q).sum(dim, keepdim=True)  # |u + q|^2 / 2
    xu, xq = (x * u).sum(dim, keepdim=True), (x * q).sum(dim, keepdim=True)
    floor = ANTIPODAL_NORM ** 2 / 2
    c = torch.where(half_sq > floor, (xu + xq) / half_sq.clamp_min(floor), 0.0)
    return x - c * (u + q) + 2 * xu * q


class RotationTrick(torch.autograd.Function):
    """The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick"):

        z_q = sg[lambda R] z_e,   lambda = |e| / |z_e|,   R the rotation taking z_e / |z_e| to e / |e|

    per position. Its value is lambda R z_e = e, the chosen code (returned exactly, not recomputed); its
    gradient is the decoder's gradient g at z_q carried back through the constant linear map:
    dL/dz_e = lambda R^T g. R^T is orthogonal, so the angle between dL/dz_e and z_e equals the angle
    between g and e, and |dL/dz_e| = lambda |g|: encoder outputs sharing a code get different gradients
    according to where each lies relative to it, where straight-through hands all of them the same g.
    With codes much shorter than the encoder outputs (the default init, ~1/K) lambda << 1 shrinks that gradient.

    Degenerate cases: |z_e| < MIN_NORM (no direction, lambda unbounded): the straight-through gradient g;
    |e| < MIN_NORM (a code at the origin, no direction): R = I, so the gradient lambda g vanishes with lambda,
    the construction's limit as the code approaches the origin; e opposite z_e: the reflection of :func:`rotate`.

    z_e: (B, D, H, W) float32, e: (B, D, H, W) the chosen codes (no gradient) -> z_q (B, D, H, W).
    """

    @staticmethod
    def forward(ctx, z_e, e):
        ctx.save_for_backward(z_e, e)
        return e.clone()

    @staticmethod
    def backward(ctx, g):
        # lambda R^T g = lambda g + alpha z_e + beta e, from R^T g = g - c (u + q) + 2 (g.q) u (see rotate) with
        # u = z_e / a, q = e / b: five per-position dot products and three passes, no unit vectors formed.
        z, e = ctx.saved_tensors
        zz, ee, ze, gz, ge = ((x * y).sum(1, keepdim=True) for x, y in ((z, z), (e, e), (z, e), (g, z), (g, e)))
        a, b = zz.sqrt(), ee.sqrt()
        a_safe, b_safe = a.clamp_min(MIN_NORM), b.clamp_min(MIN_NORM)
        lam = torch.where(a < MIN_NORM, 1.0, b / a_safe)
        half_sq = 1 + ze / (a_safe * b_safe)  # |u + q|^2 / 2
        floor = ANTIPODAL_NORM ** 2 / 2
        c = torch.where(half_sq > floor, (gz / a_safe + ge / b_safe) / half_sq.clamp_min(floor), 0.0)
        degenerate = (a < MIN_NORM) | (b < MIN_NORM)  # R = I there
        alpha = torch.where(degenerate, 0.0, lam * (2 * ge / (a_safe * b_safe) - c / a_safe))
        beta = torch.where(degenerate, 0.0, -lam * c / b_safe)
        return (g * lam).addcmul_(z, alpha).addcmul_(e, beta), None


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the usage distribution p = counts / counts.sum(). counts: (K,)."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 10) -> torch.Tensor:
    """Lloyd's k-means on x: (N, D) -> centroids (k, D), seeded by k-means++ (D^2 sampling).

    generator: a CPU generator for the k-means++ draws. Empty clusters keep their centre.
    With fewer distinct points than k, centres repeat.
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    centroids = [x[first.to(x.device)]]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        # next centre drawn with probability proportional to the squared distance to the nearest one
        weights = d2.cpu() if d2.sum() > 0 else torch.ones(n)
        pick = torch.multinomial(weights, 1, generator=generator).to(x.device)
        centroids.append(x[pick])
        d2 = torch.minimum(d2, ((x - x[pick]) ** 2).sum(1))
    centroids = torch.cat(centroids)
    for _ in range(iters):
        assign = nearest_code(x, centroids)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = code_sums(assign, x, k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class VectorQuantizer(nn.Module):
    """Maps each D-vector of ``z_e: (B, D, H, W)`` to its nearest of K codes.

    Training signal (van den Oord et al. 2017, eq. 3):
        loss = ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2
    With ``ema=True`` the codes instead move by an exponential moving average of the encoder
    outputs assigned to them (Laplace-smoothed counts); the codebook then takes no gradient,
    ``codebook_loss`` is reported only and ``loss = beta * commitment_loss``.

    rotation_trick: pass the decoder's gradient to z_e through the rotation and rescaling that take z_e
      to its code (:class:`RotationTrick`, Fifty et al. 2024) instead of unchanged (straight-through).
      The forward value, the codebook and commitment losses and the EMA updates are the same.

    A cosine, low-dimensional lookup (Yu et al. 2022, ViT-VQGAN, sec. 3.2):
      lookup_dim: d < D: a 1x1 projection takes z_e to d channels, the codes are (K, d), and a second
        projection takes the chosen code back to D channels: z_q = project_out(e). None: d = D, no projections.
      l2_normalize: the (projected) z_e and every code are scaled to unit length before the lookup, so the
        nearest code is the one of highest cosine similarity; the codebook and commitment losses are
        measured between unit vectors, in the d-dimensional lookup space.

    Options against codebook collapse:
      kmeans_init: set the codes by k-means on the first training batch.
      restart_after: a code unused for this many training steps is reset to a random encoder
        output of the current batch (its EMA state too). 0 disables.
    seed: the k-means++ and restart draws come from generators seeded by (seed, update number),
      never from the global RNG, so a run and its resumed copy draw the same.

    Data-parallel training (:mod:`vqvae_lib.distributed`): in training mode every rank sees its slice of
    the global batch, and the codebook state is kept identical on every rank: the code counts (hence
    perplexity, EMA counts and the "unused" decision) and the EMA sums are summed over the ranks, and
    k-means and restarts draw from the gathered encoder outputs of the whole global batch with the
    same generator; the k-means result is broadcast from rank 0.
    """

    @register_to_config
    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, kmeans_init: bool = False, restart_after: int = 0,
                 seed: int = 0, rotation_trick: bool = False, l2_normalize: bool = False,
                 lookup_dim: int | None = None):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be positive, got {num_codes}, {code_dim}")
        if lookup_dim is not None and (isinstance(lookup_dim, bool) or not isinstance(lookup_dim, int)
                                       or not 1 <= lookup_dim <= code_dim):
            raise ValueError(f"lookup_dim must be None or an integer in [1, code_dim={code_dim}], got {lookup_dim!r}")
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.restart_after, self.seed = kmeans_init, restart_after, seed
        self.rotation_trick, self.l2_normalize = rotation_trick, l2_normalize
        self.lookup_dim = code_dim if lookup_dim is None else lookup_dim
        draws = seeded_generator(seed)  # the codes first, then any projections
        self.init_codes(draws)
        self.project_in = projection(code_dim, self.lookup_dim, draws)
        self.project_out = projection(self.lookup_dim, code_dim, draws)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("num_updates", torch.tensor(0))  # training forward passes so far
        if ema:
            # Start as if each code had been chosen once at its initial position: an unused code then
            # stays where it is (zero counts would divide its decaying sum by ~eps and fling it away).
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", self.codebook.detach().clone())

    def init_codes(self, generator: torch.Generator) -> None:
        """The learnt codebook (K, d), uniform in +-1/K, from ``generator`` (a subclass builds its codes otherwise)."""
        init = torch.empty(self.num_codes, self.lookup_dim).uniform_(-1 / self.num_codes, 1 / self.num_codes,
                                                                     generator=generator)
        self.codebook = nn.Parameter(init, requires_grad=not self.ema)

    def codes(self) -> torch.Tensor:
        """The codes looked up: (K, d), the codebook, scaled to unit length with ``l2_normalize``."""
        return F.normalize(self.codebook, dim=1) if self.l2_normalize else self.codebook

    def to_lookup_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> (B, d, H, W) float32: projected to d channels, unit length with ``l2_normalize``."""
        z = self.project_in(z_e.float())
        return F.normalize(z, dim=1) if self.l2_normalize else z

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, H, W) long -> code vectors (B, D, H, W) (projected back to D channels)."""
        check_indices(indices, self.num_codes)
        return self.project_out(F.embedding(indices, self.codes()).permute(0, 3, 1, 2))

    @torch.no_grad()
    def encode(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, H, W) -> indices (B, H, W) long, the nearest code at each position (no update)."""
        check_z_e(z_e, self.code_dim)
        z = self.to_lookup_space(z_e)
        B, d, H, W = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return nearest_code(flat, self.codes().float()).view(B, H, W)

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        if z_e.dim() != 4 or z_e.shape[1] != self.code_dim:
            raise ValueError(f"z_e must be (B, {self.code_dim}, H, W), got {tuple(z_e.shape)}")
        # Distances and codebook statistics in float32 even under autocast: bf16 argmins flip.
        with torch.autocast(z_e.device.type, enabled=False):
            z = self.to_lookup_space(z_e)
            B, d, H, W = z.shape
            with torch.no_grad():
                flat = z.permute(0, 2, 3, 1).reshape(-1, d)
                if self.training:
                    self._maybe_init(flat)
                idx = nearest_code(flat, self.codes())
                counts = torch.bincount(idx, minlength=self.num_codes)
                if self.training:
                    distributed.all_reduce_sum_(counts)  # the global batch's usage
                    self._update(flat, idx, counts)
            idx = idx.view(B, H, W)
            # the codes after any EMA update or restart; with a computed codebook (SimVQ) the gradient flows on
            z_q, codebook_loss, commitment_loss = StraightThrough.apply(z, self.codes(), idx)
            if self.rotation_trick:  # same value e; only the gradient z_q passes to z_e changes
                z_q = RotationTrick.apply(z, z_q.detach())
            z_q = self.project_out(z_q)
            loss = self.beta * commitment_loss if self.ema else codebook_loss + self.beta * commitment_loss
        return VQOutput(z_q.to(z_e.dtype), idx, codebook_loss, commitment_loss, loss,
                        perplexity_from_counts(counts))

    @torch.no_grad()
    def _maybe_init(self, flat: torch.Tensor) -> None:
        if bool(self.initialized):
            return
        centroids = kmeans(distributed.all_gather_cat(flat), self.num_codes, self._generator())
        self.set_codes(distributed.broadcast_(centroids))  # GPU sums may differ in the last bit
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        if self.ema:
            sums = distributed.all_reduce_sum_(code_sums(idx, flat, self.num_codes))
            self.ema_count.mul_(self.decay).add_(counts.float(), alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace
            self.codebook.data.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_after > 0:
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
            dead = self.steps_unused >= self.restart_after
            if dead.any():  # the same decision on every rank: the counts are global
                self.restart_codes(dead, distributed.all_gather_cat(flat))
        self.num_updates.add_(1)

    def _generator(self) -> torch.Generator:
        """The generator of this update's draws: seeded by (seed, update number)."""
        return seeded_generator(self.seed, int(self.num_updates))

    @torch.no_grad()
    def set_codes(self, codes: torch.Tensor, where: torch.Tensor | None = None) -> None:
        """Write ``codes: (n, D)`` into the codebook rows ``where`` ((K,) bool or (n,) long; default all).

        Keeps the rest of the quantizer's state consistent: with EMA, each written code counts as
        chosen once at its new place (sum = code, count = 1), and its unused-steps counter restarts.
        """
        where = slice(None) if where is None else where
        codes = codes.to(self.codebook.device, self.codebook.dtype)
        self.codebook.data[where] = codes
        self.steps_unused[where] = 0
        if self.ema:
            self.ema_sum[where] = codes
            self.ema_count[where] = 1.0

    @torch.no_grad()
    def restart_codes(self, dead: torch.Tensor, flat: torch.Tensor) -> int:
        """Reset the codes where ``dead: (K,) bool`` to random rows of ``flat: (N, D)``. Returns how many."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pick = torch.randint(flat.shape[0], (n_dead,), generator=self._generator()).to(flat.device)
        self.set_codes(flat[pick], dead)
        return n_dead
