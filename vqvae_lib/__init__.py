"""vqvae_lib: the library behind the VQ-VAE book."""
from .data import ImageDataset, load_images
from .maskgit import MaskedPrior, mask_schedule
from .metrics import codebook_usage, encode_dataset, evaluate_vqvae, perplexity
from .pixelcnn import GatedPixelCNN, MaskedConv2d, PlainPixelCNN
from .presets import PRESETS, get_preset
from .prior import AutoregressivePrior, GridPrior
from .quantize import VectorQuantizer, VQOutput
from .train import History, evaluate, train
from .transformer import TransformerPrior
from .vae import VAE, gaussian_kl
from .vqgan import VQGAN, PatchDiscriminator, PerceptualLoss, lpips_loss, train_vqgan
from .vqvae import VQVAE

__all__ = ["ImageDataset", "load_images", "codebook_usage", "encode_dataset", "evaluate_vqvae", "perplexity",
           "GatedPixelCNN", "MaskedConv2d", "PlainPixelCNN", "PRESETS", "get_preset", "VectorQuantizer", "VQOutput",
           "History", "evaluate", "train", "VAE", "gaussian_kl", "VQVAE", "GridPrior", "AutoregressivePrior",
           "TransformerPrior", "MaskedPrior", "mask_schedule", "VQGAN", "PatchDiscriminator", "PerceptualLoss",
           "lpips_loss", "train_vqgan"]
__version__ = "0.1.0"
