"""From VQ-VAE to VQGAN (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis").

A VQGAN is a VQ-VAE trained with two more terms beside its reconstruction and codebook losses:

* a perceptual distance between the image and its reconstruction, in the feature maps of a frozen network;
* an adversarial term: a patch discriminator (pix2pix's PatchGAN) learns to tell real images from
  reconstructions with a hinge loss, and the decoder is trained to raise its logits on reconstructions. The
  term's weight is set every step so that its gradient at the decoder's last layer is as large as the
  reconstruction terms' there (the adaptive weight), times ``disc_weight``.

The two networks take turns each step: a generator update (encoder, codebook, decoder) with the discriminator
frozen, then a discriminator update on the detached reconstructions (:func:`train_vqgan`). The pieces follow
CompVis/taming-transformers (``taming/modules/losses/vqperceptual.py``, ``taming/modules/discriminator/model.py``);
where they differ, the docstrings say so and why.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoint import PretrainedMixin, register_to_config
from ..data import get_batch
from ..device import autocast, resolve_device
from ..seeding import seeded
from ..training.run_cache import finished, library_classes_only, run_fingerprint, tensors_digest
from ..training.train import History, batch_order, evaluate, load_model_and_history
from .vqvae import VQVAE, VQVAEOutput

# ---------------------------------------------------------------- the patch discriminator

KERNEL, PADDING = 4, 1  # pix2pix's 4x4 convolutions: stride 2 halves the map exactly, stride 1 takes one pixel off
LEAKY_SLOPE = 0.2
MAX_WIDTH_MULT = 8  # the widths double per layer up to 8 x channels, as in pix2pix
NORM_GROUPS = 16  # GroupNorm's groups (fewer where a layer's width is not a multiple)
INIT_STD = 0.02  # pix2pix / taming: conv weights ~ N(0, 0.02^2), norm scales ~ N(1, 0.02^2)


def layer_strides(num_layers: int) -> list[int]:
    """The strides of the discriminator's convolutions: ``num_layers`` halvings, then two 4x4 stride-1 convs."""
    return [2] * num_layers + [1, 1]


def receptive_field(num_layers: int) -> int:
    """The side, in input pixels, of the patch one logit sees: 16, 34, 70 for 1, 2, 3 layers (pix2pix's
    "70x70 PatchGAN" is num_layers=3). Each 4x4 conv widens it by 3 x (the product of the strides before it)."""
    field, jump = 1, 1
    for stride in layer_strides(num_layers):
        field += (KERNEL - 1) * jump
        jump *= stride
    return field


def logit_map_size(size: int, num_layers: int) -> int:
    """The logit map's side for an input side ``size``: halved (rounded down) ``num_layers`` times, minus 2.
    32 -> 2 at num_layers=3, 6 at 2, 14 at 1."""
    for _ in range(num_layers):
        size //= 2
    return size - 2


