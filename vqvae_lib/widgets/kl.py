"""Commitment as a KL divergence: two Gaussians of equal width s, at z_e and at the code e.

KL( N(z_e, s^2 I) || N(e, s^2 I) ) = ||z_e - e||^2 / (2 s^2): the commitment loss is this KL up to
the factor 1 / (2 s^2). The explorer computes the KL numerically (quadrature along the line through
the two centres, which is where the two densities differ) and shows it beside the formula.
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np

from .base import WIDE, Visualizer, hbox, image_widget, labelled, single_threaded
from .render import figure_png, new_figure


def _check_width(*widths: float) -> None:
    for s in widths:
        if not s > 0:
            raise ValueError(f"a Gaussian's width s must be positive, got {s}")


def kl_integrand(x: np.ndarray, mu_q: float, s_q: float, mu_p: float, s_p: float) -> np.ndarray:
    """q(x) log(q(x) / p(x)) for 1-D Gaussians q = N(mu_q, s_q^2), p = N(mu_p, s_p^2)."""
    log_ratio = math.log(s_p / s_q) - (x - mu_q) ** 2 / (2 * s_q ** 2) + (x - mu_p) ** 2 / (2 * s_p ** 2)
    q = np.exp(-(x - mu_q) ** 2 / (2 * s_q ** 2)) / (s_q * math.sqrt(2 * math.pi))
    return q * log_ratio


def kl_quadrature(mu_q: float, s_q: float, mu_p: float, s_p: float, num: int = 4001, width: float = 12.0) -> float:
    """KL(q || p) of 1-D Gaussians by Simpson's rule over mu_q +- width * s_q (num points, odd)."""
    _check_width(s_q, s_p)
    num += 1 - num % 2  # Simpson's rule needs an even number of intervals
    x = np.linspace(mu_q - width * s_q, mu_q + width * s_q, num)
    f = kl_integrand(x, mu_q, s_q, mu_p, s_p)
    h = x[1] - x[0]
    return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


def kl_readout(distance: float, s: float) -> dict:
    """The explorer's numbers for ||z_e - e|| = distance and width s: the KL by quadrature, the formula
    ||z_e - e||^2 / (2 s^2), and the commitment loss ||z_e - e||^2."""
    if distance < 0:
        raise ValueError(f"a distance cannot be negative, got {distance}")
    _check_width(s)
    return {"distance": distance, "s": s, "kl_numeric": kl_quadrature(distance, s, 0.0, s),
            "kl_formula": distance ** 2 / (2 * s ** 2), "commitment": distance ** 2}


def readout_html(r: dict) -> str:
    return (f"<table style='font-size:110%'><tr><td>KL(q&#8214;p), numerically:</td>"
            f"<td><b class='vq-kl-numeric'>{r['kl_numeric']:.4f}</b> nats</td></tr>"
            f"<tr><td>&#8214;z<sub>e</sub> &minus; e&#8214;<sup>2</sup> / (2 s<sup>2</sup>):</td>"
            f"<td><b class='vq-kl-formula'>{r['kl_formula']:.4f}</b> nats</td></tr>"
            f"<tr><td>commitment loss &#8214;z<sub>e</sub> &minus; e&#8214;<sup>2</sup>:</td>"
            f"<td>{r['commitment']:.4f}</td></tr></table>")


class KLPlot:
    """Top: the two densities. Bottom: the KL integrand q log(q/p), whose area is the KL. A kept figure."""

    def __init__(self, num: int = 400):
        self.fig = new_figure(6.0, 4.0)
        self.ax, self.ax_f = self.fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
        self.num = num
        (self.q,) = self.ax.plot([], [], color="C0", lw=2, label="$q = N(z_e, s^2)$: encoder output")
        (self.p,) = self.ax.plot([], [], color="C3", lw=2, label="$p = N(e, s^2)$: the code")
        (self.f,) = self.ax_f.plot([], [], color="k", lw=1.2)
        self.fill = None
        self.ax_f.axhline(0, color="0.6", lw=0.8)
        self.ax.set(ylabel="density (1 / latent unit)")
        self.ax.legend(loc="upper right", fontsize=7)
        # the x axis is in the latent space's own units (those of z_e and e); the integrand's area is in nats
        self.ax_f.set(xlabel="position along the line from $e$ (at 0) to $z_e$ (latent units)",
                      ylabel=r"$q \log(q/p)$ (nats / unit)")
        self.ax_f.set_title("the shaded area (above minus below 0) is the KL, in nats", fontsize=8)
        self.fig.subplots_adjust(left=0.12, right=0.97, top=0.92, bottom=0.12, hspace=0.35)

    def png(self, distance: float, s: float, dpi: int = 72) -> bytes:
        lo, hi = min(0.0, distance) - 4 * s, max(0.0, distance) + 4 * s
        x = np.linspace(lo, hi, self.num)
        norm = s * math.sqrt(2 * math.pi)
        q, p = np.exp(-(x - distance) ** 2 / (2 * s * s)) / norm, np.exp(-x ** 2 / (2 * s * s)) / norm
        f = kl_integrand(x, distance, s, 0.0, s)
        self.q.set_data(x, q)
        self.p.set_data(x, p)
        self.f.set_data(x, f)
        if self.fill is not None:
            self.fill.remove()
        self.fill = self.ax_f.fill_between(x, 0, f, color="0.5", alpha=0.3, lw=0)
        self.ax.set_xlim(lo, hi)
        self.ax.set_ylim(0, q.max() * 1.45)
        span = max(f.max() - min(f.min(), 0.0), 1e-3)
        self.ax_f.set_ylim(min(f.min(), 0.0) - 0.08 * span, f.max() + 0.08 * span)
        self.ax.set_title(f"$\\|z_e - e\\| = {distance:.2f}$,  $s = {s:.2f}$", fontsize=10)
        return figure_png(self.fig, dpi)


@single_threaded
def commitment_kl_explorer(distance: float = 1.0, s: float = 0.5) -> Visualizer:
    """Sliders for ||z_e - e|| and s; the two Gaussians, and the KL beside ||z_e - e||^2 / (2 s^2).
    Returns the widget; ``.state`` holds the latest :func:`kl_readout`."""
    d_slider = labelled(widgets.FloatSlider(value=distance, min=0.0, max=3.0, step=0.05,
                                            description="||z_e − e||", style=WIDE), "vq-kl-distance")
    s_slider = labelled(widgets.FloatSlider(value=s, min=0.1, max=2.0, step=0.05, description="s"), "vq-kl-s")
    picture = labelled(image_widget(), "vq-kl-image")
    readout = labelled(widgets.HTML(), "vq-kl-readout")
    plot = KLPlot()
    view = Visualizer(None, {"distance": d_slider, "s": s_slider},
                      [hbox([d_slider, s_slider]), hbox([picture, readout])], "vq-kl")
    view.images = {"plot": picture}
    view.readout = readout

    def update(_=None) -> None:
        r = kl_readout(d_slider.value, s_slider.value)
        view.state = r
        picture.value = plot.png(r["distance"], r["s"])
        readout.value = readout_html(r)
        view.say("")

    d_slider.observe(view.guarded(update), names="value")
    s_slider.observe(view.guarded(update), names="value")
    view.guarded(update)()
    return view.show_states(lambda: commitment_kl_explorer(distance, s), [
        (f"||z_e − e|| = {d:g}, s = {width:g}", [("distance", d), ("s", width)])
        for d, width in [(0.5, 0.5), (1.5, 0.5), (1.5, 1.0)]])
