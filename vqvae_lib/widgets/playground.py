"""2-D quantization playground: points in the plane, a small codebook, and codebook collapse.

The model is a VQ-VAE shrunk to its quantizer: each point's encoder output ``z_e`` is a free 2-D
vector tied to its data point by a spring (``||z_e - x||^2`` stands in for the reconstruction
term), quantized by :class:`vqvae_lib.quantizers.vq.VectorQuantizer`, so the loss is
``||z_e - x||^2 + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2`` (or EMA codebook updates).
From a bad initial codebook (a clump far from the data) plain training uses one code; k-means
init and dead-code restarts each bring the whole codebook into use within a few dozen steps. EMA
alone does too, but only after about ln(eps) / ln(decay) ~ 1,150 steps: a code that wins no point
gets no update, until the Laplace smoothing pulls it towards the origin, through the data.
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quantizers.vq import VectorQuantizer, nearest_code, perplexity_from_counts
from .base import CLICK, WIDE, Visualizer, hbox, image_widget, labelled, one_thread, single_threaded
from .render import code_colors, new_figure, png

INITS = {"far": "a clump far from the data (bad init)",
         "small": "small random values near 0 (the library's default)",
         "data": "randomly chosen data points"}
VIEW = (-3.5, 4.5)  # the plotted square (both axes): the data ring and the bad clump fit in it
RESTART_AFTER = 20  # the playground's dead-code restart: a code unused for this many steps is moved
# The remedies against collapse, by the name of the VectorQuantizer option each one sets, and the
# settings that turn it on: the playground's toggles and chapter 7's exercise use these names.
REMEDIES = {"ema": {"ema": True}, "kmeans_init": {"kmeans_init": True},
            "restart_after": {"restart_after": RESTART_AFTER}}


def gaussian_mixture(n: int = 600, clusters: int = 8, radius: float = 2.0, std: float = 0.25,
                     seed: int = 0) -> torch.Tensor:
    """(n, 2) points from ``clusters`` Gaussians evenly spaced on a circle."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(clusters, (n,), generator=g)
    angle = 2 * math.pi * c.float() / clusters
    return torch.stack([angle.cos(), angle.sin()], 1) * radius + std * torch.randn(n, 2, generator=g)


