"""The chapters' run-dependent sentences, written by the run itself.

A chapter records each value it measures under a name, ``glue("ch5_test_nmse", nmse)``, and writes the
sentences that quote such values with ``say(text)``: every ``{name}`` or ``{name:format}`` in the text
(``format`` as in Python's ``format(value, spec)``) is replaced by the recorded value, and the result is
displayed as Markdown output. JupyterLab, Colab, GitHub's viewer and the rendered book all show that
output as finished text, with the numbers of the run the reader just made, on any preset and device.

Only names of the form ``ch<digits>_<word>`` are placeholders, so the braces of LaTeX in the same text
(``$\\frac{1}{2}$``) are left alone; a placeholder that names no recorded value is an error.
"""
from __future__ import annotations

import re
from typing import Any

from IPython.display import Markdown

FACTS: dict[str, Any] = {}
"""The values recorded by ``glue`` in this process (a chapter runs in a kernel of its own)."""

NAME = re.compile(r"ch\d+_\w+")
PLACEHOLDER = re.compile(r"\{(ch\d+_\w+)(?::([^{}]*))?\}")


def glue(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` (``ch<chapter>_<what>``) for the sentences ``say`` writes."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"a glued name is ch<chapter>_<what>, like 'ch5_test_nmse'; got {name!r}")
    FACTS[name] = value


def fill(text: str) -> str:
    """``text`` with every ``{name}`` / ``{name:spec}`` replaced by the recorded value."""

    def value(match: re.Match) -> str:
        name, spec = match.group(1), match.group(2) or ""
        if name not in FACTS:
            raise KeyError(f"say(): nothing was glued under {name!r} (glued so far: {sorted(FACTS)})")
        return format(FACTS[name], spec)

    return PLACEHOLDER.sub(value, text)


def say(text: str) -> Markdown:
    """Display ``text`` (Markdown, with ``{name:spec}`` placeholders) as this run's finished prose."""
    return Markdown(fill(text.strip("\n")))
