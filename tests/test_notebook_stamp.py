"""The outputs stored in each chapter are what the current code produces under ci (`make refresh`)."""
from __future__ import annotations

import copy
import json

import pytest
import stored_outputs as tool

PAGES = tool.chapters()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_stored_outputs_are_the_current_codes(page):
    why = tool.stale(page)
    assert why is None, f"{page.name}: {why}; run `make refresh` (or tools/stored_outputs.py refresh {page.stem[:2]})"


def test_the_tripwire_sees_a_code_edit_and_a_library_edit(tmp_path, monkeypatch):
    notebook = json.loads(PAGES[0].read_text())
    notebook["metadata"][tool.STAMP] = {"preset": tool.PRESET, "sources": tool.sources_digest(notebook)}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    assert tool.stale(path) is None
    edited = copy.deepcopy(notebook)
    code = next(c for c in edited["cells"] if c["cell_type"] == "code")
    code["source"] = "".join(code["source"]) + "\nx = 1"
    path.write_text(json.dumps(edited))
    assert tool.stale(path) is not None
    path.write_text(json.dumps(notebook))
    monkeypatch.setattr(tool, "library_digest", lambda: "another library")
    assert tool.stale(path) is not None
    del notebook["metadata"][tool.STAMP]
    path.write_text(json.dumps(notebook))
    assert tool.stale(path) == "never refreshed"
