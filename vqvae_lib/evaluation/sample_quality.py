"""Sample quality as a Fréchet distance in the features of a small digit classifier.

The FID of Heusel et al. (2017) fits a Gaussian to each set's features in a trained network and reports
the Fréchet (2-Wasserstein) distance between the two Gaussians,
``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``. FID uses Inception-v3, a download; here the
features are the penultimate layer of :class:`DigitClassifier`, trained on the training split in seconds.
The numbers are therefore on this classifier's own scale: compare them with each other (a floor from two
real splits, a ceiling from noise), never with published FIDs. The estimate is biased upwards at finite
sample sizes, so compare distances computed from sets of the same sizes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..checkpoint import PretrainedMixin, register_to_config
from ..data import iter_batches
from ..device import resolve_device
from ..models.inputs import check_images
from ..presets import get_preset
from ..seeding import seeded
from ..training.train import train

POOLED_SIZE = 7  # conv features pooled to 7 x 7 (a no-op for 28 x 28 digits) before the dense layer: any size works
EVAL_BATCH = 256
REDUCED_PRECISION = (torch.bfloat16, torch.float16)


class DigitClassifier(nn.Module, PretrainedMixin):
    """A small CNN: images (B, C, H, W) in [0, 1] -> logits (B, num_classes).

    Two blocks of [3x3 conv, ReLU, 2x2 max-pool] (``channels``, then ``2 * channels`` wide), an adaptive
    average pool to 7 x 7, then a dense ReLU layer of ``feature_dim`` units (:meth:`features`) and a linear
    layer to the logits.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 64,
                 channels: int = 16):
        super().__init__()
        layers, c = [], in_channels
        for out in (channels, 2 * channels):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.in_channels = in_channels
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(POOLED_SIZE), nn.Flatten())
        self.dense = nn.Sequential(nn.Linear(c * POOLED_SIZE ** 2, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a non-empty (B, in_channels, H, W) float batch, finite, in [0, 1] (the
        training data's range). bfloat16 and float16 pass: a VQGAN's perceptual term feeds it decoded images
        from under autocast."""
        weights = next(self.parameters()).dtype
        check_images(x, self.in_channels, x.dtype if x.dtype in REDUCED_PRECISION else weights)
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError(f"images must lie in [0, 1] as the classifier was trained on them (clamp decoded "
                             f"images as they are displayed), got [{float(x.min()):.3g}, {float(x.max()):.3g}]")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> the penultimate layer (B, feature_dim), the Fréchet distance's space."""
        self.check_input(x)
        return self.dense(self.conv(x - 0.5))  # centred, as the VQ-VAE's encoder sees its input

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, C, H, W) in [0, 1] -> [(B, channels, H, W), (B, 2 * channels, H / 2, W / 2)]: the ReLU output
        of each conv block, before its max-pool (where LPIPS taps VGG). The feature net of
        :class:`vqvae_lib.models.vqgan.PerceptualLoss`."""
        self.check_input(x.detach())
        num_maps = sum(isinstance(layer, nn.ReLU) for layer in self.conv)
        maps, h = [], x - 0.5
        for layer in self.conv:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                maps.append(h)
                if len(maps) == num_maps:  # the last block's pool and the rest are not needed
                    break
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> logits (B, num_classes)."""
        return self.head(self.features(x))

    def training_step(self, batch) -> dict:
        x, labels = batch[0], batch[1]
        logits = self(x)
        return {"loss": F.cross_entropy(logits.float(), labels),
                "accuracy": (logits.argmax(1) == labels).float().mean()}


def train_classifier(train_set, preset: str | None = None, steps: int | None = None, seed: int = 0,
                     device=None, progress: bool = False, cache=None) -> DigitClassifier:
    """The preset's ``classifier`` trained on ``train_set`` (an ImageDataset with ``.labels``), seeded.

    ``steps`` overrides the preset's step budget. The ci budget takes about 10 s on one CPU thread.
    ``cache``: as :func:`vqvae_lib.training.train.train`'s (a finished run is loaded, not trained again).
    """
    p = get_preset(preset)
    settings = {**p["classifier"]["train"], **({"steps": steps} if steps is not None else {})}
    with seeded(seed):
        model = DigitClassifier(in_channels=train_set.shape[0], num_classes=train_set.num_classes,
                                **p["classifier"]["model"])
    train(model, train_set, **settings, seed=seed, device=device, progress=progress, cache=cache)
    return model


def _as_dataset(images) -> Dataset:
    """An ImageDataset (or any (image, ...) data set) as it is, a (N, C, H, W) tensor wrapped in one."""
    if torch.is_tensor(images):
        if images.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        return TensorDataset(images)
    return images


@torch.no_grad()
def extract_features(classifier: DigitClassifier, images, batch_size: int = EVAL_BATCH,
                     device=None) -> torch.Tensor:
    """The classifier's features of every image: an ImageDataset or a (N, C, H, W) tensor -> (N, F) float64."""
    device = resolve_device(device)
    classifier.to(device).eval()
    return torch.cat([classifier.features(batch[0].float()).double().cpu()
                      for batch in iter_batches(_as_dataset(images), batch_size, device)])


@torch.no_grad()
def accuracy(classifier: DigitClassifier, dataset, batch_size: int = EVAL_BATCH, device=None) -> float:
    """The fraction of ``dataset``'s (image, label) pairs the classifier labels correctly."""
    device = resolve_device(device)
    classifier.to(device).eval()
    correct = sum(int((classifier(x).argmax(1) == y).sum()) for x, y in iter_batches(dataset, batch_size, device))
    return correct / len(dataset)


def feature_statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feats: (N, F) with N >= 2 -> (mean (F,), unbiased covariance (F, F)), both float64."""
    if feats.dim() != 2:
        raise ValueError(f"features must be (N, F), got shape {tuple(feats.shape)}")
    if len(feats) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(feats)}")
    if not torch.isfinite(feats).all():
        raise ValueError("features contain NaN or infinite values")
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T).reshape(feats.shape[1], feats.shape[1])  # reshape: F = 1 gives ()


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite (F, F) matrix, by eigh."""
    eigvals, eigvecs = torch.linalg.eigh(s)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T  # clamp: rounding makes tiny negatives


def frechet_from_statistics(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor,
                            sigma_b: torch.Tensor) -> float:
    """The Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b): means (F,), covariances (F, F).

    Tr((S_a S_b)^{1/2}) is the sum of the square roots of the eigenvalues of sqrt(S_a) S_b sqrt(S_a), a
    symmetric PSD matrix with the same eigenvalues as S_a S_b: no non-symmetric matrix square root, whose
    rounding can give complex values. float64 throughout; the result is clamped at 0 (rounding only).
    """
    mu_a, sigma_a, mu_b, sigma_b = (t.double() for t in (mu_a, sigma_a, mu_b, sigma_b))
    if mu_a.shape != mu_b.shape or mu_a.dim() != 1:
        raise ValueError(f"means must be two (F,) vectors of the same F, got {tuple(mu_a.shape)}, {tuple(mu_b.shape)}")
    dim = len(mu_a)
    if sigma_a.shape != (dim, dim) or sigma_b.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {tuple(sigma_a.shape)}, {tuple(sigma_b.shape)}")
    root_a = _psd_sqrt(sigma_a)
    inner = root_a @ sigma_b @ root_a
    eigvals = torch.linalg.eigvalsh((inner + inner.T) / 2)  # symmetrised against rounding
    trace_sqrt = eigvals.clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).pow(2).sum() + sigma_a.trace() + sigma_b.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets: (N, F) and (M, F), N, M >= 2."""
    if feats_a.dim() != 2 or feats_b.dim() != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feature sets must be (N, F) and (M, F) with the same F, "
                         f"got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    return frechet_from_statistics(*feature_statistics(feats_a), *feature_statistics(feats_b))


def frechet_to_data(classifier: DigitClassifier, images_a, images_b, batch_size: int = EVAL_BATCH,
                    device=None) -> float:
    """The Fréchet distance between two image sets in the classifier's features.

    images_a, images_b: ImageDatasets or (N, C, H, W) tensors in [0, 1] (clamp decoded images first).
    """
    return frechet_distance(extract_features(classifier, images_a, batch_size, device),
                            extract_features(classifier, images_b, batch_size, device))
