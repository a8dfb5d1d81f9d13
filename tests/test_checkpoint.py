"""Every constructor argument of every model survives save_pretrained / from_pretrained."""
import inspect

import pytest
import torch

from vqvae_lib import VAE, VQVAE, GatedPixelCNN, MaskedPrior, TransformerPrior, VectorQuantizer
from vqvae_lib.evaluation.sample_quality import DigitClassifier

# One non-default value per argument that the round trip must carry.
NON_DEFAULT = {
    VQVAE: dict(in_channels=3, num_codes=32, code_dim=8, hidden_channels=16, num_res_layers=1, res_channels=8,
                downsample=2, beta=0.5, data_variance=0.3,
                quantizer=dict(ema=True, decay=0.9, kmeans_init=True, restart_after=7, seed=5)),
    GatedPixelCNN: dict(num_codes=12, hidden_channels=8, num_layers=2, num_classes=3, kernel_size=5,
                        label_dropout=0.25),
    VAE: dict(in_channels=3, image_size=16, latent_dim=4, hidden_channels=8, beta=2.0),
    **{cls: dict(num_codes=12, max_height=3, max_width=6, embed_dim=12, num_layers=2, num_heads=3, num_classes=4,
                 dropout=0.1, label_dropout=0.25) for cls in (TransformerPrior, MaskedPrior)},
    DigitClassifier: dict(in_channels=3, num_classes=4, feature_dim=6, channels=5),
}


@pytest.mark.parametrize("cls", [VQVAE, GatedPixelCNN, VAE, VectorQuantizer, TransformerPrior, MaskedPrior,
                                 DigitClassifier])
def test_config_holds_every_constructor_argument(cls):
    args = NON_DEFAULT.get(cls, dict(num_codes=8, code_dim=3))
    model = cls(**args)
    assert set(model.config) == set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert {k: model.config[k] for k in args} == args


@pytest.mark.parametrize("cls", [VQVAE, GatedPixelCNN, VAE, TransformerPrior, MaskedPrior, DigitClassifier])
def test_round_trip_keeps_config_and_weights(cls, tmp_path):
    model = cls(**NON_DEFAULT[cls])
    loaded = cls.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_quantizer_options_reach_the_quantizer(tmp_path):
    model = VQVAE.from_pretrained(VQVAE(**NON_DEFAULT[VQVAE]).save_pretrained(tmp_path / "m"))
    q = model.quantizer
    assert (q.ema, q.decay, q.kmeans_init, q.restart_after, q.seed, q.beta) == (True, 0.9, True, 7, 5, 0.5)
