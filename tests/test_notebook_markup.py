"""The notebooks a reader opens hold no MyST: JupyterLab, Colab and GitHub's viewer would show it raw.

The rendered book gets its citations, exercises, solutions, cross-references and figures from plain
conventions that book/_ext/lift_myst.py lifts at build time; these tests check both halves: nothing raw
in any markdown cell, say() template or stored Markdown output, and every plain convention lifts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import notebook_prose
from lift_myst import EXERCISE, SOLUTION, bibliography, cite_link, known_labels, lift_markdown, lift_notebook

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb"))

RAW_MYST = {
    "role": re.compile(r"\{[a-z][\w:-]*\}`"),                    # {glue:text}`x`, {cite}`k`, {ref}`l`
    "directive": re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*\{", re.M),  # ```{exercise}, :::{figure}
    "target": re.compile(r"^\s*\([\w-]+\)=\s*$", re.M),          # (label)=
    "option": re.compile(r"^:(label|class|name|width|alt):", re.M),
}


def raw_markup(text: str) -> list[str]:
    return [f"{kind}: {m.group(0).strip()!r}" for kind, pattern in RAW_MYST.items() for m in pattern.finditer(text)]


def test_recogniser_catches_myst_and_spares_plain_markdown():
    myst = ["every {glue:text}`ch5_n:d` steps", "VQ-VAE {cite}`vandenoord2017neural`", "```{exercise}\n:label: x",
            "(multi-gpu)=\n## Several GPUs", ":::{figure} a.svg", "see {ref}`ex-ch7-kl`"]
    assert all(raw_markup(t) for t in myst)
    plain = ["$\\frac{1}{2}$ and $\\mathbb{E}_{q}[x]$", "```python\nx = {1: 2}\n```", "(see [2.1](a.ipynb))",
             "<details>\n<summary>Solution</summary>\n\nhidden\n\n</details>"]
    assert not any(raw_markup(t) for t in plain)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_no_raw_myst_where_readers_open_the_notebook(page):
    found = [f for text in notebook_prose(page, stored_outputs=True) for f in raw_markup(text)]
    assert not found, f"{page.name} shows MyST markup raw outside the book:\n" + "\n".join(found)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_plain_convention_lifts(page):
    """Each exercise, solution and citation of the notebook becomes its MyST form in the book."""
    cells = [c for c in json.loads(lift_notebook(page.read_text()))["cells"] if c["cell_type"] == "markdown"]
    plain = [c for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown"]
    for before, after in zip(plain, cells):
        text = "".join(before["source"])
        if EXERCISE.match(text):
            assert after["source"].lstrip("`").startswith("{exercise}"), text[:80]
        if SOLUTION.match(text):
            assert after["source"].lstrip("`").startswith("{solution}"), text[:80]
        # a link to a paper of the bibliography must lift to a citation: its text is the paper's label
        for label, url in re.findall(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)", text):
            if url in bibliography():
                assert "{cite:p}" in after["source"], f"{label} ({url}) does not lift: expected " \
                    f"({cite_link(bibliography()[url][0])})"
        for target in re.findall(r"\]\([\w./-]*#([\w-]+)\)", text):
            assert target in known_labels() or not target.startswith("ex-"), f"no label {target!r}"


def test_lift_writes_the_myst_the_book_had():
    labels = {"ex-ch5-x", "multi-gpu"}
    last: list[str] = []
    exercise = lift_markdown('<a id="ex-ch5-x"></a>**Exercise 5.2**\n\nDo it:\n```python\nx = 1\n```', labels, last)
    assert exercise == "````{exercise} 5.2\n:label: ex-ch5-x\n:nonumber:\n\nDo it:\n```python\nx = 1\n```\n````"
    solution = lift_markdown("<details>\n<summary>Solution</summary>\n\n$x$ is 1.\n\n</details>", labels, last)
    assert solution == "```{solution} ex-ch5-x\n:class: dropdown\n\n$x$ is 1.\n```"
    text = ("The VQ-VAE ([van den Oord et al., 2017](https://arxiv.org/abs/1711.00937); "
            "[Razavi et al., 2019](https://arxiv.org/abs/1906.00446)), see [Exercise 5.2](#ex-ch5-x), "
            "[Several GPUs](../book/how_to_run.md#multi-gpu) and ([a page](https://example.org)).")
    assert lift_markdown(text, labels, last) == (
        "The VQ-VAE {cite:p}`vandenoord2017neural,razavi2019generating`, see {ref}`Exercise 5.2 <ex-ch5-x>`, "
        "{ref}`Several GPUs <multi-gpu>` and ([a page](https://example.org)).")
    # a label that drifted from the bibliography is left a plain link (and the test above catches it)
    assert "{cite" not in lift_markdown("([van den Oord, 2017](https://arxiv.org/abs/1711.00937))", labels, last)
    figure = lift_markdown("![A diagram](../f.svg)\n\n*The caption, with $x$.*", labels, last)
    assert figure == ":::{figure} ../f.svg\n:alt: A diagram\n:width: 100%\n\nThe caption, with $x$.\n:::"


CODE_WIDTH = 90  # characters: a code box of the rendered book shows this much without scrolling sideways


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_code_lines_fit_the_page(page):
    """Code a reader sees (the say() cells are hidden on the site) fits the book's code boxes."""
    cells = json.loads(page.read_text())["cells"]
    long = [f"cell {i}: {line[:60]}..." for i, c in enumerate(cells) if c["cell_type"] == "code"
            and not "".join(c["source"]).lstrip().startswith("say(")
            for line in "".join(c["source"]).splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"{page.name}: code lines over {CODE_WIDTH} characters:\n" + "\n".join(long)
