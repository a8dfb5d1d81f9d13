"""vqvae_lib: the library behind the VQ-VAE book."""
from .data import ImageDataset, load_images
from .evaluation.metrics import codebook_usage, encode_dataset, evaluate_vqvae, perplexity
from .models.vae import VAE, gaussian_kl
from .models.vqgan import VQGAN, PatchDiscriminator, PerceptualLoss, lpips_loss, train_vqgan
from .models.vqvae import VQVAE
from .presets import PRESETS, get_preset
from .priors.base import AutoregressivePrior, GridPrior
from .priors.maskgit import MaskedPrior, mask_schedule
from .priors.pixelcnn import GatedPixelCNN, MaskedConv2d, PlainPixelCNN
from .priors.transformer import TransformerPrior
from .quantizers.vq import VectorQuantizer, VQOutput
from .training.train import History, evaluate, train

__all__ = ["ImageDataset", "load_images", "codebook_usage", "encode_dataset", "evaluate_vqvae", "perplexity",
           "GatedPixelCNN", "MaskedConv2d", "PlainPixelCNN", "PRESETS", "get_preset", "VectorQuantizer", "VQOutput",
           "History", "evaluate", "train", "VAE", "gaussian_kl", "VQVAE", "GridPrior", "AutoregressivePrior",
           "TransformerPrior", "MaskedPrior", "mask_schedule", "VQGAN", "PatchDiscriminator", "PerceptualLoss",
           "lpips_loss", "train_vqgan"]
__version__ = "0.1.0"
