"""The null class and classifier-free guidance (Ho and Salimans, 2022) of every prior.

A class-conditional prior learns a null class (label -1, what ``labels=None`` means) from the labels that
training replaces by it with probability ``label_dropout``; ``sample(..., guidance=w)`` draws from
(1 + w) * logits(. | y) - w * logits(. | null). The last test checks that the null class really is a
trained unconditional prior: its decoded samples are about as close to the digits as those of a prior
trained without labels.
"""
import math
import os
import time

import pytest
import torch
from torch.utils.data import TensorDataset

import vqvae_lib.priors.maskgit
import vqvae_lib.priors.pixelcnn
import vqvae_lib.priors.transformer
from vqvae_lib import VQVAE, GatedPixelCNN, MaskedPrior, TransformerPrior, load_images, train
from vqvae_lib.evaluation.sample_quality import extract_features, frechet_distance, train_classifier
from vqvae_lib.presets import get_preset
from vqvae_lib.priors.base import DEFAULT_LABEL_DROPOUT, NULL_LABEL, guide
from vqvae_lib.priors.maskgit import random_mask
from vqvae_lib.recipes import build_prior, code_datasets, load_prior, train_settings
from vqvae_lib.seeding import seeded

KINDS = ("pixelcnn", "transformer", "maskgit")
MODULES = {"pixelcnn": vqvae_lib.priors.pixelcnn, "transformer": vqvae_lib.priors.transformer,
           "maskgit": vqvae_lib.priors.maskgit}
K, CLASSES, SIDE = 8, 3, 4


def tiny(kind, num_classes=CLASSES, scale=None, **kw):
    """A small prior of ``kind`` over K codes on grids up to SIDE x SIDE; with ``scale``, every weight redrawn
    from N(0, scale^2), so the logits are far from uniform and depend strongly on the label."""
    with seeded(0):
        if kind == "pixelcnn":
            model = GatedPixelCNN(K, hidden_channels=8, num_layers=2, num_classes=num_classes, **kw)
        else:
            cls = TransformerPrior if kind == "transformer" else MaskedPrior
            model = cls(K, SIDE, SIDE, embed_dim=8, num_layers=1, num_heads=2, num_classes=num_classes, **kw)
        if scale is not None:
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_(0, scale)
    return model


def class_tables(model):
    """The weights that hold the class embeddings, row 0 the null class: one per PixelCNN layer, else one."""
    if isinstance(model, GatedPixelCNN):
        return [layer.class_embed.weight for layer in model.layers]
    return [model.condition.embed.weight]


def grids(n, seed=0, side=SIDE):
    return torch.randint(K, (n, side, side), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the null class
@pytest.mark.parametrize("kind", KINDS)
def test_labels_none_is_the_trained_null_class(kind):
    """labels=None runs the null class's row (the same logits as a label of -1 in every row): autograd
    finds the gradient on that row alone, and a labelled batch puts none on it."""
    model = tiny(kind)
    idx = grids(5)
    assert all(table.shape[0] == CLASSES + 1 for table in class_tables(model))
    model(idx).square().sum().backward()
    for table in class_tables(model):
        assert table.grad[0].abs().sum() > 0 and not table.grad[1:].any()
    model.zero_grad()
    model(idx, torch.tensor([0, 2, 2, 0, 2])).square().sum().backward()
    for table in class_tables(model):
        # class c is row c + 1: rows 1 and 3 used; the null class (row 0) and class 1 (row 2) not
        assert not table.grad[0].any() and not table.grad[2].any()
        assert table.grad[1].abs().sum() > 0 and table.grad[3].abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx, torch.full((5,), NULL_LABEL)))
        mixed = model(idx, torch.tensor([1, NULL_LABEL, 0, NULL_LABEL, 2]))  # a batch of both, row by row
        assert torch.allclose(mixed[1], model(idx)[1], rtol=0, atol=1e-6)
        assert torch.allclose(mixed[2], model(idx, torch.zeros(5).long())[2], rtol=0, atol=1e-6)


def labels_seen(model, batch, seed=None):
    """The labels ``model.training_step(batch)`` passes to forward (a hook on it), with the global RNG
    seeded with ``seed`` first (None: left as it is)."""
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    try:
        if seed is not None:
            torch.manual_seed(seed)
        model.training_step(batch)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("kind", KINDS)
