import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from vqvae_lib import VQVAE, History, train
from vqvae_lib.checkpoint import PretrainedMixin
from vqvae_lib.data import load_images
from vqvae_lib.train import batch_order

SMALL = dict(num_codes=16, code_dim=4, hidden_channels=8, res_channels=4, num_res_layers=1,
             quantizer=dict(ema=True, restart_after=2))


@pytest.fixture(scope="module")
def digits():
    return load_images("mnist-5k", limit=256)


def run(tmp_path, digits, steps, resume=False, checkpoint_every=5):
    torch.manual_seed(0)
    model = VQVAE(**SMALL)
    history = train(model, digits, steps=steps, batch_size=32, lr=1e-3, eval_data=digits.subset(64), eval_every=5,
                    log_every=1, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=checkpoint_every,
                    resume=resume, progress=False)
    return model, history


def test_resume_reaches_the_same_step_and_results(tmp_path, digits):
    straight, h_straight = run(tmp_path / "a", digits, 10)
    run(tmp_path / "b", digits, 5)
    resumed, h_resumed = run(tmp_path / "b", digits, 10, resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert h_straight.to_dict() == h_resumed.to_dict()
    assert h_resumed.train_steps == list(range(1, 11))


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, digits):
    run(tmp_path, digits, 2)
    with pytest.raises(ValueError, match="does not match|do not match"):
        train(VQVAE(**{**SMALL, "hidden_channels": 16}), digits, steps=4, checkpoint_dir=tmp_path / "ckpt",
              resume=True, progress=False)


class Exploding(nn.Module, PretrainedMixin):
    """A model whose loss turns NaN at step 3 (its 4th call)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0
        self.config = {}

    def training_step(self, batch):
        self.calls += 1
        loss = (self.w * batch[0]).mean() ** 2
        return {"loss": loss * float("nan") if self.calls > 3 else loss}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = TensorDataset(torch.randn(64, 3))
    with pytest.raises(FloatingPointError, match="non-finite.*step 3.*last good checkpoint"):
        train(Exploding(), data, steps=10, batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=2,
              progress=False, device="cpu")
    assert json.loads((tmp_path / "trainer_state.json").read_text())["step"] == 2


def test_batch_order_is_a_permutation_per_epoch():
    seen = torch.cat([batch_order(100, 10, s, seed=1) for s in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    assert torch.equal(batch_order(100, 10, 13, seed=1), batch_order(100, 10, 13, seed=1))


def test_history_plots(digits):
    h = History()
    for s in range(1, 4):
        h.log("train", s, {"loss": 1.0 / s})
    h.log("eval", 3, {"loss": 0.5})
    fig = h.plot()
    assert fig.axes[0].get_title() == "loss" and len(fig.axes[0].lines) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        train(VQVAE(**SMALL), TensorDataset(torch.empty(0, 1, 28, 28)), steps=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(VQVAE(**SMALL), TensorDataset(torch.rand(4, 1, 28, 28)), steps=1, resume=True, progress=False)
