"""Run-dependent figures in the book's prose must come from the run, never be typed by hand.

A markdown cell may state constants (K = 64, a 7 x 7 grid, the paper's figures beside a citation) but
not a measured value. What counts as measured: a decimal number (0.076, 44.7), a percentage, a time
(9 ms, 3.2 s), or a count out of a total ("26 of 64", "16/16"), written outside math, code and
placeholders. Mathematics ($...$) states constants and derivations; a measured number there would be
typed too, so measured values never go into math either. A sentence that quotes a measured value is
written by the run: ``say("... {ch5_test_nmse:.4f} ...")`` (vqvae_lib.prose) fills in what an earlier
cell recorded with ``glue("ch5_test_nmse", value)``; the text around its placeholders obeys the same rule.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SAY, notebook_prose
from lift_myst import bibliography

from vqvae_lib.prose import PLACEHOLDER  # what say() fills in

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb"))

FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)")
STRIP = [
    re.compile(r"\$\$.*?\$\$", re.S),         # display math
    re.compile(r"\$[^$\n]+\$"),               # inline math
    re.compile(r"`[^`\n]*`"),                 # inline code
    PLACEHOLDER,                              # a placeholder of say(): the run fills it in
    re.compile(r"\*\*Exercise \d+\.\d+\*\*"),   # an exercise's number
    re.compile(r"\[[^\]\n]*\]\([^)]*\)"),   # links (citations, section numbers, file names)
]


def prose(markdown: str) -> str:
    """The cell without its code blocks (a code block's numbers are code, not claims)."""
    lines, code_fence = [], None
    for line in markdown.splitlines():
        fence = FENCE.match(line.strip())
        if code_fence is not None:  # inside a code block: skip to its closing fence
            if fence and fence.group(1) == code_fence and not fence.group(2):
                code_fence = None
        elif fence:
            code_fence = fence.group(1)
        else:
            lines.append(line)
    return "\n".join(lines)


MEASURED = re.compile(
    r"(?<![\w.])\d+\.\d+(?![\w.])"                        # a decimal number
    r"|\d+(?:\.\d+)?\s?%"                                # a percentage
    r"|\b\d+(?:\.\d+)?\s?(?:ms|milliseconds?|seconds?|minutes?)\b"  # a time
    r"|\b\d+\s?(?:/|of|out of)\s?\d+\b",                # a count out of a total
)
PAPERS = set(bibliography())
CITED = re.compile(r"\]\((" + "|".join(map(re.escape, PAPERS)) + r")\)")


def prose_figures(markdown: str) -> list[str]:
    """The measured-looking figures of one markdown text, each with its line, outside cited paragraphs."""
    found = []
    for line in prose(markdown).split("\n\n"):  # a paragraph: a citation covers the paper's figures around it
        if CITED.search(line):
            continue
        text = line
        for pattern in STRIP:
            text = pattern.sub(" ", text)
        found += [f"{m.group(0)!r} in: {' '.join(line.split())[:160]}" for m in MEASURED.finditer(text)]
    return found


GLUE_CALL = re.compile(r"""\bglue\(\s*(f?)["']([^"']+)["']""")


def test_recogniser_catches_typed_figures_and_spares_constants():
    typed = ["a test NMSE of 0.076 in our run", "about 26 of 64 codes", "takes 9 ms", "two thirds (66%)",
             "an NMSE of {ch5_nmse:.3f}, against 0.41 before"]
    assert all(prose_figures(t) for t in typed)
    constants = ["$K = 64$ codes on a 7 x 7 grid", "with `beta=0.25`",
                 "the paper reports 4.67 bits ([van den Oord et al., 2017](https://arxiv.org/abs/1711.00937))",
                 "{ch5_nmse:.3f} after training", "$\\beta = 0.25$", "see [2.1](a.ipynb)"]
    assert not any(prose_figures(t) for t in constants)
    # a link to anything but a cited paper does not excuse a figure
    assert prose_figures("0.25 of the time, says [a blog](https://example.org)")


def test_say_templates_are_found():
    cell = 'x = 1\nsay(r"""\nThe NMSE is {ch5_nmse:.3f}.\n""")\n'
    assert [m.group(2) for m in SAY.finditer(cell)] == ["\nThe NMSE is {ch5_nmse:.3f}.\n"]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_no_hand_typed_figures(page):
    found = [f for text in notebook_prose(page) for f in prose_figures(text)]
    assert not found, f"{page.name} states run-dependent figures by hand; say() them:\n" + "\n".join(found)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_placeholder_is_glued(page):
    """A placeholder that no cell glues would stop the chapter at that cell: catch it without running it."""
    cells = json.loads(page.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    wanted = {p.group(1) for m in SAY.finditer(code) for p in PLACEHOLDER.finditer(m.group(2))}
    literal = {m.group(2) for m in GLUE_CALL.finditer(code) if not m.group(1)}
    templates = [re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(m.group(2))) + "$")
                 for m in GLUE_CALL.finditer(code) if m.group(1)]  # glue(f"ch7_remedy_{n}_{name}", ...)
    missing = {k for k in wanted if k not in literal and not any(t.match(k) for t in templates)}
    assert not missing, f"{page.name} says names that no cell glues: {sorted(missing)}"
