"""The visualizers' logic, driven without a front end: set values, fire handlers, check what changed."""
import math

import pytest
import torch
from conftest import SMALL_VQVAE_CODES

from vqvae_lib import VQVAE, GatedPixelCNN, MaskedPrior, TransformerPrior
from vqvae_lib.seeding import seeded
from vqvae_lib.widgets import (
    REMEDIES,
    RESTART_AFTER,
    CodebookAtlasState,
    LatentEditorState,
    PlaygroundState,
    PriorSamplerState,
    codebook_atlas,
    commitment_kl_explorer,
    decoder_reach,
    kl_quadrature,
    kl_readout,
    latent_editor,
    measured_reach,
    prior_sampler,
    quantization_playground,
)
from vqvae_lib.widgets.render import code_colors

K = SMALL_VQVAE_CODES


@pytest.fixture(scope="module")
def images():
    x = torch.zeros(24, 1, 28, 28)
    # some structure, so that several codes occur
    x[:, :, 6:22, 10:18] = torch.rand(24, 1, 16, 8, generator=torch.Generator().manual_seed(1))
    return x


@pytest.fixture(scope="module")
def prior():
    with seeded(2):
        return GatedPixelCNN(K, hidden_channels=8, num_layers=2, num_classes=10).eval()


def is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- codebook atlas
def test_atlas_statistics(vqvae, images):
    s = CodebookAtlasState(vqvae, images)
    assert s.indices.shape == (24, 7, 7)
    assert int(s.counts.sum()) == 24 * 49
    assert torch.all(s.counts[s.order][:-1] >= s.counts[s.order][1:])  # most used first
    assert torch.equal(s.order[s.rank], torch.arange(K))
    assert s.decoded_tiles().shape == (K, 1, 28, 28)
    assert s.mean_patches().shape == (K, 1, 4, 4)
    top = int(s.order[0])
    assert s.summary(top)["count"] == int(s.counts.max()) and s.summary(top)["rank"] == 0
    assert int(s.occurrences(top)[s.top_images(top, 1)]) == int(s.occurrences(top).max())


def test_atlas_selection_updates_views(vqvae, images):
    view = codebook_atlas(vqvae, images)
    before = {k: w.value for k, w in view.images.items()}
    assert all(is_png(v) for v in before.values())
    view.controls["rank"].value = 1
    assert view.controls["code"].value == int(view.state.order[1])
    assert view.images["where"].value != before["where"] and view.images["atlas"].value != before["atlas"]
    assert f"<b>{int(view.state.order[1])}</b>" in view.info.value
    code = int(view.state.order[2])
    view.controls["code"].value = code  # typing a code moves the rank slider
    assert view.controls["rank"].value == 2
    view.controls["mode"].value = "mean"
    assert view.images["atlas"].value != before["atlas"] and not view.has_error


@pytest.mark.parametrize("bad", [K, 99, -1])
def test_atlas_refuses_out_of_range_code(vqvae, images, bad):
    view = codebook_atlas(vqvae, images)
    where = view.images["where"].value
    view.controls["code"].value = bad  # must not raise
    assert view.has_error and "out of range" in view.message.value
    assert view.images["where"].value == where
    with pytest.raises(ValueError):
        view.state.summary(bad)


# ---------------------------------------------------------------- latent editor
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("downsample", [2, 4, 8])
def test_decoder_reach_equals_the_measured_reach(layers, downsample):
    # derived from the layers' kernels, strides and paddings, measured by changing a latent cell: they agree
    with seeded(layers):
        model = VQVAE(num_codes=4, code_dim=2, hidden_channels=8, res_channels=4, num_res_layers=layers,
                      downsample=downsample)
    assert decoder_reach(model) == measured_reach(model)
    if downsample == 4:  # 3x3 conv + L residual 3x3 convs widen by 1 + L cells; two 4x4 stride-2 transposed
        assert decoder_reach(model) == 4 * (1 + layers) + 3  # convs make that 4 (1 + L) + 3 pixels


def test_measured_reach_follows_a_changed_layer():
    """The measurement is independent of the derivation: a decoder with a wider kernel (which
    decoder_reach handles, and a formula counting 3x3 kernels would not) is measured wider."""
    with seeded(0):
        model = VQVAE(num_codes=4, code_dim=2, hidden_channels=8, res_channels=4, num_res_layers=1)
        model.decoder[0] = torch.nn.Conv2d(2, 8, 5, padding=2)  # a 5x5 in place of the 3x3: one cell more per side
    r = 1 + 1 + 1  # cells: the 5x5 convolution's two, the residual layer's one
    assert measured_reach(model) == decoder_reach(model) == 4 * r + 3