def init_weights(module: nn.Module) -> None:
    """pix2pix's initialisation, as taming's ``weights_init``; biases start at zero (taming leaves PyTorch's
    default there), so an untrained discriminator's logits are small and centred."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


class PatchDiscriminator(nn.Module, PretrainedMixin):
    """pix2pix's PatchGAN as taming builds it: images (B, in_channels, H, W) in [0, 1] -> logits (B, 1, h', w').

    A 4x4 stride-2 conv to ``channels`` and LeakyReLU(0.2); ``num_layers - 1`` more stride-2 convs and one
    stride-1 conv, each doubling the width (up to 8 x channels) with a normalisation and LeakyReLU; a last 4x4
    stride-1 conv to one channel. Each logit judges one patch of :func:`receptive_field` (num_layers) pixels a
    side (70 at the default 3), so h' = :func:`logit_map_size` (H, num_layers): a 32x32 image gives a 2x2 map
    at the default depth, whose four patches each cover the whole image (with different zero padding):
    num_layers=2 gives 6x6 logits on 34-pixel patches, num_layers=1 14x14 on 16-pixel ones. The patch is what
    the convolutions see: the normalisation's statistics span each image's whole map, so every logit also
    depends, weakly, on the rest of its image.

    Cost: the default width (pix2pix's and taming's 64) makes a training step about 20 times a VQ-VAE step of
    the book's 32x32 colour model on one CPU thread; channels=16 about 3 times, channels=8 about 2.

    Normalisation: GroupNorm where taming has BatchNorm. BatchNorm would make an image's logit depend on the
    rest of its batch, and taming feeds the real and the reconstructed images as separate batches, so the
    batch statistics themselves tell them apart; its running statistics would also change during the
    generator's update, and differ between train and eval. GroupNorm is per image: the logits do not depend on
    the batch, real and reconstructed images can share one call, and train and eval modes are the same.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        if in_channels < 1 or channels < 1 or num_layers < 1:
            raise ValueError(f"in_channels, channels and num_layers must be positive, "
                             f"got {in_channels}, {channels}, {num_layers}")
        self.in_channels, self.num_layers = in_channels, num_layers
        strides = layer_strides(num_layers)
        layers = [nn.Conv2d(in_channels, channels, KERNEL, strides[0], PADDING), nn.LeakyReLU(LEAKY_SLOPE)]
        width = channels
        for n, stride in enumerate(strides[1:-1], start=1):
            out = channels * min(2 ** n, MAX_WIDTH_MULT)
            layers += [nn.Conv2d(width, out, KERNEL, stride, PADDING, bias=False),  # the norm's shift is the bias
                       nn.GroupNorm(math.gcd(NORM_GROUPS, out), out), nn.LeakyReLU(LEAKY_SLOPE)]
            width = out
        layers.append(nn.Conv2d(width, 1, KERNEL, strides[-1], PADDING))
        self.layers = nn.Sequential(*layers)
        self.apply(init_weights)

    @property
    def min_size(self) -> int:
        """The smallest input side that leaves a 1x1 logit map."""
        return 3 * 2 ** self.num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W) in [0, 1] -> logits (B, 1, logit_map_size(H), logit_map_size(W))."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W) ({self.in_channels} channel(s)), "
                             f"got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(f"a {self.num_layers}-layer discriminator needs images of at least {self.min_size} "
                             f"pixels a side, got {x.shape[2]}x{x.shape[3]}: use fewer layers")
        return self.layers(x - 0.5)  # centred, as the VQ-VAE's encoder sees its input


# ---------------------------------------------------------------- the adversarial losses


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss, 0.5 * (mean relu(1 - real) + mean relu(1 + fake)): logit maps of any
    shape -> (). Zero once real logits are >= 1 and fake ones <= -1; beyond that margin nothing pushes."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side: -mean(logits on reconstructions), any shape -> (). No margin: it keeps pushing."""
    return -logits_fake.mean()


ADAPTIVE_EPS, MAX_ADAPTIVE_WEIGHT = 1e-4, 1e4  # taming's calculate_adaptive_weight


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    eps: float = ADAPTIVE_EPS, max_weight: float = MAX_ADAPTIVE_WEIGHT) -> torch.Tensor:
    """||d rec_loss / d last_layer|| / (||d g_loss / d last_layer|| + eps), clamped to [0, max_weight], detached.

    rec_loss, g_loss: () losses whose graphs reach ``last_layer`` (the decoder's last weight, any shape);
    returns a () constant. Times ``g_loss`` it makes the adversarial gradient at the last layer as large as the
    reconstruction's, whatever the scales of the two losses (Esser et al. 2021, eq. 7). Both graphs are kept
    (retain_graph) for the backward pass of the total loss. taming also multiplies in its ``disc_weight``:
    here that factor stays in :meth:`VQGAN.generator_loss`.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    dtype = torch.promote_types(rec_grad.dtype, torch.float32)  # bf16 gradients (autocast) in float32
    weight = rec_grad.to(dtype).norm() / (g_grad.to(dtype).norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Within the block ``module``'s parameters take no gradient; their requires_grad flags are restored after.

    Graphs built inside still pass gradients through the module to its inputs, never to its weights."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


# ---------------------------------------------------------------- perceptual distances

UNIT_EPS = 1e-10  # added to the squared norm: a position whose features are all zero stays zero, with finite gradients


def unit_channels(maps: torch.Tensor) -> torch.Tensor:
    """maps: (B, C, H, W) -> each position's channel vector scaled to unit length, f / sqrt(|f|^2 + UNIT_EPS).

    LPIPS's normalize_tensor divides by |f| + eps instead, whose gradient at f = 0 is 0 * inf = NaN; one
    fused reduction, where F.normalize's strided norm over the channels took twice as long on the CPU."""
    return maps * torch.rsqrt(maps.square().sum(1, keepdim=True) + UNIT_EPS)