class PlaygroundState:
    """The playground's model and its training. ``x``: (N, 2) data; ``z``: (N, 2) encoder outputs;
    ``quantizer.codebook``: (K, 2). ``step(n)`` trains n full-batch steps (Adam, seeded).

    ``ema``, ``kmeans_init`` and ``restart_after`` (steps unused before a code is restarted; 0 = never)
    are the :class:`~vqvae_lib.quantizers.vq.VectorQuantizer` options of the same names.
    Changing ``beta`` or ``lr`` takes effect at the next step; other settings need a new state.
    """

    def __init__(self, num_points: int = 600, num_codes: int = 16, beta: float = 0.25, lr: float = 0.05,
                 ema: bool = False, kmeans_init: bool = False, restart_after: int = 0,
                 init: str = "far", seed: int = 0):
        if num_points < 1:
            raise ValueError(f"need at least one point, got {num_points}")
        if not 1 <= num_codes <= num_points:
            raise ValueError(f"K = {num_codes} codes but only {num_points} points: choose K from 1 to "
                             f"{num_points} (more codes than points can never all be used)")
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
        if beta < 0 or lr <= 0:
            raise ValueError(f"beta must be >= 0 and the learning rate > 0, got beta={beta}, lr={lr}")
        if restart_after < 0:
            raise ValueError(f"restart_after counts steps (0 = no restarts), got {restart_after}")
        self.settings = dict(num_points=num_points, num_codes=num_codes, ema=ema, kmeans_init=kmeans_init,
                             restart_after=restart_after, init=init, seed=seed)
        self.seed, self.num_codes = seed, num_codes
        self.x = gaussian_mixture(num_points, seed=seed)
        self.z = nn.Parameter(self.x.clone())
        self.quantizer = VectorQuantizer(num_codes, 2, beta=beta, ema=ema, kmeans_init=kmeans_init,
                                         restart_after=restart_after, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            if init == "far":
                codes = torch.tensor([3.5, 3.5]) + 0.15 * torch.randn(num_codes, 2, generator=g)
            elif init == "small":
                codes = torch.empty(num_codes, 2).uniform_(-1 / num_codes, 1 / num_codes, generator=g)
            else:
                codes = self.x[torch.randperm(num_points, generator=g)[:num_codes]].clone()
        self.quantizer.set_codes(codes)
        params = [self.z] + ([] if ema else [self.quantizer.codebook])
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.steps = 0
        self.history = {"step": [], "codes_used": [], "loss": []}
        with torch.no_grad():
            self.quantizer.eval()  # a training-mode call would already init / update the codes
            self._record(self._loss_terms()[0])

    # ----- settings that apply live -----
    @property
    def beta(self) -> float:
        return self.quantizer.beta

    @beta.setter
    def beta(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"beta must be >= 0, got {value}")
        self.quantizer.beta = float(value)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"the learning rate must be > 0, got {value}")
        for group in self.optimizer.param_groups:
            group["lr"] = float(value)

    # ----- training -----
    def _loss_terms(self):
        out = self.quantizer(self.z.t()[None, :, :, None])  # (1, 2, N, 1): N "positions" of a 2-D map
        return F.mse_loss(self.z, self.x) + out.loss, out

    def _record(self, loss) -> None:
        self.history["step"].append(self.steps)
        self.history["codes_used"].append(self.codes_used)
        self.history["loss"].append(float(loss.detach()))

    def step(self, n: int = 1) -> dict:
        """Train n full-batch steps. Returns the summary after them."""
        self.quantizer.train()
        with one_thread():  # tiny tensors: threads only add overhead (and change the rounding)
            self._train(int(n))
        return self.summary()

    def _train(self, n: int) -> None:
        for _ in range(n):
            loss, _ = self._loss_terms()  # k-means and restarts draw from the quantizer's seeded generators
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.steps += 1
            self._record(loss)

    # ----- what the picture shows -----
    @torch.no_grad()
    def assignments(self) -> torch.Tensor:
        """(N,) the nearest code of each encoder output now."""
        return nearest_code(self.z.detach(), self.quantizer.codebook.detach())

    def usage(self) -> torch.Tensor:
        return torch.bincount(self.assignments(), minlength=self.num_codes)

    @property
    def codes_used(self) -> int:
        return int((self.usage() > 0).sum())

    def dead(self) -> torch.Tensor:
        """(K,) bool: codes that no encoder output picks now."""
        return self.usage() == 0

    def summary(self) -> dict:
        counts = self.usage()
        return {"step": self.steps, "codes_used": int((counts > 0).sum()), "dead": int((counts == 0).sum()),
                "perplexity": float(perplexity_from_counts(counts)), "loss": self.history["loss"][-1]}


