"""benchmarks/chapter_times.py writes the preset page's table of chapter times and key figures.

Its run executes the whole book (minutes per preset), so these tests feed the table-writing made-up results
and check what the page says; nothing here executes a notebook.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

_spec = importlib.util.spec_from_file_location("chapter_times", ROOT / "benchmarks" / "chapter_times.py")
chapter_times = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chapter_times)


def fake_results() -> dict[str, list[dict]]:
    """Two presets, every chapter: the glued key figure is 0.1 * the chapter's number (made up)."""
    results = {}
    for preset, scale in (("ci", 1.0), ("cpu", 3.0)):
        rows = []
        for i, stem in enumerate(CHAPTERS, start=1):
            key = chapter_times.KEY_FIGURES[stem[:2]][0]
            values = {key: 0.1 * i, "ch0_unrelated": 99.0}
            rows.append(chapter_times.chapter_row(stem, 10.0 * i * scale, values))
        results[preset] = rows
    return results


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_every_chapter_has_a_key_figure_that_it_glues():
    """Each chapter names one figure, and the chapter's code glues that name (literally or by a template)."""
    assert sorted(chapter_times.KEY_FIGURES) == [stem[:2] for stem in CHAPTERS]
    for stem in CHAPTERS:
        key, fmt, what = chapter_times.KEY_FIGURES[stem[:2]]
        assert key.startswith(f"ch{int(stem[:2])}_") and what and fmt.format(0.5)
        cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        names = re.findall(r"""\bglue\(\s*(f?)["']([^"']+)["']""", code)
        literal = {n for f, n in names if not f}
        # glue(f"ch3_{key}_{field}", ...): a template glues every name it can format to
        templates = [re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(n)) for f, n in names if f]
        assert key in literal or any(re.fullmatch(t, key) for t in templates), f"{stem} glues no {key!r}"


def test_a_chapter_row_formats_its_figure_or_says_why_not():
    key, fmt, _ = chapter_times.KEY_FIGURES["05"]
    assert chapter_times.chapter_row("05_training_vqvae", 12.34, {key: 0.061234}) == {
        "chapter": "05_training_vqvae", "seconds": 12.3, "figure": fmt.format(0.061234), "timed_out": False}
    assert chapter_times.chapter_row("05_training_vqvae", 1.0, {"other": 1.0})["figure"] == "-"
    assert chapter_times.chapter_row("05_training_vqvae", 1.0, None)["figure"] == "failed"
    late = chapter_times.chapter_row("09_quantizers_after_vq", 1806.7, None, timed_out=True)
    assert late["figure"] == "timed out"
    results = {"cpu": [late, chapter_times.chapter_row("10_colour_and_vqgan", 500.0, {"ch10_vqgan_frechet": 20.9})]}
    rows = table_rows("\n".join(chapter_times.times_table(results)))
    assert rows[2][2:] == ["> 1,807", "timed out"] and rows[-1][2] == "> 2,307"  # a lower bound, not a time


def test_the_table_has_time_and_key_figure_per_chapter_and_preset():
    rows = table_rows("\n".join(chapter_times.times_table(fake_results())))
    header, body, total = rows[0], rows[2:-1], rows[-1]
    assert header == ["chapter", "key figure: what it is", "`ci`: s", "`ci`: figure", "`cpu`: s", "`cpu`: figure"]
    assert [r[0] for r in body] == CHAPTERS
    for i, (stem, row) in enumerate(zip(CHAPTERS, body), start=1):
        key, fmt, what = chapter_times.KEY_FIGURES[stem[:2]]
        assert row[1] == f"`{key}`: {what}"
        assert row[2:] == [f"{10 * i:,.0f}", fmt.format(0.1 * i), f"{30 * i:,.0f}", fmt.format(0.1 * i)]
    n = len(CHAPTERS)
    assert total[0] == "all"
    assert total[2] == f"{10 * n * (n + 1) / 2:,.0f}" and total[4] == f"{30 * n * (n + 1) / 2:,.0f}"


def test_a_preset_missing_a_chapter_leaves_its_cells_empty():
    results = fake_results()
    results["cpu"] = results["cpu"][:-1]  # the last chapter was not run under cpu
    last = table_rows("\n".join(chapter_times.times_table(results)))[-2]
    assert last[0] == CHAPTERS[-1] and last[2] and last[4:] == ["", ""]


def test_the_page_keeps_the_sizes_and_says_how_the_times_were_measured():
    page = chapter_times.page(fake_results(), "2 CPU cores, no GPU", "2026-12-06")
    sizes = "\n".join(chapter_times.preset_table())
    assert page.startswith(sizes)
    assert "2 CPU cores, no GPU" in page and "2026-12-06" in page and chapter_times.COMMAND in page
    assert "\n".join(chapter_times.times_table(fake_results())) in page
    empty = chapter_times.page({})
    assert empty.startswith(sizes) and chapter_times.COMMAND in empty and "| chapter |" not in empty


def test_sizes_only_writes_the_page_without_running_a_chapter(tmp_path, monkeypatch):
    monkeypatch.setattr(chapter_times, "run", lambda preset: pytest.fail("executed a chapter"))
    out = tmp_path / "times.md"
    chapter_times.main(["--sizes-only", "--out", str(out)])
    assert out.read_text() == chapter_times.page({})