class PerceptualLoss(nn.Module):
    """The LPIPS form of distance (Zhang et al. 2018) in a frozen network trained in this book, without LPIPS's
    learnt weights: x, y (B, C, H, W) in [0, 1] -> () the batch mean of

        d(x, y) = sum over layers l of mean over positions of || u_l(x) - u_l(y) ||^2,

    u_l the feature map of layer l with each position's channel vector scaled to unit length
    (:meth:`distance` gives the (B,) per-image values).

    ``feature_net`` exposes ``feature_maps(x) -> [(B, C_l, H_l, W_l), ...]``, e.g.
    :meth:`vqvae_lib.evaluation.sample_quality.DigitClassifier.feature_maps`; it is frozen here, in place (no gradients
    to its weights, eval mode, which ``train()`` does not undo). Images are clamped to [0, 1] first, the range
    the classifier was trained on, so a decoded pixel outside it gets its gradient from the other terms only.

    What this is not: LPIPS measures distances in an ImageNet VGG whose per-channel weights were fitted to
    human judgements of which of two distortions looks closer. This is a small classifier trained on the
    book's own images, uncalibrated: every channel counts the same, and "perceptual" means only "what this
    classifier's filters respond to". :func:`lpips_loss` gives the real thing where ``lpips`` is installed.
    """

    def __init__(self, feature_net: nn.Module):
        super().__init__()
        if not callable(getattr(feature_net, "feature_maps", None)):
            raise TypeError(f"the feature net must have a feature_maps(x) method, {type(feature_net).__name__} "
                            f"has none (e.g. vqvae_lib.evaluation.sample_quality.DigitClassifier)")
        self.feature_net = feature_net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.feature_net.eval()  # frozen means its dropout and norms are frozen too
        return self

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B, C, H, W) -> (B,) per-image distances, symmetric, zero for identical images."""
        if x.shape != y.shape:
            raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        # Two passes, not one on both batches: autograd then tracks only the side that needs a gradient
        # (the reconstruction), where one pass would carry the real images' half through every backward op.
        maps_x, maps_y = self.feature_net.feature_maps(x.clamp(0, 1)), self.feature_net.feature_maps(y.clamp(0, 1))
        total = x.new_zeros(len(x), dtype=torch.float32)
        for fx, fy in zip(maps_x, maps_y):
            total = total + (unit_channels(fx.float()) - unit_channels(fy.float())).square().sum(1).mean((1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y).mean()


class LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al. 2018) from the ``lpips`` package: x, y (B, 3, H, W) in [0, 1] -> () the batch mean.
    Rescaled to [-1, 1] as LPIPS expects; frozen. Colour images only."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        try:
            import lpips
        except ImportError:
            raise ImportError("the LPIPS perceptual loss needs the lpips package (ImageNet-trained weights, "
                              "downloaded on first use): pip install lpips") from None
        self.lpips = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(2 * x - 1, 2 * y - 1).mean()


def lpips_loss(net: str = "vgg") -> LPIPSLoss:
    """Taming's perceptual loss, LPIPS on VGG features (``pip install lpips``, e.g. on Colab); an ImportError
    saying so where it is not installed."""
    return LPIPSLoss(net)


def resolve_perceptual(perceptual):
    """None, a callable (x, x_recon) -> (), or "lpips" (:func:`lpips_loss`) -> None or the callable."""
    if isinstance(perceptual, str):
        if perceptual != "lpips":
            raise ValueError(f"perceptual must be None, a loss module or 'lpips', got {perceptual!r}")
        return lpips_loss()
    if perceptual is not None and not callable(perceptual):
        raise ValueError(f"perceptual must be None, a loss module or 'lpips', got {type(perceptual).__name__}")
    return perceptual


# ---------------------------------------------------------------- the VQGAN

DISC_WEIGHT = 0.8  # taming's released configs (imagenet_vqgan.yaml, custom_vqgan.yaml); its class default is 1.0


class VQGAN(nn.Module, PretrainedMixin):
    """A :class:`~vqvae_lib.models.vqvae.VQVAE` generator and a :class:`PatchDiscriminator`, with the loss settings.

    vqvae: the generator's VQVAE config (its constructor's keywords; None: VQVAE's defaults);
      :meth:`from_vqvae` starts from a built VQVAE instead, its weights included.
    discriminator: PatchDiscriminator keywords; in_channels defaults to the generator's.
    disc_weight: the factor on the adaptively weighted adversarial term, taming's ``disc_weight`` (0.8 in its
      released configs).
    disc_start: the training step from which the adversarial term is in the generator's loss and the
      discriminator trains (taming: 10,000 to 250,000 steps into runs of hundreds of thousands). Before it,
      training is the VQ-VAE's (plus the perceptual term) and the discriminator stays as initialised.
    perceptual_weight: the factor on the perceptual term, taming's 1.0.

    The generator's loss (:meth:`generator_loss`) keeps the VQ-VAE's reconstruction term, the NMSE, where
    taming has L1: the chapters' NMSE numbers (:func:`vqvae_lib.evaluation.metrics.evaluate_vqvae`) keep their meaning
    and the only change from a VQ-VAE is the two added terms; the adaptive weight scales the adversarial
    term to whatever reconstruction loss is used.

    ``save_pretrained`` / ``from_pretrained`` keep both networks and this config. The perceptual loss's feature
    network is not part of the checkpoint: it is passed to :func:`train_vqgan` at training time.
    ``model.generator.save_pretrained(dir)`` writes a plain VQVAE checkpoint (e.g. for the prior recipes).

    As a VQ-VAE: ``forward``, ``encode``, ``decode_indices``, ``decode``, ``quantizer``, ``in_channels``,
    ``downsample`` pass through to the generator, so code that takes a VQVAE (``evaluate_vqvae``,
    ``encode_dataset``, the priors' code grids) takes a VQGAN.
    """

    @register_to_config
    def __init__(self, vqvae: dict | None = None, discriminator: dict | None = None,
                 disc_weight: float = DISC_WEIGHT, disc_start: int = 0, perceptual_weight: float = 1.0):
        super().__init__()
        if disc_weight < 0 or perceptual_weight < 0 or disc_start < 0:
            raise ValueError(f"disc_weight, perceptual_weight and disc_start must be >= 0, "
                             f"got {disc_weight}, {perceptual_weight}, {disc_start}")
        self.generator = VQVAE(**(vqvae or {}))
        disc = {"in_channels": self.generator.in_channels, **(discriminator or {})}
        if disc["in_channels"] != self.generator.in_channels:
            raise ValueError(f"the discriminator sees the generator's images: in_channels "
                             f"{disc['in_channels']} != {self.generator.in_channels}")
        self.discriminator = PatchDiscriminator(**disc)
        self.disc_weight, self.disc_start, self.perceptual_weight = disc_weight, disc_start, perceptual_weight

    @classmethod
    def from_vqvae(cls, vqvae: VQVAE, **settings) -> "VQGAN":
        """A VQGAN whose generator is a copy of ``vqvae`` (config and weights); ``settings``: the other
        constructor arguments. The discriminator initialises from the global RNG (build inside ``seeded``)."""
        model = cls(vqvae=copy.deepcopy(vqvae.config), **settings)
        model.generator.load_state_dict(vqvae.state_dict())
        return model

    # -- the VQ-VAE interface
    @property
    def quantizer(self):
        return self.generator.quantizer

    @property
    def in_channels(self) -> int:
        return self.generator.in_channels

    @property
    def downsample(self) -> int:
        return self.generator.downsample

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (its ConvTranspose2d's), where the adaptive weight compares gradients."""
        return self.generator.decoder[-1].weight

    def check_input(self, x: torch.Tensor) -> None:
        self.generator.check_input(x)

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """x: (B, C, H, W) in [0, 1] -> the generator's VQVAEOutput (x_recon, recon_loss, loss, vq)."""
        return self.generator(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> indices (B, h, w) long."""
        return self.generator.encode(x)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, D, h, w) -> images (B, C, H, W)."""
        return self.generator.decode(z_q)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, h, w) long -> images (B, C, h * downsample, w * downsample)."""
        return self.generator.decode_indices(indices)

    # -- the losses
    def adversarial_on(self, step: int) -> bool:
        return step >= self.disc_start

    def generator_loss(self, x: torch.Tensor, step: int, perceptual=None) -> dict:
        """x: (B, C, H, W) in [0, 1] -> the generator's loss and its terms, all () tensors, plus "x_recon".

        loss = recon_loss + vq_loss + perceptual_weight * perceptual_loss
               + [step >= disc_start] * disc_weight * adaptive_weight * g_loss

        recon_loss: the VQ-VAE's NMSE; vq_loss: the quantizer's (codebook + beta * commitment);
        perceptual_loss: ``perceptual(x_recon, x)`` (0 with None); g_loss: -mean of the discriminator's logits
        on x_recon, the discriminator frozen (its weights get no gradient from this loss); adaptive_weight:
        :func:`adaptive_weight` of (recon_loss + perceptual_weight * perceptual_loss) against g_loss at the
        decoder's last layer. Before disc_start g_loss and adaptive_weight are 0 and the discriminator is not
        run. Outside autograd (``torch.no_grad()``) no weight can be computed: it is 0, as in taming.
        "x_recon": (B, C, H, W), still attached to the graph (detach it for the discriminator).
        """
        out = self.generator(x)
        zero = out.recon_loss.new_zeros(())
        rec = out.recon_loss
        p_loss = zero
        loss = out.loss  # recon_loss + vq.loss, exactly the VQ-VAE's
        if perceptual is not None:
            p_loss = perceptual(out.x_recon, x)
            rec = rec + self.perceptual_weight * p_loss
            loss = loss + self.perceptual_weight * p_loss
        g_loss = weight = zero
        if self.adversarial_on(step):
            with frozen(self.discriminator):
                g_loss = generator_adversarial_loss(self.discriminator(out.x_recon).float())
            if torch.is_grad_enabled() and rec.requires_grad and g_loss.requires_grad:
                weight = adaptive_weight(rec, g_loss, self.last_layer)
            loss = loss + self.disc_weight * weight * g_loss
        return {"loss": loss, "recon_loss": out.recon_loss, "perceptual_loss": p_loss, "vq_loss": out.vq.loss,
                "g_loss": g_loss, "adaptive_weight": weight, "commitment_loss": out.vq.commitment_loss,
                "codebook_loss": out.vq.codebook_loss, "perplexity": out.vq.perplexity, **out.vq.terms,
                "x_recon": out.x_recon}

    def discriminator_loss(self, x: torch.Tensor, x_recon: torch.Tensor, step: int) -> torch.Tensor:
        """x, x_recon: (B, C, H, W) -> () the hinge loss of the discriminator on real x against the detached
        reconstructions (no gradient reaches the generator); a constant 0 before disc_start."""
        if x.shape != x_recon.shape:
            raise ValueError(f"x and x_recon must have the same shape, got {tuple(x.shape)}, {tuple(x_recon.shape)}")
        if not self.adversarial_on(step):
            return x.new_zeros((), dtype=torch.float32)
        # one call for both: GroupNorm is per image, so this equals two separate calls
        logits_real, logits_fake = self.discriminator(torch.cat([x, x_recon]).detach()).float().chunk(2)
        return hinge_d_loss(logits_real, logits_fake)


# ---------------------------------------------------------------- training

ADAM_BETAS = (0.5, 0.9)  # taming's, for both optimisers


def _perceptual_description(perceptual):
    """What the run cache needs to know of the perceptual loss: "none", a dict, or None (cannot be named)."""
    if perceptual is None:
        return "none"
    net = getattr(perceptual, "feature_net", None)
    if not isinstance(perceptual, PerceptualLoss) or not hasattr(net, "config") or not library_classes_only(net):
        return None
    return {"class": f"{type(net).__module__}.{type(net).__qualname__}", "config": net.config,
            "weights": tensors_digest(net.state_dict())}


def _save_finished_run(directory: Path, model: VQGAN, steps: int, history: History) -> None:
    """Weights, config and history of a finished run, in the layout :func:`load_model_and_history` reads
    (no optimiser state: a cached run is loaded, never resumed). Atomically replaced."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "trainer_state.json").write_text(json.dumps({"step": steps, "world_size": 1,
                                                        "history": history.to_dict()}))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def _check_first_batches(model: VQGAN, train_data: Dataset, eval_data, perceptual, device) -> None:
    """Run the input checks on one image of each data set (and the perceptual loss on it) before any update:
    an EMA codebook moves inside the forward pass, so a failure in the first step would come too late."""
    x = get_batch(train_data, torch.arange(1), device)[0]
    model.check_input(x)
    if eval_data is not None:
        if len(eval_data) == 0:
            raise ValueError("eval_data is empty")
        model.check_input(get_batch(eval_data, torch.arange(1), device)[0])
    if perceptual is not None:
        with torch.no_grad():
            perceptual(x, x)


