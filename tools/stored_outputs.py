"""Keep the outputs stored in the chapters those of the current code, and say when they are not.

    python tools/stored_outputs.py refresh             # execute every chapter in place under ci (`make refresh`)
    python tools/stored_outputs.py refresh 05 06       # just these chapters (by number or name)
    python tools/stored_outputs.py check               # exit 1 if a chapter's stored outputs are stale

A reader who opens a notebook on GitHub or Colab sees its stored outputs, not the book's fresh build, so
``refresh`` executes each chapter in a fresh kernel, in book order (chapters 6-8 load chapter 5's model
from ``notebooks/runs/``), and stamps the notebook's metadata with the digest of what produced the
outputs: its code cells, the library's source and the preset. ``check`` (and tests/test_notebook_stamp.py)
recompute the digest: any edit to a code cell or to ``vqvae_lib`` since the last refresh shows.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PRESET = "ci"  # the run size of the stored outputs: the one CI re-executes
STAMP = "vqvae_book"  # the notebook metadata key


def chapters(names: list[str] | None = None) -> list[Path]:
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    chosen = [p for p in every if any(p.stem == n or p.stem.startswith(n.zfill(2) + "_") for n in names)]
    unknown = [n for n in names if not any(p.stem == n or p.stem.startswith(n.zfill(2) + "_") for p in every)]
    if unknown:
        raise SystemExit(f"error: no chapter {', '.join(unknown)} in notebooks/")
    return chosen


def library_digest() -> str:
    from vqvae_lib.run_cache import source_digest

    return source_digest()


def sources_digest(notebook: dict) -> str:
    """sha256 of what decides a notebook's outputs: its code cells, the library's source, the preset."""
    h = hashlib.sha256(f"{PRESET}\n{library_digest()}\n".encode())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            h.update(source.encode() + b"\0")
    return h.hexdigest()


def stale(path: Path) -> str | None:
    """Why the stored outputs of ``path`` are not the current code's, or None if they are."""
    notebook = json.loads(path.read_text())
    stamp = notebook["metadata"].get(STAMP, {})
    if not stamp:
        return "never refreshed"
    if stamp.get("sources") != sources_digest(notebook):
        return "its code cells or vqvae_lib changed since its outputs were made"
    return None


def refresh(paths: list[Path]) -> None:
    import nbformat
    from nbclient import NotebookClient

    os.environ.update(VQVAE_PRESET=PRESET, MPLBACKEND="Agg")
    for path in paths:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=1800, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        notebook.metadata[STAMP] = {"preset": PRESET, "sources": sources_digest(notebook)}
        nbformat.write(notebook, path)
        print(f"{path.name}: refreshed in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("refresh", "check"):
        print(__doc__.strip().splitlines()[0] + "\nusage: tools/stored_outputs.py refresh [chapter ...] | check")
        return 2
    sys.path.insert(0, str(ROOT))
    if argv[0] == "refresh":
        refresh(chapters(argv[1:]))
        return 0
    problems = [f"{p.name}: {why}" for p in chapters(argv[1:]) if (why := stale(p))]
    print("\n".join(problems) or "every chapter's stored outputs are the current code's")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
