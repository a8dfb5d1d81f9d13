"""Latent editor: an image, its grid of code indices; change one code and see the decoded image change."""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from .atlas import check_code
from .base import CLICK, Visualizer, hbox, image_widget, labelled, one_thread, single_threaded
from .render import BLUE, ORANGE, RED, code_colors, dashed_rectangle, draw, font, png, tile, to_rgb, upscale


def decoder_reach(vqvae) -> int:
    """How many pixels beyond a latent cell's own block a change of that cell can move, from the
    decoder's layers: a k x k convolution (padding p) widens a changed interval [a, b] to
    [a + p - k + 1, b + p]; a transposed convolution (stride s) maps it to [s a - p, s b - p + k - 1].
    """
    lo = hi = 0
    for m in vqvae.decoder.modules():
        if isinstance(m, nn.ConvTranspose2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            lo, hi = s * lo - p, s * hi - p + k - 1
        elif isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            lo, hi = -((-(lo + p - k + 1)) // s), (hi + p) // s
    block = vqvae.downsample  # the cell's own pixels are [0, block - 1]
    return max(-lo, hi - (block - 1))


@single_threaded  # small convolutions: one thread is fastest
@torch.no_grad()
def measured_reach(vqvae, trials: int = 4, seed: int = 0) -> int:
    """The reach of :func:`decoder_reach` measured instead of derived: change the middle cell of a
    latent grid and see which output pixels move.

    The decoder runs on a float64 copy, so that "moved" is far above rounding, on grids large enough
    that the change never touches the border (the grid grows until it does not). The latent vectors
    are standard normal rather than codes, so that the decoder's ReLUs are active in many patterns
    (a small or untrained codebook can leave whole paths dark); the changed region is the union over
    ``trials`` random grids and changes.
    """
    import copy

    decoder = copy.deepcopy(vqvae.decoder).double().cpu().eval()
    D, block = vqvae.quantizer.code_dim, vqvae.downsample
    g = torch.Generator().manual_seed(seed)
    n = 3
    while True:
        c = n // 2  # the changed cell; its own pixels are [c * block, (c + 1) * block - 1]
        moved = torch.zeros(n * block, n * block, dtype=torch.bool)
        for _ in range(trials):
            grid = torch.randn(1, D, n, n, generator=g, dtype=torch.float64)
            changed = grid.clone()
            changed[0, :, c, c] = torch.randn(D, generator=g, dtype=torch.float64)
            diff = (decoder(grid) - decoder(changed))[0].abs().amax(0)  # (H, W): largest change over channels
            moved |= diff > diff.max() * RELATIVE_CHANGE
        if not moved.any():
            raise ValueError("no output pixel depends on the latent cell: the decoder's output is constant")
        rows, cols = torch.nonzero(moved.any(1)).flatten(), torch.nonzero(moved.any(0)).flatten()
        lo, hi = int(min(rows.min(), cols.min())), int(max(rows.max(), cols.max()))
        # A change that reaches the grid's edge is cut off there, and the outermost pixels can stay still
        # for lack of neighbours: trust the extent only when a whole cell of still pixels surrounds it.
        if lo >= block and hi < (n - 1) * block:
            return max(c * block - lo, hi - ((c + 1) * block - 1))
        n = 2 * n + 1


RELATIVE_CHANGE = 1e-9  # "moved" in float64: far above rounding (~1e-16), far below any real effect


class LatentEditorState:
    """One image's code grid, editable cell by cell, with undo.

    image: (C, H, W) or (1, C, H, W) in [0, 1]. ``indices``: (h, w) the current codes;
    ``original``: (h, w) the encoder's codes. ``decoded()`` -> (C, H, W) image of the current codes.
    """

    def __init__(self, vqvae, image: torch.Tensor):
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or len(image) != 1:
            raise ValueError(f"give one image (C, H, W), got shape {tuple(image.shape)}")
        self.vqvae = vqvae.eval()
        self.device = next(vqvae.parameters()).device
        self.image = image.detach().float().cpu()[0]
        self.original = vqvae.encode(image.float().to(self.device))[0].cpu()
        self.indices = self.original.clone()
        self.history: list[tuple[int, int, int]] = []  # (row, col, previous code)
        self.num_codes = vqvae.quantizer.num_codes
        self.reach = decoder_reach(vqvae)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reconstruction = self.decoded()

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.indices.shape)

    def check_cell(self, row, col) -> tuple[int, int]:
        h, w = self.grid_shape
        if not (isinstance(row, (int, np.integer)) and 0 <= row < h and isinstance(col, (int, np.integer))
                and 0 <= col < w):
            raise ValueError(f"cell ({row}, {col}) is outside the {h} x {w} grid (rows 0-{h - 1}, columns 0-{w - 1})")
        return int(row), int(col)

    def set_code(self, row, col, code) -> bool:
        """Put ``code`` at cell (row, col). Returns False if it was already there. ValueError if invalid."""
        row, col = self.check_cell(row, col)
        code = check_code(code, self.num_codes)
        old = int(self.indices[row, col])
        if old == code:
            return False
        self.history.append((row, col, old))
        self.indices[row, col] = code
        return True

    def undo(self) -> bool:
        """Revert the last edit. Returns False if there was nothing to undo."""
        if not self.history:
            return False
        row, col, old = self.history.pop()
        self.indices[row, col] = old
        return True

    def reset(self) -> None:
        self.indices = self.original.clone()
        self.history.clear()

    @property
    def edited_cells(self) -> list[tuple[int, int]]:
        return [tuple(rc) for rc in torch.nonzero(self.indices != self.original).tolist()]

    @torch.no_grad()
    def decoded(self) -> torch.Tensor:
        """(C, H, W): the decoder's image of the current code grid (cached until the grid changes)."""
        if self._cache is None or not torch.equal(self._cache[0], self.indices):
            with one_thread():  # same thread count for every call: bitwise-repeatable decodes
                out = self.vqvae.decode_indices(self.indices[None].to(self.device))[0].float().cpu()
            self._cache = (self.indices.clone(), out)
        return self._cache[1]

    def reconstruction(self) -> torch.Tensor:
        """(C, H, W): the decoded image of the unedited codes."""
        return self._reconstruction

    def change(self) -> torch.Tensor:
        """(H, W): |decoded - reconstruction|, summed over channels."""
        return (self.decoded() - self._reconstruction).abs().sum(0)

    def render_png(self, row: int | None = None, col: int | None = None, scale: int = 8) -> bytes:
        """Three panels: input with its codes, decoded current codes, and where the pixels changed.
        Each code number sits on its code's categorical color (equal codes, equal colors). The
        selected cell is framed blue, edited cells orange, the decoder's reach from the selected cell
        dashed red on the change panel; a scale under that panel gives the change in pixel values."""
        h, w = self.grid_shape
        C, H, W = self.image.shape
        cell = H // h * scale
        change = self.change().numpy()
        peak = float(change.max())
        heat = np.clip(change / max(peak, MIN_PEAK), 0, 1)
        panels = [to_rgb(self.image), to_rgb(self.decoded().clamp(0, 1)), white_to_red(heat)]
        panels = np.stack([upscale(p, scale) for p in panels])
        top, bottom, pad = 18, 30, 6
        mosaic = tile(panels, ncol=3, pad=pad)
        canvas = np.full((mosaic.shape[0] + top + bottom, mosaic.shape[1], 3), 255, np.uint8)
        canvas[top:top + mosaic.shape[0]] = mosaic  # white strips: titles on top, the change scale below
        # the change scale under the third panel: white = unchanged, red = the largest change
        bar_x, bar_y, bar_len = pad + 2 * (W * scale + pad), top + mosaic.shape[0] + 2, W * scale // 2
        canvas[bar_y:bar_y + 8, bar_x:bar_x + bar_len] = white_to_red(np.linspace(0, 1, bar_len))
        im, pen = draw(canvas)
        f_small, f_title = font(max(9, cell // 3)), font(12)
        titles = ["input and its codes", "decoded from the codes", "pixels changed by the edits"]
        edited = set(self.edited_cells)
        label_colors = (code_colors(self.num_codes) * 255).round().astype(np.uint8)
        for k, title in enumerate(titles):
            x0, y0 = pad + k * (W * scale + pad), top + pad
            pen.text((x0, 2), title, fill=(0, 0, 0), font=f_title)
            for r in range(h):
                for c in range(w):
                    box = [x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1]
                    if (r, c) in edited:  # inset, so that the selection frame does not hide it
                        pen.rectangle([box[0] + 4, box[1] + 4, box[2] - 4, box[3] - 4], outline=ORANGE, width=2)
                    elif k < 2:
                        pen.rectangle(box, outline=(90, 90, 90), width=1)
                    if k == 0:
                        code = int(self.indices[r, c])
                        x, y, text = box[0] + 2, box[1] + 1, str(code)
                        pen.rectangle(pen.textbbox((x, y), text, font=f_small), fill=tuple(label_colors[code]))
                        pen.text((x, y), text, fill=(0, 0, 0), font=f_small)
            if row is not None and col is not None:
                pen.rectangle([x0 + col * cell, y0 + row * cell, x0 + (col + 1) * cell - 1,
                               y0 + (row + 1) * cell - 1], outline=BLUE, width=3)
                if k == 2:  # the decoder's reach from the selected cell, clipped to the image
                    s, b = scale, H // h
                    ya, yb = max(0, row * b - self.reach), min(H, (row + 1) * b + self.reach)
                    xa, xb = max(0, col * b - self.reach), min(W, (col + 1) * b + self.reach)
                    dashed_rectangle(pen, [x0 + xa * s, y0 + ya * s, x0 + xb * s - 1, y0 + yb * s - 1], RED)
        pen.rectangle([bar_x, bar_y, bar_x + bar_len - 1, bar_y + 7], outline=(90, 90, 90), width=1)
        unit = "|change| of a pixel" + (", summed over channels" if C > 1 else "")
        pen.text((bar_x + bar_len + 4, bar_y - 2), f"0 to {peak:.2f}", fill=(0, 0, 0), font=font(10))
        pen.text((bar_x, bar_y + 10), f"{unit} (pixel values 0 to 1)", fill=(0, 0, 0), font=font(10))
        return png(im)


MIN_PEAK = 1e-6  # below this nothing changed: the change panel stays white instead of amplifying rounding


def white_to_red(heat: np.ndarray) -> np.ndarray:
    """heat in [0, 1], any shape -> uint8 RGB of the same shape + (3,): 0 white, 1 red (a magnitude)."""
    return (255 - np.stack([0 * heat, heat, heat], -1) * 255).astype(np.uint8)


@single_threaded
def latent_editor(vqvae, image: torch.Tensor, seed: int = 0) -> Visualizer:
    """Edit the code grid of ``image: (C, H, W)`` cell by cell; the decoded image updates at once.
    Returns the widget; ``.state`` is a :class:`LatentEditorState`."""
    state = LatentEditorState(vqvae, image)
    h, w = state.grid_shape
    row = labelled(widgets.IntSlider(value=h // 2, min=0, max=h - 1, description="row"), "vq-editor-row")
    col = labelled(widgets.IntSlider(value=w // 2, min=0, max=w - 1, description="column"), "vq-editor-col")
    code = labelled(widgets.IntText(value=int(state.indices[h // 2, w // 2]), description="code"),
                    "vq-editor-code")
    rand = labelled(widgets.Button(description="random code", icon="random"), "vq-editor-random")
    undo = labelled(widgets.Button(description="undo", icon="undo"), "vq-editor-undo")
    reset = labelled(widgets.Button(description="reset", icon="refresh"), "vq-editor-reset")
    picture = labelled(image_widget(), "vq-editor-image")
    controls = {"row": row, "col": col, "code": code, "random": rand, "undo": undo, "reset": reset}
    view = Visualizer(state, controls, [hbox([row, col]), hbox([code, rand, undo, reset]), picture],
                      "vq-editor")
    view.images = {"editor": picture}
    gen = torch.Generator().manual_seed(seed)
    syncing = []  # set while the code box is filled in from the grid (that is not an edit)

    def refresh(note: str = "") -> None:
        picture.value = state.render_png(row.value, col.value)
        n = len(state.edited_cells)
        view.say(note or (f"{n} cell(s) edited; the dashed red frame is how far an edit of the selected cell "
                          f"can reach ({state.reach} pixels beyond its own block)." if n else
                          "Pick a cell (row, column) and type a code, then press Enter."))

    def sync_code_box() -> None:
        syncing.append(1)
        try:
            code.value = int(state.indices[row.value, col.value])
        finally:
            syncing.clear()

    def on_cell(change) -> None:
        sync_code_box()
        refresh()

    def on_code(change) -> None:
        if syncing:
            return
        state.set_code(row.value, col.value, change["new"])
        refresh()

    def on_random(_) -> None:
        if state.num_codes < 2:
            raise ValueError("this codebook has a single code: there is nothing to change it to")
        current = int(state.indices[row.value, col.value])
        pick = int(torch.randint(state.num_codes - 1, (1,), generator=gen))
        code.value = pick + (pick >= current)  # any code but the current one

    def on_undo(_) -> None:
        note = "" if state.undo() else "Nothing to undo."
        sync_code_box()
        refresh(note)

    def on_reset(_) -> None:
        state.reset()
        sync_code_box()
        refresh()

    row.observe(view.guarded(on_cell), names="value")
    col.observe(view.guarded(on_cell), names="value")
    code.observe(view.guarded(on_code), names="value")
    rand.on_click(view.guarded(on_random))
    undo.on_click(view.guarded(on_undo))
    reset.on_click(view.guarded(on_reset))
    refresh()
    centre = int(state.indices[h // 2, w // 2])
    other = next((int(c) for c in state.indices.flatten() if c != centre), (centre + 1) % state.num_codes)
    return view.show_states(lambda: latent_editor(vqvae, image, seed), [
        ("the image as encoded", []),
        (f"cell ({h // 2}, {w // 2}) set to code {other}, from elsewhere in the grid", [("code", other)]),
        ("a random code in the corner cell (0, 0)", [("row", 0), ("col", 0), ("random", CLICK)])])