def train_vqgan(model: VQGAN, train_data: Dataset, *, steps: int, batch_size: int = 64, lr: float = 2e-4,
                disc_lr: float | None = None, betas: tuple = ADAM_BETAS, perceptual=None, seed: int = 0,
                log_every: int = 10, eval_data: Dataset | None = None, eval_every: int = 0, progress: bool = True,
                device=None, bf16: bool = True, cache=None) -> History:
    """Train a VQGAN for ``steps`` steps; returns the :class:`~vqvae_lib.training.train.History` (the model left
    in eval mode).

    Each step: a generator update (Adam on the encoder, codebook and decoder: :meth:`VQGAN.generator_loss`),
    then, from ``model.disc_start`` on, a discriminator update (Adam on its weights, ``disc_lr``, default
    ``lr``: :meth:`VQGAN.discriminator_loss` on this step's reconstructions, computed before the generator's
    update: no second forward pass, and an EMA codebook moves once per step).
    perceptual: None, a loss module ``(x_recon, x) -> ()`` such as :class:`PerceptualLoss`, or "lpips".
    The batches are :func:`~vqvae_lib.training.train.train`'s for the same seed
    (:func:`~vqvae_lib.training.train.batch_order`),
    the global RNG is seeded and restored as there, and with bf16 the forward passes run under bf16 autocast on
    CUDA. Logged: every term of ``generator_loss`` and "disc_loss" (0 before disc_start); eval_data, every
    ``eval_every`` steps: the generator's VQ-VAE scalars (:func:`vqvae_lib.training.train.evaluate`).
    cache: as :func:`~vqvae_lib.training.train.train`'s, a folder of finished runs; a run whose perceptual loss is not a
    :class:`PerceptualLoss` over a library network (LPIPS) is trained, not cached. Single process only.
    """
    if steps < 0 or batch_size < 1 or len(train_data) == 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1 and a non-empty dataset "
                         f"(got {steps}, {batch_size}, {len(train_data)} items)")
    if lr <= 0 or (disc_lr is not None and disc_lr <= 0):
        raise ValueError(f"learning rates must be positive, got lr={lr}, disc_lr={disc_lr}")
    if distributed.world_size() > 1:
        raise ValueError("train_vqgan is single-process: do not launch it with torchrun")
    device = resolve_device(device)
    perceptual = resolve_perceptual(perceptual)
    model.to(device)
    if perceptual is not None:
        perceptual.to(device)
    _check_first_batches(model, train_data, eval_data, perceptual, device)

    run_dir = None
    if cache is not None:
        settings = dict(trainer="train_vqgan", steps=steps, batch_size=batch_size, lr=lr, disc_lr=disc_lr,
                        betas=list(betas), log_every=log_every, eval_every=eval_every, device=device.type,
                        bf16=bf16, seed=seed, perceptual=_perceptual_description(perceptual),
                        cpu_threads=torch.get_num_threads())  # threads split the sums: the last bits differ
        key = None if settings["perceptual"] is None else run_fingerprint(model, train_data, eval_data, settings)
        if key is not None:
            run_dir = Path(cache) / key
            if finished(run_dir, steps):
                history = load_model_and_history(run_dir, model)[1]
                model.eval()
                return history

    model.train()
    g_opt = torch.optim.Adam([p for p in model.generator.parameters() if p.requires_grad], lr=lr, betas=betas)
    d_opt = torch.optim.Adam([p for p in model.discriminator.parameters() if p.requires_grad],
                             lr=disc_lr if disc_lr is not None else lr, betas=betas)
    history = History()
    with seeded(seed):
        bar = tqdm(range(steps), total=steps, disable=not progress, desc=type(model).__name__)
        for step in bar:
            x = get_batch(train_data, batch_order(len(train_data), batch_size, step, seed), device)[0]
            with autocast(device, bf16):
                values = model.generator_loss(x, step, perceptual)
            x_recon = values.pop("x_recon")
            _step(g_opt, values["loss"], "generator", step)
            d_loss = 0.0
            if model.adversarial_on(step):
                with autocast(device, bf16):
                    d_loss = model.discriminator_loss(x, x_recon, step)
                _step(d_opt, d_loss, "discriminator", step)
            values["disc_loss"] = d_loss
            done = step + 1
            if log_every and (done % log_every == 0 or done == steps):
                history.log("train", done, values)
                bar.set_postfix({k: f"{float(v.detach()) if torch.is_tensor(v) else v:.4g}" for k, v in values.items()})
            if eval_data is not None and eval_every and (done % eval_every == 0 or done == steps):
                history.log("eval", done, evaluate(model.generator, eval_data, device=device))
    model.eval()
    if run_dir is not None:
        _save_finished_run(run_dir, model, steps, history)
    return history


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, which: str, step: int) -> None:
    """One optimiser step on ``loss``; a non-finite loss stops training first."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the {which} loss became non-finite ({float(loss.detach())}) at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