def test_edit_changes_decoded_image_only_near_the_cell(vqvae, images):
    s = LatentEditorState(vqvae, images[0])
    before = s.decoded().clone()
    assert s.set_code(0, 0, (int(s.indices[0, 0]) + 3) % K)
    diff = (s.decoded() - before).abs()[0]  # (28, 28)
    limit = 4 + s.reach  # the corner cell's block is pixels 0..3; nothing past its reach may move
    assert diff[limit:, :].max() < 1e-6 and diff[:, limit:].max() < 1e-6
    assert diff[:4, :4].max() > 1e-4  # ... and its own block does
    assert diff.gt(1e-6).float().mean() < 0.4


def test_editor_undo_reset_and_history(vqvae, images):
    s = LatentEditorState(vqvae, images[3])
    original = s.decoded().clone()
    assert not s.set_code(2, 2, int(s.indices[2, 2]))  # same code: not an edit
    s.set_code(2, 2, (int(s.indices[2, 2]) + 1) % K)
    s.set_code(4, 1, (int(s.indices[4, 1]) + 1) % K)
    assert s.edited_cells == [(2, 2), (4, 1)]
    assert s.undo() and s.edited_cells == [(2, 2)]
    s.reset()
    assert s.edited_cells == [] and not s.undo()
    assert torch.equal(s.decoded(), original)
    for bad in [(7, 0, 0), (0, -1, 0), (0, 0, K), (0, 0, -1), (0, 0, 1.5)]:
        with pytest.raises(ValueError):
            s.set_code(*bad)


def test_editor_widget(vqvae, images):
    view = latent_editor(vqvae, images[5])
    c = view.controls
    first = view.images["editor"].value
    c["row"].value, c["col"].value = 1, 2
    # selecting a cell shows its code, and is not an edit
    assert c["code"].value == int(view.state.indices[1, 2]) and view.state.edited_cells == []
    old = c["code"].value
    c["code"].value = (old + 5) % K
    assert view.state.edited_cells == [(1, 2)] and view.images["editor"].value != first
    edited = view.images["editor"].value
    c["code"].value = K + 3  # out of range: a message, the grid unchanged
    assert view.has_error and "out of range" in view.message.value
    assert int(view.state.indices[1, 2]) == (old + 5) % K and view.images["editor"].value == edited
    c["undo"].click()
    assert view.state.edited_cells == [] and c["code"].value == old and not view.has_error
    c["undo"].click()
    assert "Nothing to undo" in view.message.value
    before = view.images["editor"].value
    c["random"].click()  # another code into the selected cell: an edit, shown in the picture and the code box
    assert view.state.edited_cells == [(1, 2)] and c["code"].value != old
    assert int(view.state.indices[1, 2]) == c["code"].value and view.images["editor"].value != before
    c["reset"].click()
    assert view.state.edited_cells == [] and c["code"].value == old and view.images["editor"].value == before
    assert view.last_update_ms > 0


def test_editor_code_labels_use_a_categorical_palette():
    colors = code_colors(K)
    assert colors.shape == (K, 3)
    # neighbouring codes differ clearly (a sequential map such as viridis would give near-equal colors)
    assert min(float(abs(colors[k] - colors[k + 1]).sum()) for k in range(K - 1)) > 0.1


# ---------------------------------------------------------------- 2-D playground
def codes_used_after(steps=60, **settings):
    state = PlaygroundState(num_points=400, num_codes=16, **settings)
    state.step(steps)
    return state.codes_used


def test_bad_init_collapses_and_each_remedy_fixes_it():
    assert PlaygroundState(num_points=400, num_codes=16).codes_used == 1  # the clump: one code is nearest to all
    assert codes_used_after() <= 2  # plain training: the rest never win a point, so never move
    assert codes_used_after(kmeans_init=True) >= 14
    assert codes_used_after(restart_after=RESTART_AFTER) >= 14
    assert codes_used_after(ema=True, restart_after=RESTART_AFTER) >= 14
    # EMA alone: nothing moves a dead code until Laplace smoothing pulls it towards the origin, after
    # about ln(eps) / ln(decay) = 1,146 steps; plain training never revives it
    assert codes_used_after(ema=True) <= 2
    assert codes_used_after(1000, ema=True) <= 2
    assert codes_used_after(1500, ema=True) >= 14
    assert codes_used_after(1500) <= 2