class PlaygroundPlot:
    """The plane (Voronoi cells, points, codes) and the codes-used curve, drawn by blitting: axes,
    ticks and labels are drawn once and kept as a background; each update redraws only the
    changing artists on top (several times faster than a full matplotlib draw)."""

    XLIMS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)

    def __init__(self, resolution: int = 160, dpi: int = 72):
        self.fig = new_figure(8.4, 4.0, dpi=dpi)
        self.ax, self.ax_hist = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
        lo, hi = VIEW
        u = torch.linspace(lo, hi, resolution)
        self.grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)  # (R*R, 2)
        self.resolution = resolution
        self.cells = self.ax.imshow(np.ones((resolution, resolution, 3)), extent=(lo, hi, lo, hi), origin="lower",
                                    interpolation="nearest")
        self.data = self.ax.scatter([], [], s=4, c="0.55", label="data $x$")
        self.points = self.ax.scatter([], [], s=5, c="k", label="encoder outputs $z_e$")
        self.live = self.ax.scatter([], [], s=110, edgecolors="k", linewidths=2, label="code (used)", zorder=3)
        (self.dead,) = self.ax.plot([], [], "x", color="red", ms=9, mew=2.5, label="dead code", zorder=4)
        # the plane's units are the data's own: the points x, the encoder outputs z_e and the codes share them
        self.ax.set(xlim=VIEW, ylim=VIEW, xlabel="$z_1$ (data units)", ylabel="$z_2$ (data units)", aspect="equal")
        self.legend = self.ax.legend(loc="lower left", fontsize=7, framealpha=0.85)
        self.title = self.ax.set_title(" ", fontsize=10)
        (self.curve,) = self.ax_hist.plot([], [], "-", color="C0")
        self.ax_hist.set(xlabel="training step (full-batch updates)", ylabel="codes used (count)",
                         title="codes in use")
        self.ax_hist.grid(alpha=0.3)
        self.fig.tight_layout()
        # drawn on every update, in this order, over the kept background
        self.animated = [self.cells, self.data, self.points, self.live, self.dead, *self.ax.spines.values(),
                         self.legend, self.title, self.curve]
        for artist in self.animated:
            artist.set_animated(True)
        self.layout, self.background = None, None

    def png(self, state: PlaygroundState) -> bytes:
        codes = state.quantizer.codebook.detach()
        K = len(codes)
        layout = (next((x for x in self.XLIMS if x >= state.steps), state.steps), K)
        if layout != self.layout:  # the curve's axes changed: draw the background again
            self.ax_hist.set_xlim(0, layout[0])
            self.ax_hist.set_ylim(0, K + 1)
            self.fig.canvas.draw()
            self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
            self.layout = layout
        colors = code_colors(K)  # categorical: a code index is a name, not a quantity
        owner = nearest_code(self.grid, codes).numpy().reshape(self.resolution, self.resolution)
        self.cells.set_data(0.45 * colors[owner] + 0.55)  # pale Voronoi cells
        self.data.set_offsets(state.x.numpy())
        self.points.set_offsets(state.z.detach().numpy())
        dead = state.dead().numpy()
        self.live.set_offsets(codes[~dead].numpy().reshape(-1, 2))
        self.live.set_facecolors(colors[~dead])
        self.dead.set_data(*codes[dead].numpy().reshape(-1, 2).T)
        s = state.summary()
        self.title.set_text(f"step {s['step']}: {s['codes_used']} of {K} codes used, {s['dead']} dead")
        self.curve.set_data(state.history["step"], state.history["codes_used"])
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self.animated:
            artist.axes.draw_artist(artist) if artist.axes is not None else self.fig.draw_artist(artist)
        return png(np.asarray(canvas.buffer_rgba())[..., :3])


