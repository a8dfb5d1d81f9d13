"""Time every chapter under each given preset, in book order, each in a fresh kernel from an empty runs/
cache, and collect the key figure each chapter records with vqvae_lib.prose.glue. Writes book/_preset_times.md,
which "How to run this book" includes: the presets' sizes (from vqvae_lib.presets) and one table with, per
chapter and preset, the time and the chapter's key figure.

    python benchmarks/chapter_times.py --preset ci --preset cpu

The figures are the values the executed chapters glued (read back by a cell appended to each copy), so
the table can only show what the chapters computed. With --sizes-only nothing is executed and the page
shows the presets' sizes alone. tests/test_chapter_times.py checks the table-writing on made-up results.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "_preset_times.md"
COMMAND = "python benchmarks/chapter_times.py --preset ci --preset cpu"
CELL_LIMIT_S = 3 * 3600  # one cell's limit: a laptop preset's comparison cell can run past 30 minutes

# The figure shown per chapter: (glued name, how to print it, what it is). A chapter whose run did not
# glue the name prints "-"; one whose run failed prints "failed".
KEY_FIGURES = {
    "01": ("ch1_test_bpd", "{:.3f}", "the VAE's test bound, bits per dimension"),
    "02": ("ch2_best_nmse", "{:.3f}", "lowest test NMSE of the five quantiser variants"),
    "03": ("ch3_correct_nmse", "{:.3f}", "test NMSE of the correct straight-through model"),
    "04": ("ch4_min_used", "{:.0f}", "fewest test codes used over the positive betas of the sweep"),
    "05": ("ch5_test_nmse", "{:.4f}", "the VQ-VAE's test NMSE"),
    "06": ("ch6_prior_bits", "{:.3f}", "the PixelCNN prior's test bits per code"),
    "07": ("ch7_dead_test", "{:.0f}", "codes the VQ-VAE never uses on the test images"),
    "08": ("ch8_bound_best", "{:.3f}", "the VQ-VAE's bound with its best prior, bits per dimension"),
    "09": ("ch9_best_nmse", "{:.3f}", "lowest test NMSE of the quantisers compared"),
    "10": ("ch10_vqgan_frechet", "{:.1f}", "the VQGAN's Fréchet distance to the test images (mean over seeds)"),
    "11": ("ch11_best_nmse", "{:.3f}", "lowest test NMSE of the codebook fixes and their reference rows"),
}


def chapter_row(chapter: str, seconds: float, values: dict | None, timed_out: bool = False) -> dict:
    """One chapter's result: its time and its key figure, formatted (``values=None``: the run failed;
    ``timed_out``: a cell ran past the limit, so the chapter takes longer than ``seconds``)."""
    key, fmt, _ = KEY_FIGURES.get(chapter[:2], (None, "", ""))
    if timed_out:
        figure = "timed out"
    elif values is None:
        figure = "failed"
    elif key in values:
        figure = fmt.format(float(values[key]))
    else:
        figure = "-"
    return {"chapter": chapter, "seconds": round(seconds, 1), "figure": figure, "timed_out": timed_out}


def run(preset: str) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tools"))
    from stored_outputs import execute  # tools/ is no package

    rows = []
    os.environ.update(VQVAE_PRESET=preset, MPLBACKEND="Agg")  # the kernels inherit them
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
        for nb in sorted(work.glob("[0-9][0-9]_*.ipynb")):
            start, timed_out = time.perf_counter(), False
            try:
                _, values = execute(nb, work, CELL_LIMIT_S)  # in a fresh kernel, with what the chapter glued
            except Exception as err:  # a failed chapter is a row of the table, not the end of the run
                print(f"{nb.name} under {preset}: {type(err).__name__}", file=sys.stderr, flush=True)
                values, timed_out = None, type(err).__name__ == "CellTimeoutError"
            rows.append(chapter_row(nb.stem, time.perf_counter() - start, values, timed_out))
            print(preset, rows[-1], flush=True)
    return rows


def preset_table() -> list[str]:
    from vqvae_lib.presets import PRESETS

    lines = ["| preset | VQ-VAE: K, D, hidden channels, residual layers | VQ-VAE steps "
             "| prior: channels, layers, steps | VAE steps |", "| :-- | :-- | --: | :-- | --: |"]
    for name, p in PRESETS.items():
        m, q = p["vqvae"]["model"], p["vqvae"]["model"]["quantizer"]
        ema = " (EMA codebook)" if q.get("ema") else ""
        prior = p["prior"]
        lines.append(f"| `{name}` | K = {m['num_codes']}, D = {m['code_dim']}, {m['hidden_channels']}, "
                     f"{m['num_res_layers']}{ema} | {p['vqvae']['train']['steps']:,} | "
                     f"{prior['model']['hidden_channels']}, {prior['model']['num_layers']}, "
                     f"{prior['train']['steps']:,} | {p['vae']['train']['steps']:,} |")
    return lines


def times_table(results: dict[str, list[dict]]) -> list[str]:
    """One row per chapter, two columns per preset (seconds, key figure), and a total row.

    ``results`` maps a preset to its rows (``chapter_row``), in book order; presets may miss a chapter.
    """
    presets = list(results)
    chapters = sorted({r["chapter"] for rows in results.values() for r in rows})
    header = "| chapter | key figure: what it is |" + "".join(f" `{p}`: s | `{p}`: figure |" for p in presets)
    lines = [header, "| :-- | :-- |" + " --: | --: |" * len(presets)]
    for chapter in chapters:
        key, _, what = KEY_FIGURES.get(chapter[:2], (None, "", ""))
        cells = f"| {chapter} | " + (f"`{key}`: {what} |" if key else "(none) |")
        for p in presets:
            row = next((r for r in results[p] if r["chapter"] == chapter), None)
            over = "> " if row and row.get("timed_out") else ""
            cells += f" {over}{row['seconds']:,.0f} | {row['figure']} |" if row else " | |"
        lines.append(cells)
    totals = {p: ("> " if any(r.get("timed_out") for r in results[p]) else "") +
              f"{sum(r['seconds'] for r in results[p]):,.0f}" for p in presets}
    lines.append("| all | |" + "".join(f" {totals[p]} | |" for p in presets))
    return lines


def page(results: dict[str, list[dict]], machine: str = "", date: str = "") -> str:
    """The whole of book/_preset_times.md: the presets' sizes, then the times table if there are results."""
    lines = preset_table() + [""]
    if results:
        lines += [f"How long each chapter takes under each preset, executed top to bottom in a fresh kernel in "
                  f"book order from an empty `runs/` cache ({machine}, {date}), and the figure it reaches: "
                  f"its key figure, one of the values the chapter glued (named in the second column). "
                  f"`{COMMAND}` measured it and wrote this table.", ""]
        lines += times_table(results)
    else:
        lines += [f"`{COMMAND}` executes every chapter under each preset and adds here a table of the time "
                  f"each chapter takes and the key figure it reaches; until it is run, this page shows the "
                  f"presets' sizes only."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch

    gpu = f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", choices=["ci", "cpu", "gpu"], help="repeat for several")
    parser.add_argument("--sizes-only", action="store_true", help="run nothing: write the presets' sizes alone")
    parser.add_argument("--out", type=Path, default=OUT, help="the page to write (default: %(default)s)")
    args = parser.parse_args(argv)
    presets = [] if args.sizes_only else args.preset or ["ci"]
    results = {preset: run(preset) for preset in presets}
    args.out.write_text(page(results, machine(), datetime.date.today().isoformat()))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
