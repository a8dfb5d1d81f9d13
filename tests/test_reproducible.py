"""The same (preset, data, seed) gives the same weights in any process and any chapter, on the CPU."""
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from vqvae_lib import VQVAE, train
from vqvae_lib.data import load_images
from vqvae_lib.presets import get_preset
from vqvae_lib.recipes import build_vqvae, save_trained_vqvae, train_settings, train_vqvae, trained_vqvae

# Long enough for k-means init (step 1) and dead-code restarts (the ci preset restarts after 20 steps).
STEPS = 60


def train_in_fresh_process(out, seed: int, disturb_global_rng: bool) -> dict:
    """Run the ci recipe in a new Python process; optionally use the global RNG first, as a notebook might."""
    code = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)  # one core each: the processes run beside the other test workers
        if {disturb_global_rng}:
            torch.manual_seed(12345)
            torch.rand(1000)
        from vqvae_lib.recipes import train_vqvae
        train_vqvae("mnist-5k", "ci", {str(out)!r}, seed={seed}, steps={STEPS}, progress=False)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return load_file(str(out / "model.safetensors"))


def test_two_fresh_processes_give_bitwise_identical_weights(tmp_path):
    a = train_in_fresh_process(tmp_path / "a", seed=0, disturb_global_rng=False)
    b = train_in_fresh_process(tmp_path / "b", seed=0, disturb_global_rng=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ between the two processes: {different}"
    other = train_in_fresh_process(tmp_path / "c", seed=1, disturb_global_rng=False)
    assert not torch.equal(a["quantizer.codebook"], other["quantizer.codebook"]), "the seed must matter"


def test_a_chapter_training_inline_equals_the_recipe(tmp_path):
    """Chapter 5 trains with build_vqvae + train (with evaluation on the way); chapters 6-7 load the recipe's run."""
    preset = get_preset("ci")
    train_set, test_set = load_images("mnist-5k", "train"), load_images("mnist-5k", "test")
    inline = build_vqvae(preset, train_set, seed=0)
    train(inline, train_set, **train_settings(preset, "vqvae", STEPS), seed=0, eval_data=test_set,
          eval_every=STEPS // 3, progress=False)
    train_vqvae("mnist-5k", "ci", tmp_path / "recipe", seed=0, steps=STEPS, progress=False)
    saved = load_file(str(tmp_path / "recipe" / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in inline.state_dict().items())


def test_the_library_neither_reads_nor_changes_the_global_rng(tmp_path):
    preset = get_preset("ci")
    data = load_images("mnist-5k", "train", limit=256)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    model = build_vqvae(preset, data, seed=0)
    train(model, data, steps=25, batch_size=32, seed=0, progress=False)
    VQVAE.from_pretrained(model.save_pretrained(tmp_path / "saved"))
    for _ in range(2):  # trained into the cache, then loaded from it
        train(build_vqvae(preset, data, seed=0), data, steps=5, batch_size=32, progress=False, cache=tmp_path / "c")
    assert torch.equal(before, torch.get_rng_state())


def test_a_model_chapter_5_saves_is_the_one_later_chapters_load(tmp_path, monkeypatch):
    """save_trained_vqvae puts chapter 5's inline model where trained_vqvae looks: loaded, not trained again."""
    preset = get_preset("ci")
    preset["vqvae"]["train"]["steps"] = 4
    monkeypatch.setattr("vqvae_lib.recipes.get_preset", lambda name=None: preset)
    train_set = load_images("mnist-5k", "train", limit=256)
    inline = build_vqvae(preset, train_set, seed=0)
    history = train(inline, train_set, **train_settings(preset, "vqvae"), seed=0, progress=False)
    metrics = save_trained_vqvae(inline, history, preset, "mnist-5k", seed=0, root=tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("trained_vqvae trained again instead of loading the saved model")

    monkeypatch.setattr("vqvae_lib.recipes.train_vqvae", no_training)
    loaded, loaded_metrics = trained_vqvae("ci", root=tmp_path)
    assert loaded_metrics == metrics
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in inline.state_dict().items())
    short = train(build_vqvae(preset, train_set, seed=0), train_set, steps=2, batch_size=32, seed=0, progress=False)
    with pytest.raises(ValueError, match="trained for 2 steps, the ci recipe trains for 4"):
        save_trained_vqvae(inline, short, preset, "mnist-5k", seed=0, root=tmp_path)
