"""What every visualizer shares: a VBox that keeps its logic object, its controls and a message line."""
from __future__ import annotations

import contextlib
import functools
import html
import time

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
    """

    def __init__(self, state, controls: dict, body: list, css_class: str, **kwargs):
        self.state = state
        self.controls = controls
        self.message = widgets.HTML(value="")
        self.message.add_class("vq-message")
        self.last_update_ms = 0.0
        self._has_error = False
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