def test_killing_codes_shows_collapse_and_restart_revives_them():
    for restart_after, expect_dead in ((0, 8), (RESTART_AFTER, 0)):
        state = PlaygroundState(num_points=400, num_codes=16, init="data", restart_after=restart_after)
        state.step(60)
        assert state.codes_used == 16
        with torch.no_grad():  # kill half of the codes: move them far from every point
            state.quantizer.codebook[:8] = torch.tensor([30.0, 30.0]) + torch.randn(8, 2)
        assert int(state.dead().sum()) == 8
        state.step(60)
        assert int(state.dead().sum()) == expect_dead


def test_playground_is_seeded_and_validates():
    a, b = PlaygroundState(num_points=200, kmeans_init=True), PlaygroundState(num_points=200, kmeans_init=True)
    a.step(20), b.step(20)
    assert a.history == b.history and torch.equal(a.quantizer.codebook, b.quantizer.codebook)
    for bad in [dict(num_codes=300, num_points=200), dict(num_codes=0), dict(init="nowhere"), dict(lr=0.0),
                dict(restart_after=-1)]:
        with pytest.raises(ValueError):
            PlaygroundState(**bad)


def test_playground_widget():
    view = quantization_playground(num_points=300)
    c = view.controls
    assert set(REMEDIES) <= set(c)  # one toggle per remedy, named as the quantizer's option
    first = view.images["plane"].value
    c["beta"].value, c["lr"].value = 1.0, 0.01
    assert view.state.beta == 1.0 and math.isclose(view.state.lr, 0.01, rel_tol=1e-6)
    c["step"].click()
    assert view.state.steps == 1 and view.images["plane"].value != first
    c["n_steps"].value = 30
    c["run"].click()
    assert view.state.steps == 31 and "codes used" in view.message.value
    old = view.state
    c["points"].value = 10  # K = 16 > 10 points: refused, the old run stays
    assert view.has_error and "K = 16" in view.message.value and view.state is old
    c["K"].value = 8  # now valid: a new run from step 0
    assert view.state is not old and view.state.num_codes == 8 and view.state.steps == 0
    c["kmeans_init"].value = True
    c["run"].click()
    assert view.state.codes_used == 8 and not view.has_error
    c["restart_after"].value = True  # the toggle sets the quantizer's restart_after, as the remedy table does
    assert view.state.quantizer.restart_after == RESTART_AFTER and view.state.settings["restart_after"] == RESTART_AFTER
    c["restart_after"].value = False
    assert view.state.quantizer.restart_after == 0


def test_has_error_follows_the_message():
    view = commitment_kl_explorer()
    assert not view.has_error and "vq-error" not in view.message._dom_classes
    view.say("refused", error=True)
    assert view.has_error and "vq-error" in view.message._dom_classes
    view.say("fine")
    assert not view.has_error and "vq-error" not in view.message._dom_classes


# ---------------------------------------------------------------- commitment as KL
@pytest.mark.parametrize("distance,s", [(0.0, 0.5), (0.3, 0.1), (1.0, 0.5), (2.5, 1.7), (3.0, 0.1)])
def test_kl_readout_equals_formula(distance, s):
    r = kl_readout(distance, s)
    assert r["kl_formula"] == distance ** 2 / (2 * s ** 2)
    assert abs(r["kl_numeric"] - r["kl_formula"]) < 1e-8 * max(1.0, r["kl_formula"])


def test_kl_quadrature_unequal_widths():
    mq, sq, mp, sp = 0.4, 0.7, -0.5, 1.3
    exact = math.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5
    assert abs(kl_quadrature(mq, sq, mp, sp) - exact) < 1e-9
    for bad in [(1.0, 0.0), (-1.0, 0.5)]:
        with pytest.raises(ValueError):
            kl_readout(*bad)


def test_kl_widget_readout_follows_sliders():
    view = commitment_kl_explorer()
    first, html = view.images["plot"].value, view.readout.value
    view.controls["distance"].value = 1.3
    view.controls["s"].value = 0.7
    formula = 1.3 ** 2 / (2 * 0.7 ** 2)
    assert abs(view.state["kl_numeric"] - formula) < 1e-8
    assert f"<b class='vq-kl-numeric'>{formula:.4f}</b>" in view.readout.value
    assert f"<b class='vq-kl-formula'>{formula:.4f}</b>" in view.readout.value
    assert view.readout.value != html and view.images["plot"].value != first


# ---------------------------------------------------------------- prior sampler
def test_sampler_state(vqvae, prior):
    s = PriorSamplerState(vqvae, prior, (7, 7), num_samples=4)
    images, grids = s.sample(1.0, label=3, seed=0)
    assert images.shape == (4, 1, 28, 28) and grids.shape == (4, 7, 7)
    assert torch.equal(s.sample(1.0, 3, 0)[1], grids)  # seeded
    with pytest.raises(ValueError):
        s.sample(0.0)
    with pytest.raises(ValueError):
        s.sample(1.0, label=10)
    with pytest.raises(ValueError):
        PriorSamplerState(vqvae, GatedPixelCNN(K + 1, hidden_channels=8, num_layers=2), (7, 7))
    with pytest.raises(ValueError):
        PriorSamplerState(vqvae, GatedPixelCNN(K, hidden_channels=8, num_layers=2), (7, 7)).sample(1.0, label=0)