def test_training_drops_about_label_dropout_of_the_labels_and_evaluation_none(kind):
    n = 4000  # the fraction dropped has a standard deviation of sqrt(0.1 * 0.9 / 4000) = 0.0047
    model = tiny(kind).train()
    assert model.label_dropout == DEFAULT_LABEL_DROPOUT
    labels = torch.arange(n) % CLASSES
    batch = (grids(n, side=2), labels)
    seen = labels_seen(model, batch, seed=1)
    dropped = seen == NULL_LABEL
    assert torch.equal(seen[~dropped], labels[~dropped])  # the others keep their own label
    assert abs(float(dropped.float().mean()) - DEFAULT_LABEL_DROPOUT) < 4 * math.sqrt(0.1 * 0.9 / n)
    # drawn from the global RNG: the same seed drops the same labels, another seed others
    assert torch.equal(labels_seen(model, batch, seed=1), seen)
    assert not torch.equal(labels_seen(model, batch, seed=2), seen)
    # evaluation keeps every label, and with label_dropout 0 training does too; neither draws for it
    for keeper, mode in [(model, "eval"), (tiny(kind, label_dropout=0.0), "train")]:
        getattr(keeper, mode)()
        state = torch.get_rng_state()
        if kind == "maskgit" and mode == "train":  # the global RNG as the training masks alone leave it
            random_mask(n, 2, 2)
        expected, _ = torch.get_rng_state(), torch.set_rng_state(state)
        assert torch.equal(labels_seen(keeper, batch), labels)
        assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unconditional_prior_is_unchanged(kind):
    """No class table beyond the start token, no label given to forward, no draw for a label."""
    model = tiny(kind, num_classes=None).train()
    if kind == "pixelcnn":
        assert all(layer.class_embed is None for layer in model.layers)
    else:
        assert model.condition.embed.weight.shape[0] == 1
    batch = (grids(4), torch.zeros(4).long())
    state = torch.get_rng_state()
    if kind == "maskgit":  # its training masks are its only draws
        random_mask(4, SIDE, SIDE)
    expected, _ = torch.get_rng_state(), torch.set_rng_state(state)
    assert labels_seen(model, batch) is None
    assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_a_run_with_label_dropout_is_seeded_by_train(kind):
    data = TensorDataset(grids(64), torch.arange(64) % CLASSES)
    runs = []
    for caller_seed in (123, 456):  # the caller's global RNG: neither used by the run nor changed by it
        model = tiny(kind, label_dropout=0.5)
        torch.manual_seed(caller_seed)
        train(model, data, steps=3, batch_size=16, lr=1e-2, seed=4, progress=False, device="cpu")
        after = torch.rand(3)
        assert torch.equal(after, torch.rand(3, generator=torch.Generator().manual_seed(caller_seed)))
        runs.append(model.state_dict())
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())


# ---------------------------------------------------------------- guidance
def test_guide_is_the_formula_in_at_least_float32():
    cond, null = torch.randn(3, K, dtype=torch.float64), torch.randn(3, K, dtype=torch.float64)
    for w in (0.5, 1.0, 3.0):
        assert torch.allclose(guide(torch.cat([cond, null]), w), (1 + w) * cond - w * null, rtol=0, atol=1e-12)
    assert guide(torch.cat([cond, null]).bfloat16(), 1.0).dtype == torch.float32


SAMPLERS = [("pixelcnn", True), ("pixelcnn", False), ("transformer", True), ("transformer", False),
            ("maskgit", None)]


def sample(model, n, labels, generator, cache, **kw):
    extra = {} if cache is None else {"cache": cache}
    return model.sample(n, (3, SIDE), labels=labels, generator=generator, **extra, **kw)


@pytest.mark.parametrize("kind, cache", SAMPLERS)
def test_guidance_zero_is_the_unguided_sampler_in_one_pass(kind, cache):
    """w = 0 draws exactly the unguided codes with the same generator, running only the n rows; w > 0 runs
    each step once over the doubled batch (2n rows). The rows are counted where every path passes: the
    PixelCNN's code embedding, the transformers' head."""
    model = tiny(kind, scale=0.5).double()
    labels = torch.tensor([0, 2, 1, 2])
    batches = []
    watched = model.embed if kind == "pixelcnn" else model.head
    handle = watched.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    try:
        runs = {}
        for name, extra in [("plain", {}), ("zero", {"guidance": 0.0}), ("guided", {"guidance": 2.0})]:
            codes = sample(model, 4, labels, torch.Generator().manual_seed(0), cache, **extra)
            runs[name], batches[:] = (codes, set(batches)), []
    finally:
        handle.remove()
    assert torch.equal(runs["zero"][0], runs["plain"][0]) and runs["zero"][1] == runs["plain"][1] == {4}
    assert runs["guided"][1] == {8} and not torch.equal(runs["guided"][0], runs["plain"][0])