@single_threaded
def quantization_playground(num_points: int = 600, num_codes: int = 16, init: str = "far", seed: int = 0) -> Visualizer:
    """Train a 2-D codebook by hand: sliders for K, beta and the learning rate, Step / Run buttons,
    toggles for the :data:`REMEDIES` (EMA, k-means init, dead-code restart after :data:`RESTART_AFTER`
    steps). Returns the widget; ``.state`` is the current :class:`PlaygroundState` (replaced when a
    setting that needs a new run changes)."""
    box = {"state": PlaygroundState(num_points, num_codes, init=init, seed=seed)}
    K = labelled(widgets.IntSlider(value=num_codes, min=1, max=64, description="K (codes)",
                                   continuous_update=False), "vq-play-k")
    points = labelled(widgets.IntText(value=num_points, description="points"), "vq-play-points")
    beta = labelled(widgets.FloatSlider(value=0.25, min=0.0, max=2.0, step=0.05, description="beta"), "vq-play-beta")
    lr = labelled(widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=-0.5, step=0.1, description="learning rate",
                                         style=WIDE, readout_format=".3f"), "vq-play-lr")
    ema = labelled(widgets.Checkbox(value=False, description="EMA codebook updates", indent=False), "vq-play-ema")
    kmeans = labelled(widgets.Checkbox(value=False, description="k-means init", indent=False), "vq-play-kmeans")
    restart_box = labelled(widgets.Checkbox(value=False, indent=False,
                                            description=f"restart dead codes (after {RESTART_AFTER} steps)"),
                           "vq-play-restart-after")
    init_box = labelled(widgets.Dropdown(options=[(v, k) for k, v in INITS.items()], value=init,
                                         description="initial codes", style=WIDE), "vq-play-init")
    n_steps = labelled(widgets.IntSlider(value=50, min=1, max=2000, description="N steps", style=WIDE),
                      "vq-play-n")
    step_btn = labelled(widgets.Button(description="Step", icon="step-forward"), "vq-play-step")
    run_btn = labelled(widgets.Button(description="Run N", icon="play"), "vq-play-run")
    reset_btn = labelled(widgets.Button(description="Reset", icon="refresh"), "vq-play-reset")
    picture = labelled(image_widget(), "vq-play-image")
    plot = PlaygroundPlot()
    controls = {"K": K, "points": points, "beta": beta, "lr": lr, "ema": ema, "kmeans_init": kmeans,
                "restart_after": restart_box, "init": init_box, "n_steps": n_steps, "step": step_btn, "run": run_btn,
                "reset": reset_btn}
    view = Visualizer(box["state"], controls,
                      [hbox([K, points, init_box]), hbox([beta, lr]), hbox([ema, kmeans, restart_box]),
                       hbox([step_btn, n_steps, run_btn, reset_btn]), picture], "vq-playground")
    view.images = {"plane": picture}

    def draw_now() -> None:
        picture.value = plot.png(box["state"])

    def rebuild(_=None) -> None:
        """Start again from the initial codes with the current settings (the old run stays if they are invalid)."""
        state = PlaygroundState(points.value, K.value, beta=beta.value, lr=lr.value, ema=ema.value,
                                kmeans_init=kmeans.value, restart_after=RESTART_AFTER if restart_box.value else 0,
                                init=init_box.value, seed=seed)
        box["state"] = view.state = state
        draw_now()
        view.say(f"Restarted at step 0 with K = {K.value}. Press Step or Run N.")

    def on_beta(change) -> None:
        box["state"].beta = change["new"]

    def on_lr(change) -> None:
        box["state"].lr = change["new"]

    def run(n: int) -> None:
        frames = max(1, min(10, n // 10))  # a few intermediate pictures so that a long run animates
        per = [n // frames + (i < n % frames) for i in range(frames)]
        for k in per:
            box["state"].step(k)
            draw_now()
        s = box["state"].summary()
        view.say(f"Step {s['step']}: {s['codes_used']} codes used, {s['dead']} dead, "
                 f"perplexity {s['perplexity']:.1f}.")

    for w in (K, points, ema, kmeans, restart_box, init_box):
        w.observe(view.guarded(rebuild), names="value")
    beta.observe(view.guarded(on_beta), names="value")
    lr.observe(view.guarded(on_lr), names="value")
    step_btn.on_click(view.guarded(lambda _: run(1)))
    run_btn.on_click(view.guarded(lambda _: run(n_steps.value)))
    reset_btn.on_click(view.guarded(rebuild))
    draw_now()
    view.say("The codes start in a clump far from the data. Press Run N and watch how many get used."
             if init == "far" else "Press Step or Run N.")
    return view.show_states(lambda: quantization_playground(num_points, num_codes, init, seed), [
        (f"{n_steps.value} steps, no remedy", [("run", CLICK)]),
        (f"{n_steps.value} steps with k-means init", [("kmeans_init", True), ("run", CLICK)]),
        (f"{n_steps.value} steps with EMA updates", [("ema", True), ("run", CLICK)])])