@pytest.mark.parametrize("cls", [TransformerPrior, MaskedPrior])
def test_sampler_state_takes_the_transformer_priors(vqvae, cls):
    with seeded(2):
        other = cls(K, embed_dim=8, num_layers=1, num_heads=2, num_classes=10)
    s = PriorSamplerState(vqvae, other, (7, 7), num_samples=4)
    images, grids = s.sample(0.8, label=None, seed=1)  # a random class per sample
    assert images.shape == (4, 1, 28, 28) and grids.shape == (4, 7, 7) and int(grids.max()) < K
    assert torch.equal(s.sample(0.8, None, 1)[1], grids) and not torch.equal(s.sample(0.8, None, 2)[1], grids)
    with pytest.raises(ValueError, match="larger than"):
        PriorSamplerState(vqvae, other, (8, 8), num_samples=4).sample(1.0)


def test_sampler_widget(vqvae, prior):
    view = prior_sampler(vqvae, prior, (7, 7), num_samples=4)
    first = view.images["samples"].value
    assert is_png(first)
    view.controls["temperature"].value = 0.3
    low_t = view.images["samples"].value
    assert low_t != first
    view.controls["sample"].click()
    assert view.seed == 1 and view.images["samples"].value != low_t
    view.controls["class"].value = 7
    assert "class 7" in view.message.value


# ---------------------------------------------------------------- static stand-ins (no kernel)
@pytest.fixture
def every_visualizer(vqvae, images, prior):
    return {"atlas": lambda: codebook_atlas(vqvae, images), "editor": lambda: latent_editor(vqvae, images[0]),
            "playground": lambda: quantization_playground(num_points=60, num_codes=8),
            "kl": lambda: commitment_kl_explorer(), "sampler": lambda: prior_sampler(vqvae, prior, (7, 7), 4)}


@pytest.mark.parametrize("name", ["atlas", "editor", "playground", "kl", "sampler"])
def test_each_visualizer_shows_static_states_where_no_kernel_runs(every_visualizer, name):
    """The display bundle carries, beside the live widget, an HTML stand-in: the note that the widget is
    live in Jupyter and Colab, and 3 states of different pictures; drawing them leaves the widget as it
    was and leaves no widget open behind."""
    import base64
    import re

    import ipywidgets

    view = every_visualizer[name]()
    before = {k: c.value for k, c in view.controls.items() if hasattr(c, "value")}
    pictures = {k: image.value for k, image in view.images.items()}
    open_widgets = len(ipywidgets.widgets.widget._instances)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    page = bundle["text/html"]
    assert "Live in Jupyter and Colab" in page
    figures = re.findall(r"<figure.*?</figure>", page, re.S)
    pngs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert len(figures) == 3 and all(is_png(p) for p in pngs)
    per_state = [tuple(re.findall(r"base64,([^\"]+)", f)) for f in figures]
    assert len(set(per_state)) == 3, "two states draw the same pictures"
    assert {k: c.value for k, c in view.controls.items() if hasattr(c, "value")} == before
    assert {k: image.value for k, image in view.images.items()} == pictures
    assert len(ipywidgets.widgets.widget._instances) == open_widgets, "the scratch copies were left open"


# ---------------------------------------------------------------- the chapter as committed
def test_chapter_notebook_keeps_every_visualizer_state():
    """The executed chapter carries the widgets' state, so a static page (or GitHub) shows each
    visualizer's first picture without a kernel."""
    import base64
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / "07_exploring_the_codebook.ipynb"
    if not path.exists():
        pytest.skip("chapter 7 is not in this checkout")
    nb = json.loads(path.read_text())
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    pictures = {}
    for model in state.values():
        if model["model_name"] == "ImageModel":
            for cls in model["state"].get("_dom_classes", []):
                pictures[cls] = [base64.b64decode(b["data"]) for b in model.get("buffers", [])]
    for cls in ("vq-atlas-image", "vq-atlas-where", "vq-editor-image", "vq-play-image", "vq-kl-image",
                "vq-sampler-image"):
        assert cls in pictures and pictures[cls] and is_png(pictures[cls][0]), f"no stored picture for {cls}"
    shown = {o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})}
    assert shown <= set(state), "a displayed widget has no stored state"
