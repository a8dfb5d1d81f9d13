"""What every visualizer shares: a VBox that keeps its logic object, its controls and a message line."""
from __future__ import annotations

import base64
import contextlib
import functools
import html
import time
from typing import Callable

import ipywidgets as widgets
import torch


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread inside the block, then restore the setting.

    A widget's work is many tiny tensor operations: extra threads only add synchronization, and
    on a busy shared machine (a class on one server, CI) they can slow a redraw down a hundredfold.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def single_threaded(fn):
    """Decorator form of :func:`one_thread`."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return run


ERROR_CLASS = "vq-error"  # on the message line while it shows a refused choice
ERROR_COLOR, TEXT_COLOR = "#b00020", "#333"


class Visualizer(widgets.VBox):
    """A visualizer widget.

    ``state``: the front-end-free logic object (tests drive it directly).
    ``controls``: name -> control widget (sliders, buttons, ...), for tests and for the reader.
    ``message``: an HTML line where refused choices are explained instead of raising.
    ``has_error``: whether ``message`` shows a refused choice now (the front end sees the CSS class
    ``vq-error`` on the message); the next accepted action clears it.
    ``last_update_ms``: how long the last handler took, from the event to new image bytes.
    ``images``: name -> Image widget, the pictures it draws (set by each visualizer).

    Shown where no kernel runs (the rendered book, GitHub's viewer), a widget's controls would do
    nothing; :meth:`show_states` gives it a static stand-in: a few of its states, drawn by a scratch
    copy driven through the same controls, as the ``text/html`` of its display. A front end with a
    widget manager (JupyterLab, Notebook, Colab) shows the live widget instead.
    """

    def __init__(self, state, controls: dict, body: list, css_class: str, **kwargs):
        self.state = state
        self.controls = controls
        self.message = widgets.HTML(value="")
        self.message.add_class("vq-message")
        self.last_update_ms = 0.0
        self.images: dict = {}
        self._has_error = False
        self._states: tuple | None = None
        super().__init__(children=[*body, self.message], **kwargs)
        self.add_class("vq-visualizer")
        self.add_class(css_class)

    @property
    def has_error(self) -> bool:
        """True while the message explains a refused choice (set by ``say(..., error=True)``)."""
        return self._has_error

    def say(self, text: str, error: bool = False) -> None:
        """Show ``text`` on the message line; ``error`` marks it as a refused choice (see ``has_error``)."""
        self._has_error = bool(error and text)
        if self._has_error:
            self.message.add_class(ERROR_CLASS)
        else:
            self.message.remove_class(ERROR_CLASS)
        color = ERROR_COLOR if self._has_error else TEXT_COLOR
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>' if text else ""

    def show_states(self, build: Callable[[], "Visualizer"], states: list[tuple[str, list]]) -> "Visualizer":
        """Give the widget its static stand-in: ``states`` is [(caption, [(control name, value), ...])],
        each applied in order to a fresh ``build()`` (``CLICK`` for a button). Drawn only when displayed."""
        self._states = (build, states)
        return self

    def snapshots(self) -> list[tuple[str, list[bytes]]]:
        """[(caption, [PNG of each image])] for the states of :meth:`show_states`; the widget is untouched."""
        build, states = self._states
        out = []
        for caption, actions in states:
            scratch = build()
            for name, value in actions:
                control = scratch.controls[name]
                if value is CLICK:
                    control.click()
                else:
                    control.value = value
            if scratch.has_error:
                raise ValueError(f"state {caption!r} of {type(self).__name__}: {scratch.message.value}")
            out.append((caption, [image.value for image in scratch.images.values()]))
            close_tree(scratch)  # its models would otherwise be saved with the notebook's widget state
        return out

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if self._states is not None and bundle is not None:
            bundle["text/html"] = snapshots_html(self.snapshots())
        return bundle

    def guarded(self, handler):
        """Wrap an event handler: a ValueError becomes a message in the widget, and the time is recorded."""
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                with one_thread():
                    handler(*args, **kwargs)
            except ValueError as err:
                self.say(str(err), error=True)
            self.last_update_ms = (time.perf_counter() - start) * 1e3
        return run


CLICK = object()  # in show_states: click this button
STATIC_NOTE = ("<b>Live in Jupyter and Colab:</b> run this notebook to use the controls. "
               "Here, a few of its states:")


def close_tree(widget) -> None:
    """Close a widget and every widget it holds (children, layout, style): ipywidgets' ``close`` leaves
    them open, and each open model would be saved with the notebook."""
    for name in widget.keys:
        value = getattr(widget, name)
        for held in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(held, widgets.Widget) and held.comm is not None:
                close_tree(held)
    widget.close()


def snapshots_html(snapshots: list[tuple[str, list[bytes]]]) -> str:
    """The static stand-in of a visualizer: the note, then each state's pictures with its caption."""
    figures = "".join(
        '<figure style="display:inline-block; margin:0 1em 1em 0; vertical-align:top">'
        + "".join(f'<img alt="{html.escape(caption)}" style="max-width:100%" '
                  f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' for png in pngs)
        + f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, pngs in snapshots)
    return f'<div class="vq-snapshots"><p class="vq-snapshots-note">{STATIC_NOTE}</p>{figures}</div>'


WIDE = {"description_width": "initial"}  # a control's style: show its whole description


def labelled(widget, css_class: str):
    """Tag a control with a CSS class so that browser tests (and styles) can find it."""
    widget.add_class(css_class)
    return widget


def hbox(children: list) -> widgets.HBox:
    """A row of widgets that wraps on a narrow page (the book's column) instead of overflowing."""
    return widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))


def image_widget() -> widgets.Image:
    """A PNG image at its own size that shrinks to the page width (keeping its aspect) rather than
    overflowing; ``align_self`` keeps a VBox from stretching it wider than its pixels."""
    return widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto", align_self="flex-start"))