def recorded_draws(monkeypatch, kind):
    """Patch the module's ``draw`` to record (logits, codes) of every call, drawing as before."""
    calls, real = [], MODULES[kind].draw

    def recording(logits, temperature, generator):
        codes = real(logits, temperature, generator)
        calls.append((logits.clone(), codes.clone()))
        return codes
    monkeypatch.setattr(MODULES[kind], "draw", recording)
    return calls


@pytest.mark.parametrize("kind, cache", SAMPLERS)
@pytest.mark.parametrize("w", [0.5, 3.0])
def test_a_guided_draw_is_from_the_formulas_logits(monkeypatch, kind, cache, w):
    """Every draw of a guided sampler is from (1 + w) * logits(. | y) - w * logits(. | null), the two
    recomputed here by two separate forward passes over the grid so far (float64: the same up to rounding)."""
    model = tiny(kind, scale=0.5).double().eval()
    labels = torch.tensor([1, 0, 2])
    calls = recorded_draws(monkeypatch, kind)
    rounds = []
    extra = {"on_round": lambda s, grid: rounds.append(grid)} if kind == "maskgit" else {}
    out = sample(model, 3, labels, torch.Generator().manual_seed(1), cache, guidance=w, **extra)
    with torch.no_grad():
        if kind == "maskgit":  # a round's draws: the positions still masked before it
            before = [torch.full_like(out, model.mask_id)] + rounds[:-1]
            for (logits, _), grid in zip(calls, before, strict=True):
                masked = (grid == model.mask_id).flatten(1)
                both = [model(grid, y).flatten(2).transpose(1, 2)[masked] for y in (labels, None)]
                assert torch.allclose(logits, (1 + w) * both[0] - w * both[1], rtol=0, atol=1e-9)
        else:  # one draw per position in raster order; later positions do not matter (causality)
            height, width = out.shape[1:]
            assert len(calls) == height * width
            for t, (logits, codes) in enumerate(calls):
                i, j = divmod(t, width)
                assert torch.equal(codes, out[:, i, j])
                both = [model(out, y)[:, :, i, j] for y in (labels, None)]
                assert torch.allclose(logits, (1 + w) * both[0] - w * both[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
@pytest.mark.parametrize("labels", [torch.tensor([0, 2, 1, 2]), None])
def test_cached_and_naive_sampling_agree_guided_and_on_the_null_class(kind, labels):
    model = tiny(kind, scale=0.5).double()
    guidances = [0.0, 1.0, 3.0] if labels is not None else [0.0]
    for w in guidances:
        for seed in range(2):
            draws = [model.sample(4, (3, SIDE), labels=labels, generator=torch.Generator().manual_seed(seed),
                                  cache=cache, guidance=w) for cache in (True, False)]
            assert draws[0].shape == (4, 3, SIDE) and torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("kind", KINDS)
def test_bad_guidance_and_label_dropout_are_refused(kind):
    model = tiny(kind)
    for w, message in [(1.0, "guidance needs labels"), (-0.5, "guidance must be a finite number >= 0"),
                       (float("nan"), "finite"), (float("inf"), "finite"), (True, "finite"), ("1", "finite")]:
        labels = None if message == "guidance needs labels" else 1
        with pytest.raises(ValueError, match=message):
            model.sample(2, (2, 2), labels=labels, guidance=w)
    with pytest.raises(ValueError, match="guidance needs a class-conditional prior"):
        tiny(kind, num_classes=None).sample(2, (2, 2), guidance=1.0)
    for p in (-0.1, 1.0, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=r"label_dropout must be a probability in \[0, 1\)"):
            tiny(kind, label_dropout=p)
    untrained_null = tiny(kind, label_dropout=0.0)  # allowed, but it has no trained null class to sample
    untrained_null.sample(2, (2, 2), labels=1)
    for labels, w in [(None, 0.0), (1, 1.0)]:
        with pytest.raises(ValueError, match=r"trained without a null class \(label_dropout=0\)"):
            untrained_null.sample(2, (2, 2), labels=labels, guidance=w)
    with pytest.raises(ValueError, match=r"labels must be \(2,\) in \[0, 3\)$"):  # -1 is no class to sample
        model.sample(2, (2, 2), labels=NULL_LABEL)
    with pytest.raises(ValueError, match=r"labels must be \(2,\) in \[0, 3\) \(or -1, the null class\)"):
        model(grids(2), torch.tensor([0, -2]))


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_keep_label_dropout_and_the_null_class(kind, tmp_path):
    model = tiny(kind, scale=0.5, label_dropout=0.3)
    loaded = load_prior(model.save_pretrained(tmp_path / kind))
    assert loaded.config == model.config and loaded.config["label_dropout"] == loaded.label_dropout == 0.3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(class_tables(model), class_tables(loaded)))
    with torch.no_grad():
        assert torch.equal(loaded(grids(3)), model(grids(3)))


# ---------------------------------------------------------------- learning
# The ci PixelCNN at half its step budget (150 of 300 steps), on the codes of seed 0's ci VQ-VAE: the run
# tests/test_learning.py trains, shared within a test run (whichever test asks first trains it, about 30 s).
# This test's own part (encoding, the ci classifier, two priors, 3 x 500 decoded samples) took 21-24 s on one
# thread of a shared 2-core machine (the two priors at the full budget: 22-28 s each under load, too long).
LEARNING_STEPS, SAMPLES = 150, 500
# A class-conditional PixelCNN's samples without labels (its null class) must be about as close to the test
# digits as an unconditional PixelCNN's. The ratio: the Fréchet distance of decoded samples to the test split
# in the ci classifier's features, over that of decoded uniform codes. Before the null class was trained,
# labels=None ran an untrained path: a ratio of 1.03 (the issue: 893 against uniform codes' 867); the same
# prior with label_dropout=0 here, 1.8 (at 300 steps). Measured with prior seeds 0-4: null class 0.55-0.59,
# unconditional 0.46-0.52, null over unconditional 1.11-1.26 (seed 0, the test's: 0.546 / 0.492 = 1.11).
# The bounds leave every one of those seeds a margin of at least 18 % (1.5 against 1.26, 0.75 against 0.59).
RATIO_SLACK, MAX_NULL_RATIO = 1.5, 0.75


@pytest.fixture(scope="module")
def learning_root(tmp_path_factory):
    """tests/test_learning.py's ``runs_root`` (the same folder, so its seed-0 VQ-VAE is trained once)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def test_the_null_class_samples_about_as_well_as_an_unconditional_prior(learning_root, one_thread):
    from test_learning import seed_run  # the shared, file-locked ci run of seed 0

    vqvae = VQVAE.from_pretrained(seed_run(learning_root, 0)["dir"]).eval()
    start = time.perf_counter()
    codes = code_datasets(vqvae, "mnist-5k", device="cpu")
    train_images, test_images = load_images("mnist-5k", "train"), load_images("mnist-5k", "test")
    classifier = train_classifier(train_images, "ci", seed=0, device="cpu")
    test_feats = extract_features(classifier, test_images, device="cpu")

    def frechet(code_grids):
        with torch.no_grad():
            images = vqvae.decode_indices(code_grids).clamp(0, 1)
        return frechet_distance(extract_features(classifier, images, device="cpu"), test_feats)

    uniform = frechet(torch.randint(vqvae.quantizer.num_codes, (SAMPLES, 7, 7),
                                    generator=torch.Generator().manual_seed(0)))
    preset, ratio = get_preset("ci"), {}
    for name, num_classes in [("null class", 10), ("unconditional", None)]:
        prior = build_prior(preset, vqvae.quantizer.num_codes, num_classes, seed=0)
        train(prior, codes["train"], **train_settings(preset, "prior", steps=LEARNING_STEPS), seed=0,
              progress=False, device="cpu")
        ratio[name] = frechet(prior.sample(SAMPLES, (7, 7), generator=torch.Generator().manual_seed(1))) / uniform
    seconds = time.perf_counter() - start
    print(f"Fréchet ratios {ratio}, {seconds:.0f} s")
    assert ratio["null class"] <= MAX_NULL_RATIO, ratio
    assert ratio["null class"] <= RATIO_SLACK * ratio["unconditional"], ratio
