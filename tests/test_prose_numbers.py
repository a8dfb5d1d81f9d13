"""Run-dependent figures in the book's prose must be glued from an output, never typed by hand.

A markdown cell may state constants (K = 64, a 7 x 7 grid, the paper's figures beside a citation) but
not a measured value. What counts as measured: a decimal number (0.076, 44.7), a percentage, a time
(9 ms, 3.2 s), or a count out of a total ("26 of 64", "16/16"), written outside math, code and glue
roles. Mathematics ($...$) states constants and derivations; a measured number there would be typed
too, so measured values never go into math either: they are glued with ``{glue:text}``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb"))

FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)")
STRIP = [
    re.compile(r"\$\$.*?\$\$", re.S),         # display math
    re.compile(r"\$[^$\n]+\$"),               # inline math
    re.compile(r"`[^`\n]*`"),                 # inline code and the argument of a role ({glue:text}`x`)
    re.compile(r"\{cite[a-z:]*\}"),
    re.compile(r"\[[^\]\n]*\]\([^)]*\)"),   # links (section numbers, file names)
]


def prose(markdown: str) -> str:
    """The cell without code blocks and directive options; a directive's body (an exercise) is prose."""
    lines, directives, code_fence = [], [], None
    for line in markdown.splitlines():
        fence = FENCE.match(line.strip())
        if code_fence is not None:  # inside a code block: skip to its closing fence
            if fence and fence.group(1) == code_fence and not fence.group(2):
                code_fence = None
            continue
        if fence:
            ticks, info = fence.groups()
            if info.startswith("{"):
                directives.append(ticks)
            elif not info and directives and directives[-1] == ticks:
                directives.pop()
            else:
                code_fence = ticks
            continue
        if re.match(r"^\s*:[a-z-]+:", line):
            continue  # a directive option (:label:, :class:)
        lines.append(line)
    return "\n".join(lines)


MEASURED = re.compile(
    r"(?<![\w.])\d+\.\d+(?![\w.])"                        # a decimal number
    r"|\d+(?:\.\d+)?\s?%"                                # a percentage
    r"|\b\d+(?:\.\d+)?\s?(?:ms|milliseconds?|seconds?|minutes?)\b"  # a time
    r"|\b\d+\s?(?:/|of|out of)\s?\d+\b",                # a count out of a total
)
CITED = re.compile(r"\{cite")


def prose_figures(markdown: str) -> list[str]:
    """The measured-looking figures of one markdown cell, each with its line, outside cited lines."""
    found = []
    for line in prose(markdown).split("\n\n"):  # a paragraph: a citation covers the figures around it
        if CITED.search(line):
            continue
        text = line
        for pattern in STRIP:
            text = pattern.sub(" ", text)
        found += [f"{m.group(0)!r} in: {' '.join(line.split())[:160]}" for m in MEASURED.finditer(text)]
    return found


def markdown_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def test_recogniser_catches_typed_figures_and_spares_constants():
    typed = ["a test NMSE of 0.076 in our run", "about 26 of 64 codes", "takes 9 ms", "two thirds (66%)"]
    assert all(prose_figures(t) for t in typed)
    constants = ["$K = 64$ codes on a 7 x 7 grid", "with `beta=0.25`", "the paper reports 4.67 bits {cite}`x`",
                 "{glue:text}`nmse:.3f` after training", "$\\beta = 0.25$", "see [2.1](a.ipynb)"]
    assert not any(prose_figures(t) for t in constants)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_no_hand_typed_figures(page):
    found = [f for cell in markdown_cells(page) for f in prose_figures(cell)]
    assert not found, f"{page.name} states run-dependent figures by hand; glue them:\n" + "\n".join(found)


GLUE_ROLE = re.compile(r"\{glue(?::text|:md|:any|:math)?\}`([^`]+)`")
GLUE_CALL = re.compile(r"""glue\(\s*(f?)["']([^"']+)["']""")


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_pasted_figure_is_glued(page):
    """A {glue:text} reference to a key that no cell glues would fail the book's -W build: catch it here."""
    cells = json.loads(page.read_text())["cells"]
    wanted = {m.group(1).split("::")[-1].rsplit(":", 1)[0] if ":" in m.group(1).split("::")[-1] else m.group(1)
              for c in cells if c["cell_type"] == "markdown" for m in GLUE_ROLE.finditer("".join(c["source"]))}
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    literal = {m.group(2) for m in GLUE_CALL.finditer(code) if not m.group(1)}
    templates = [re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(m.group(2))) + "$")
                 for m in GLUE_CALL.finditer(code) if m.group(1)]  # glue(f"ch7_remedy_{n}_{name}", ...)
    missing = {k for k in wanted if k not in literal and not any(t.match(k) for t in templates)}
    assert not missing, f"{page.name} pastes keys that no cell glues: {sorted(missing)}"
