import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from vqvae_lib import VQVAE, History, train
from vqvae_lib.checkpoint import PretrainedMixin
from vqvae_lib.data import load_images
from vqvae_lib.priors.maskgit import MaskedPrior
from vqvae_lib.seeding import seeded
from vqvae_lib.training.train import batch_order, learning_rate, ms_per_step

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


class Drifting(nn.Module, PretrainedMixin):
    """loss = w: a constant gradient of 1, so Adam moves w by the learning rate at every step (to 1e-8);
    with ``fail_after`` calls the loss turns NaN, as a run interrupted there."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.fail_after, self.calls = fail_after, 0
        self.config = {}

    def training_step(self, batch):
        self.calls += 1
        failed = self.fail_after is not None and self.calls > self.fail_after
        return {"loss": self.w.sum() * (float("nan") if failed else 1.0)}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = TensorDataset(torch.randn(64, 3))
    with pytest.raises(FloatingPointError, match="non-finite.*step 3.*last good checkpoint"):
        train(Drifting(fail_after=3), data, steps=10, batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=2,
              progress=False, device="cpu")
    assert json.loads((tmp_path / "trainer_state.json").read_text())["step"] == 2


def test_learning_rate_is_constant_then_falls_linearly_over_the_last_fraction():
    rates = [learning_rate(step, 10, 1.0, lr_decay=0.3) for step in range(10)]
    assert rates[:7] == [1.0] * 7
    assert rates[7:] == pytest.approx([1.0, 2 / 3, 1 / 3])  # 3 decay steps, the last at lr / 3
    assert [learning_rate(step, 10, 1.0) for step in range(10)] == [1.0] * 10
    assert learning_rate(0, 4, 2.0, lr_decay=1.0) == 2.0 and learning_rate(3, 4, 2.0, lr_decay=1.0) == 0.5


def test_train_follows_the_schedule_and_resumes_it(tmp_path):
    data, settings = TensorDataset(torch.zeros(8, 1)), dict(steps=10, batch_size=4, lr=0.1, lr_decay=0.5)
    straight = Drifting()
    train(straight, data, **settings, progress=False, device="cpu")
    expected = -sum(learning_rate(step, 10, 0.1, 0.5) for step in range(10))
    assert float(straight.w.detach()) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(-0.8)  # a constant rate would have moved w by -1.0

    with pytest.raises(FloatingPointError):  # interrupted after 6 steps, the checkpoint at step 4 kept
        train(Drifting(fail_after=6), data, **settings, checkpoint_dir=tmp_path, checkpoint_every=4,
              progress=False, device="cpu")
    resumed = Drifting()
    train(resumed, data, **settings, checkpoint_dir=tmp_path, resume=True, progress=False, device="cpu")
    assert float(resumed.w.detach()) == float(straight.w.detach())


def test_ms_per_step_times_a_copy_and_leaves_the_global_rng_alone():
    with seeded(0):
        model = MaskedPrior(8, 2, 2, embed_dim=8, num_layers=1, num_heads=2)  # its training masks are random
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grids = TensorDataset(torch.randint(8, (16, 2, 2), generator=torch.Generator().manual_seed(0)))
    rng = torch.get_rng_state()
    assert ms_per_step(model, grids, 4, torch.device("cpu"), steps=3) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


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
    with pytest.raises(ValueError, match="lr_decay.*\\[0, 1\\], got 1.5"):
        train(VQVAE(**SMALL), TensorDataset(torch.rand(4, 1, 28, 28)), steps=1, lr_decay=1.5, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        train(VQVAE(**SMALL), TensorDataset(torch.empty(0, 1, 28, 28)), steps=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(VQVAE(**SMALL), TensorDataset(torch.rand(4, 1, 28, 28)), steps=1, resume=True, progress=False)
