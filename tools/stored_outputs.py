"""Keep the outputs stored in the chapters those of the current code, and say when they are not.

    python tools/stored_outputs.py refresh             # execute every chapter in place under ci (`make refresh`)
    python tools/stored_outputs.py refresh 05 06       # just these chapters (by number or name)
    python tools/stored_outputs.py check               # exit 1 if a chapter's stored outputs are stale
    python tools/stored_outputs.py drift [--over 5]    # run every chapter here; list the glued figures that
                                                       # moved more than 5 % from the stored run's

A reader who opens a notebook on GitHub or Colab sees its stored outputs, not the book's fresh build, so
``refresh`` executes each chapter in a fresh kernel, in book order (chapters 6-8 load chapter 5's model
from ``notebooks/runs/``), and stamps the notebook's metadata with the digest of what produced the
outputs: its code cells, the library's source and the preset, and records the figures the chapter glued
(``vqvae_lib.prose.FACTS``). ``check`` (and tests/test_notebook_stamp.py) recompute the digest: any edit to
a code cell or to ``vqvae_lib`` since the last refresh shows. ``drift`` executes every chapter in a scratch
copy on this machine and compares its figures with the recorded ones: what another CPU (or thread count, or
library version) makes of the same code.
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
    from vqvae_lib.training.run_cache import source_digest

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


# Appended to a chapter while it runs, then removed: prints the numbers the chapter glued, as JSON.
PRINT_FACTS = ("import json, numbers\nfrom vqvae_lib.prose import FACTS\n"
               "print(json.dumps({k: float(v) for k, v in FACTS.items()\n"
               "                  if isinstance(v, numbers.Number) or getattr(v, 'ndim', None) == 0}))")


def execute(path: Path, workdir: Path, timeout: int = 1800):
    """Run the notebook at ``path`` in a fresh kernel in ``workdir``: (the executed notebook, its glued numbers).
    ``timeout``: seconds one cell may run."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PRINT_FACTS))
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    facts = json.loads(notebook.cells.pop().outputs[0]["text"])
    return notebook, facts


def refresh(paths: list[Path]) -> None:
    import nbformat

    os.environ.update(VQVAE_PRESET=PRESET, MPLBACKEND="Agg")
    for path in paths:
        start = time.perf_counter()
        notebook, facts = execute(path, NOTEBOOKS)
        notebook.metadata[STAMP] = {"preset": PRESET, "sources": sources_digest(notebook), "facts": facts}
        nbformat.write(notebook, path)
        print(f"{path.name}: refreshed in {time.perf_counter() - start:.0f} s", flush=True)


def drift(paths: list[Path], over: float) -> int:
    """Execute the chapters in a scratch copy and print the glued figures more than ``over`` % from the stored."""
    import shutil
    import tempfile

    os.environ.update(VQVAE_PRESET=PRESET, MPLBACKEND="Agg")
    moved, total = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "notebooks"
        shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
        for path in paths:
            stored = json.loads(path.read_text())["metadata"].get(STAMP, {}).get("facts", {})
            _, here = execute(work / path.name, work)
            for name in sorted(set(stored) & set(here)):
                total += 1
                a, b = stored[name], here[name]
                change = abs(b - a) / abs(a) * 100 if a else (0.0 if b == a else float("inf"))
                if change > over:
                    moved.append((change, name, a, b))
            print(f"{path.name}: {len(stored)} figures stored, {len(here)} here", flush=True)
    for change, name, a, b in sorted(moved, reverse=True):
        print(f"{name:40s} {a:12.5g} -> {b:12.5g}  ({change:.1f} %)")
    print(f"{len(moved)} of {total} glued figures moved by more than {over:g} %")
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("command", choices=["refresh", "check", "drift"])
    parser.add_argument("chapters", nargs="*", help="chapter numbers or names (default: all)")
    parser.add_argument("--over", type=float, default=5.0, help="drift: list figures that moved more (%%)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    paths = chapters(args.chapters)
    if args.command == "refresh":
        refresh(paths)
        return 0
    if args.command == "drift":
        return drift(paths, args.over)
    problems = [f"{p.name}: {why}" for p in paths if (why := stale(p))]
    print("\n".join(problems) or "every chapter's stored outputs are the current code's")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
