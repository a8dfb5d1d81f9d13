"""Codebook atlas: every code as an image tile, ordered by usage; pick one to see where it occurs."""
from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import torch

from ..quantizers.vq import perplexity_from_counts
from .base import WIDE, Visualizer, hbox, image_widget, labelled, single_threaded
from .render import BLUE, ORANGE, RED, draw, png, tile, tile_origin, to_rgb, upscale


def check_code(code, num_codes: int) -> int:
    """``code`` as an int in [0, num_codes), else ValueError with the valid range."""
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)) and not (
            torch.is_tensor(code) and code.numel() == 1 and not code.is_floating_point()):
        raise ValueError(f"a code is a whole number from 0 to {num_codes - 1}, got {code!r}")
    code = int(code)
    if not 0 <= code < num_codes:
        raise ValueError(f"code {code} is out of range: this codebook has codes 0 to {num_codes - 1}")
    return code


class CodebookAtlasState:
    """Usage statistics and tiles of a VQ-VAE's codebook over a batch of images.

    images: (N, C, H, W) float in [0, 1]. ``indices``: (N, h, w) the code at each latent cell;
    ``counts``: (K,) how often each code occurs; ``order``: codes from most to least used.
    """

    def __init__(self, vqvae, images: torch.Tensor, batch_size: int = 256):
        if images.dim() != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got {tuple(images.shape)}")
        self.vqvae = vqvae.eval()
        device = next(vqvae.parameters()).device
        self.images = images.detach().float().cpu()
        self.indices = torch.cat([vqvae.encode(self.images[i:i + batch_size].to(device)).cpu()
                                  for i in range(0, len(images), batch_size)])
        self.num_codes = vqvae.quantizer.num_codes
        self.counts = torch.bincount(self.indices.flatten(), minlength=self.num_codes)
        # stable sort: ties (e.g. the unused codes) keep code order, so the atlas is deterministic
        self.order = torch.sort(self.counts, descending=True, stable=True).indices
        self.rank = torch.empty_like(self.order)
        self.rank[self.order] = torch.arange(self.num_codes)
        self.grid_shape = tuple(self.indices.shape[1:])
        self._tiles: dict[str, torch.Tensor] = {}

    @property
    def codes_used(self) -> int:
        return int((self.counts > 0).sum())

    @property
    def perplexity(self) -> float:
        return float(perplexity_from_counts(self.counts))

    def check_code(self, code) -> int:
        return check_code(code, self.num_codes)

    @torch.no_grad()
    def decoded_tiles(self) -> torch.Tensor:
        """(K, C, H, W): the decoder's image of a grid filled with one code, for every code."""
        if "decoded" not in self._tiles:
            device = next(self.vqvae.parameters()).device
            h, w = self.grid_shape
            out = []
            for start in range(0, self.num_codes, 128):
                codes = torch.arange(start, min(start + 128, self.num_codes), device=device)
                out.append(self.vqvae.decode_indices(codes[:, None, None].expand(-1, h, w).contiguous()).cpu())
            self._tiles["decoded"] = torch.cat(out).clamp(0, 1)
        return self._tiles["decoded"]

    def mean_patches(self) -> torch.Tensor:
        """(K, C, s, s) with s = H / h: the mean input patch under each code's cells (grey if unused)."""
        if "mean" not in self._tiles:
            N, C, H, W = self.images.shape
            h, w = self.grid_shape
            s = H // h
            patches = self.images.unfold(2, s, s).unfold(3, s, s)  # (N, C, h, w, s, s)
            flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(N * h * w, C * s * s)
            sums = torch.zeros(self.num_codes, C * s * s).index_add_(0, self.indices.flatten(), flat)
            means = sums / self.counts.clamp_min(1)[:, None].float()
            means[self.counts == 0] = 0.5
            self._tiles["mean"] = means.view(self.num_codes, C, s, s)
        return self._tiles["mean"]

    def occurrences(self, code) -> torch.Tensor:
        """(N,) how many cells of each image hold ``code``."""
        code = self.check_code(code)
        return (self.indices == code).flatten(1).sum(1)

    def top_images(self, code, n: int = 12) -> torch.Tensor:
        """Indices of the n images where ``code`` occurs most often (most first, ties by image order)."""
        occ = self.occurrences(code)
        return torch.sort(occ, descending=True, stable=True).indices[:n]

    def summary(self, code) -> dict:
        code = self.check_code(code)
        count = int(self.counts[code])
        return {"code": code, "count": count, "rank": int(self.rank[code]),
                "fraction": count / self.indices.numel(),
                "images_with": int((self.occurrences(code) > 0).sum())}

    # ----- pictures -----
    def atlas_png(self, selected: int | None = None, mode: str = "decoded", width: int = 480) -> bytes:
        """All codes as tiles in usage order (most used first); unused codes framed red, ``selected`` blue.
        About ``width`` pixels wide whatever K is."""
        tiles = self.decoded_tiles() if mode == "decoded" else self.mean_patches()
        ncol, pad = math.ceil(math.sqrt(self.num_codes)), 4
        factor = max(1, min(56, width // ncol - pad) // tiles.shape[-1])
        arrays = upscale(to_rgb(tiles[self.order]), factor, batch=True)
        im, pen = draw(tile(arrays, ncol, pad))
        th, tw = arrays.shape[1:3]
        for rank, code in enumerate(self.order.tolist()):
            y, x = tile_origin(rank, th, tw, ncol, pad)
            if code == selected:
                pen.rectangle([x - 3, y - 3, x + tw + 2, y + th + 2], outline=BLUE, width=3)
            elif self.counts[code] == 0:
                pen.rectangle([x - 2, y - 2, x + tw + 1, y + th + 1], outline=RED, width=1)
        return png(im)

    def where_png(self, code, n: int = 12, factor: int = 3, ncol: int = 6) -> bytes:
        """The n images where ``code`` occurs most, its cells tinted orange and framed."""
        code = self.check_code(code)
        idx = self.top_images(code, n)
        rgb = upscale(to_rgb(self.images[idx]), factor, batch=True)
        cell = rgb.shape[1] // self.grid_shape[0]
        hit = (self.indices[idx] == code).numpy()  # (n, h, w)
        mask = upscale(hit, cell, batch=True)[..., None]
        tint = (0.55 * rgb + 0.45 * np.array(ORANGE)).astype(np.uint8)
        rgb = np.where(mask, tint, rgb)
        pad = 3
        im, pen = draw(tile(rgb, ncol, pad))
        for k in range(len(idx)):
            y0, x0 = tile_origin(k, rgb.shape[1], rgb.shape[2], ncol, pad)
            for r, c in zip(*np.nonzero(hit[k])):
                pen.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1],
                              outline=ORANGE, width=1)
        return png(im)


