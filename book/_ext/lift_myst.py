"""Sphinx extension: the chapters are plain notebooks; the book lifts a few plain conventions to MyST.

A reader opens the notebooks in JupyterLab, Colab or GitHub's viewer, none of which knows MyST, so the
notebooks hold only what every Jupyter front end renders: Markdown, LaTeX math, and a little HTML.
At build time (Sphinx's ``source-read``, before myst-nb parses a notebook) this module rewrites four
plain conventions into the MyST the rendered book uses:

=============================================================  =======================================
in the notebook                                                 on the site
=============================================================  =======================================
``([van den Oord et al., 2017](https://arxiv.org/abs/...))``    ``{cite:p}`key```: bibliography link
``<a id="ex-ch5-x"></a>**Exercise 5.1**`` starting a cell       ``{exercise}`` with ``:label: ex-ch5-x``
``<details><summary>Solution</summary> ... </details>`` cell    ``{solution}`` of the exercise above it
``[Exercise 5.1](#ex-ch5-x)``, ``[..](../book/x.md#label)``     ``{ref}`` to that label
``![alt](path)`` followed by an ``*italic caption*`` paragraph  ``{figure}`` with that caption
=============================================================  =======================================

A citation link is lifted only when its text is exactly the author-year label of the bibliography entry
whose URL it links to, so the plain text and the site always name the same paper.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[2]
BIB = ROOT / "references.bib"

EXERCISE = re.compile(r'\A<a id="(ex-[\w-]+)"></a>\*\*Exercise (\d+)\.(\d+)\*\*[ \t]*\n?')
SOLUTION = re.compile(r"\A<details>\s*<summary>Solution</summary>\s*\n(.*?)\n\s*</details>\s*\Z", re.S)
LINK = r"\[([^\]\n]+)\]\(([^)\s]+)\)"
CITATIONS = re.compile(r"\((" + LINK + r"(?:; " + LINK + r")*)\)")
REF = re.compile(r"\[([^\]\n]+)\]\((?:[\w./-]*\.(?:md|ipynb))?#([\w-]+)\)")
FIGURE = re.compile(r"^!\[([^\]\n]*)\]\(([^)\s]+)\)\n\n\*(.+?)\*[ \t]*$", re.S | re.M)
LABEL_TARGET = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)


def _latex_to_text(name: str) -> str:
    """A bib name part without LaTeX accents: {\\"a} -> ä, {\\L} -> Ł."""
    from pybtex.markup import LaTeXParser

    return LaTeXParser(name).parse().render_as("text")


@lru_cache(maxsize=None)
def bibliography(bib: Path = BIB) -> dict[str, tuple[str, str]]:
    """{url: (key, author-year label)} of every entry: the label as the book's citations print it."""
    index = {}
    for key, entry in parse_file(str(bib)).entries.items():
        surnames = [_latex_to_text(" ".join(p.prelast_names + p.last_names)) for p in entry.persons["author"]]
        who = surnames[0] if len(surnames) == 1 else (
            f"{surnames[0]} and {surnames[1]}" if len(surnames) == 2 else f"{surnames[0]} et al.")
        fields = entry.fields
        url = fields.get("url") or f"https://doi.org/{fields['doi']}"
        index[url] = (key, f"{who}, {fields['year']}")
    return index


def cite_link(key: str, bib: Path = BIB) -> str:
    """The plain citation of ``key``: ``[van den Oord et al., 2017](https://arxiv.org/abs/1711.00937)``."""
    for url, (k, label) in bibliography(bib).items():
        if k == key:
            return f"[{label}]({url})"
    raise KeyError(f"no entry {key!r} in {bib.name}")


def _citation(match: re.Match) -> str:
    links = re.findall(LINK, match.group(1))
    index = bibliography()
    if not all(url in index and index[url][1] == text for text, url in links):
        return match.group(0)  # an ordinary parenthesised link, not a citation
    return "{cite:p}`" + ",".join(index[url][0] for _, url in links) + "`"


def _fence(body: str, char: str = "`") -> str:
    """A fence longer than any run of ``char`` at the start of a line of ``body``."""
    runs = [len(m.group(0)) for m in re.finditer(rf"^{re.escape(char)}+", body, re.M)]
    return char * max(3, max(runs, default=0) + 1)


def lift_markdown(text: str, labels: set[str], last_exercise: list[str]) -> str:
    """One markdown cell's plain conventions as MyST (``last_exercise`` carries the label across cells)."""
    text = CITATIONS.sub(_citation, text)
    text = REF.sub(lambda m: f"{{ref}}`{m.group(1)} <{m.group(2)}>`" if m.group(2) in labels else m.group(0),
                   text)
    text = FIGURE.sub(lambda m: f":::{{figure}} {m.group(2)}\n:alt: {m.group(1)}\n:width: 100%\n\n{m.group(3)}\n:::",
                      text)
    if exercise := EXERCISE.match(text):
        label = exercise.group(1)
        last_exercise[:] = [label]
        body = text[exercise.end():].strip("\n")
        fence = _fence(body)
        title = f"{exercise.group(2)}.{exercise.group(3)}"
        return f"{fence}{{exercise}} {title}\n:label: {label}\n:nonumber:\n\n{body}\n{fence}"
    if (solution := SOLUTION.match(text)) and last_exercise:
        body = solution.group(1).strip("\n")
        fence = _fence(body)
        return f"{fence}{{solution}} {last_exercise[0]}\n:class: dropdown\n\n{body}\n{fence}"
    return text


@lru_cache(maxsize=None)
def known_labels() -> frozenset[str]:
    """The targets a plain link may name: every exercise anchor and every ``(label)=`` of a prose page."""
    labels = set()
    for page in (ROOT / "book").glob("*.md"):
        labels |= set(LABEL_TARGET.findall(page.read_text()))
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        labels |= set(re.findall(r'<a id=\\"(ex-[\w-]+)\\"></a>', notebook.read_text()))
    return frozenset(labels)


def lift_notebook(source: str) -> str:
    """A notebook's JSON text with its markdown cells lifted to MyST."""
    notebook = json.loads(source)
    last_exercise: list[str] = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            cell["source"] = lift_markdown(text, known_labels(), last_exercise)
    return json.dumps(notebook)


def _source_read(app, docname: str, source: list[str]) -> None:
    if str(app.env.doc2path(docname)).endswith(".ipynb"):
        source[0] = lift_notebook(source[0])


def setup(app):
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
