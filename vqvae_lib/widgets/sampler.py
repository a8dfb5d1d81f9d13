"""Prior sampler: draw code grids from a prior (PixelCNN, transformer or MaskGIT), decode them, show them as a grid."""
from __future__ import annotations

import ipywidgets as widgets
import torch

from .base import WIDE, Visualizer, hbox, image_widget, labelled, single_threaded
from .render import png, tile, to_rgb, upscale


class PriorSamplerState:
    """Samples of ``vqvae.decode_indices(prior.sample(...))``, for any prior with ``num_codes``,
    ``num_classes`` and ``sample(n, shape, labels=, temperature=, generator=)`` (the three in the library).

    grid_shape: (h, w) of the code grids the prior was trained on (e.g. ``prior_metrics["grid_shape"]``).
    ``sample(temperature, label, seed)`` -> (images (n, C, H, W), grids (n, h, w)); label None with a
    class-conditional prior draws a random class per sample.
    """

    def __init__(self, vqvae, prior, grid_shape=(7, 7), num_samples: int = 16):
        if prior.num_codes != vqvae.quantizer.num_codes:
            raise ValueError(f"the prior models {prior.num_codes} codes but the VQ-VAE has "
                             f"{vqvae.quantizer.num_codes}")
        self.vqvae, self.prior = vqvae.eval(), prior.eval()
        self.grid_shape = tuple(int(v) for v in grid_shape)
        self.num_samples = num_samples
        self.num_classes = prior.num_classes

    def check(self, temperature: float, label) -> None:
        if not temperature > 0:
            raise ValueError(f"the temperature must be positive, got {temperature}")
        if label is not None:
            if not self.num_classes:
                raise ValueError("this prior is unconditional: it takes no class")
            if not 0 <= int(label) < self.num_classes:
                raise ValueError(f"class {label} is out of range: choose 0 to {self.num_classes - 1}")

    @torch.no_grad()
    @single_threaded  # h * w small forward passes: one thread is fastest, and repeatable
    def sample(self, temperature: float = 1.0, label: int | None = None, seed: int = 0):
        self.check(temperature, label)
        g = torch.Generator().manual_seed(int(seed))
        n = self.num_samples
        labels = None
        if self.num_classes:  # a conditional prior was trained with labels: always give one
            labels = (torch.full((n,), int(label), dtype=torch.long) if label is not None
                      else torch.randint(self.num_classes, (n,), generator=g))
        grids = self.prior.sample(n, self.grid_shape, labels=labels, temperature=temperature, generator=g)
        device = next(self.vqvae.parameters()).device
        images = self.vqvae.decode_indices(grids.to(device)).float().cpu().clamp(0, 1)
        return images, grids.cpu()

    def sample_png(self, temperature: float = 1.0, label: int | None = None, seed: int = 0, scale: int = 3) -> bytes:
        images, _ = self.sample(temperature, label, seed)
        return png(tile(upscale(to_rgb(images), scale, batch=True), pad=3))


@single_threaded
def prior_sampler(vqvae, prior, grid_shape=(7, 7), num_samples: int = 16, temperature: float = 1.0,
                  seed: int = 0) -> Visualizer:
    """Temperature slider, class choice (for a conditional prior), a Sample button; decoded samples
    as a grid. Moving the slider redraws with the same random seed; Sample draws new ones.
    Returns the widget; ``.state`` is a :class:`PriorSamplerState`."""
    state = PriorSamplerState(vqvae, prior, grid_shape, num_samples)
    temp = labelled(widgets.FloatSlider(value=temperature, min=0.1, max=2.0, step=0.05, description="temperature",
                                        style=WIDE, continuous_update=False), "vq-sampler-temperature")
    # -1 stands for "any class": a Dropdown reads a value of None as "nothing selected"
    options = [("any (random per sample)", -1)] + [(str(c), c) for c in range(state.num_classes or 0)]
    label = labelled(widgets.Dropdown(options=options, value=-1, description="class",
                                      disabled=not state.num_classes), "vq-sampler-class")
    button = labelled(widgets.Button(description="Sample", icon="dice"), "vq-sampler-sample")
    picture = labelled(image_widget(), "vq-sampler-image")
    view = Visualizer(state, {"temperature": temp, "class": label, "sample": button},
                      [hbox([temp, label, button]), picture], "vq-sampler")
    view.images = {"samples": picture}
    view.seed = seed

    def draw_now(_=None) -> None:
        c = None if label.value == -1 else label.value
        picture.value = state.sample_png(temp.value, c, view.seed)
        what = "random classes" if c is None else f"class {c}"
        view.say(f"{num_samples} samples, {what}, temperature {temp.value:.2f}, seed {view.seed}.")

    def new_seed(_) -> None:
        view.seed += 1
        draw_now()

    temp.observe(view.guarded(draw_now), names="value")
    label.observe(view.guarded(draw_now), names="value")
    button.on_click(view.guarded(new_seed))
    view.guarded(draw_now)()
    return view.show_states(lambda: prior_sampler(vqvae, prior, grid_shape, num_samples, temperature, seed), [
        (f"temperature {t:g}", [("temperature", t)]) for t in (0.5, 1.0, 1.5)])