@single_threaded
def codebook_atlas(vqvae, images: torch.Tensor, code: int | None = None, max_images: int = 12) -> Visualizer:
    """The codebook as tiles ordered by usage; choosing a code (by usage rank or by number) shows where
    it occurs in ``images: (N, C, H, W)`` and how often. Returns the widget; ``.state`` is a
    :class:`CodebookAtlasState`.
    """
    state = CodebookAtlasState(vqvae, images)
    K = state.num_codes
    start = int(state.order[0]) if code is None else state.check_code(code)
    rank = labelled(widgets.IntSlider(value=int(state.rank[start]), min=0, max=K - 1, description="usage rank",
                                      style=WIDE, continuous_update=True), "vq-atlas-rank")
    code_box = labelled(widgets.IntText(value=start, description="code"), "vq-atlas-code")
    mode = labelled(widgets.ToggleButtons(options=[("decoded grid", "decoded"), ("mean input patch", "mean")],
                                          value="decoded", description="tiles"), "vq-atlas-mode")
    atlas = labelled(image_widget(), "vq-atlas-image")
    where = labelled(image_widget(), "vq-atlas-where")
    info = labelled(widgets.HTML(), "vq-atlas-info")
    header = widgets.HTML(f"<b>{state.codes_used} of {K} codes</b> occur in these {len(images)} images "
                          f"(perplexity {state.perplexity:.1f}). Tiles in order of use, most used top left; "
                          f"a red frame marks a code unused here.")
    left = widgets.VBox([widgets.HTML("<b>The codebook</b>"), atlas])
    right = widgets.VBox([widgets.HTML("<b>Where the chosen code occurs</b> (orange cells)"), where, info])
    controls = {"rank": rank, "code": code_box, "mode": mode}
    view = Visualizer(state, controls, [header, hbox([rank, code_box, mode]), hbox([left, right])],
                      "vq-atlas")
    view.images = {"atlas": atlas, "where": where}
    view.info = info
    busy = []  # re-entrancy guard: the rank slider and the code box update each other

    def show(c: int) -> None:
        s = state.summary(c)
        atlas.value = state.atlas_png(c, mode.value)
        where.value = state.where_png(c, max_images)
        info.value = (f"Code <b>{c}</b>: usage rank {s['rank']} of {K}; occurs {s['count']} times "
                      f"({100 * s['fraction']:.1f}% of all cells), in {s['images_with']} of {len(images)} images.")
        view.say("" if s["count"] else f"Code {c} is never chosen for these images: a dead code.")

    def on_rank(change) -> None:
        if busy:
            return
        c = int(state.order[change["new"]])
        busy.append(1)
        try:
            code_box.value = c
        finally:
            busy.clear()
        show(c)

    def on_code(change) -> None:
        if busy:
            return
        c = state.check_code(change["new"])
        busy.append(1)
        try:
            rank.value = int(state.rank[c])
        finally:
            busy.clear()
        show(c)

    rank.observe(view.guarded(on_rank), names="value")
    code_box.observe(view.guarded(on_code), names="value")
    mode.observe(view.guarded(lambda change: show(state.check_code(code_box.value))), names="value")
    show(start)
    last = (f"the least used code that occurs (usage rank {state.codes_used - 1})", state.codes_used - 1)
    if state.codes_used == 1:
        last = (f"a dead code (usage rank {K - 1})", K - 1)
    return view.show_states(lambda: codebook_atlas(vqvae, images, code, max_images), [
        ("the most used code", [("rank", 0)]),
        ("the most used code, tiles as mean input patches", [("rank", 0), ("mode", "mean")]),
        (last[0], [("rank", last[1])])])
