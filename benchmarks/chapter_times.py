"""Time every chapter under each given preset, in book order, each in a fresh kernel from an empty runs/
cache, and collect the key figure each chapter records with vqvae_lib.prose.glue. Writes book/_preset_times.md, which
"How to run this book" includes: the presets' sizes (from vqvae_lib.presets) and the measured times.

    python benchmarks/chapter_times.py --preset ci --preset cpu

The figures are the values the executed chapters glued (read back by a cell appended to each copy), so
the table can only show what the chapters computed.
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
sys.path.insert(0, str(ROOT / "tools"))
from stored_outputs import execute  # noqa: E402  (tools/ is no package)

# The figure shown per chapter: (glue key, how to print it, what it is). A missing key prints "-".
KEY_FIGURES = {
    "01": ("ch1_test_bpd", "{:.3f}", "VAE's test bound, bits per dimension"),
    "02": ("ch2_best_nmse", "{:.3f}", "best collapse remedy's test NMSE"),
    "03": ("ch3_mean_image_nmse", "{:.3f}", "NMSE of the mean image (the bug's floor)"),
    "04": ("ch4_nmse_best", "{:.3f}", "best beta's test NMSE"),
    "05": ("ch5_test_nmse", "{:.4f}", "test NMSE"),
    "06": ("ch6_label_bound", "{:.3f}", "most a label can save, bits per code"),
    "07": ("ch7_prior_bits", "{:.2f}", "prior's test bits per code"),
}


def run(preset: str) -> list[dict]:
    rows = []
    os.environ.update(VQVAE_PRESET=preset, MPLBACKEND="Agg")  # the kernels inherit them
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
        for nb in sorted(work.glob("0*.ipynb")):
            start = time.perf_counter()
            _, values = execute(nb, work)  # in a fresh kernel, with what the chapter glued
            seconds = time.perf_counter() - start
            key, fmt, what = KEY_FIGURES.get(nb.name[:2], (None, "", ""))
            figure = fmt.format(float(values[key])) if key in values else "-"
            rows.append({"chapter": nb.stem, "seconds": round(seconds, 1), "figure": figure, "what": what})
            print(rows[-1], flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", choices=["ci", "cpu", "gpu"], help="repeat for several")
    presets = parser.parse_args().preset or ["ci"]
    lines = preset_table() + [""]
    for preset in presets:
        rows = run(preset)
        total = sum(r["seconds"] for r in rows)
        lines += [f"Each chapter under `{preset}`, executed top to bottom in a fresh kernel in book order from an "
                  f"empty `runs/` cache (`python benchmarks/chapter_times.py`, {os.cpu_count()} CPU cores, no GPU, "
                  f"{datetime.date.today().isoformat()}):", "",
                  "| chapter | seconds | key figure | |", "| :-- | --: | --: | :-- |"]
        lines += [f"| {r['chapter']} | {r['seconds']:.0f} | {r['figure']} | {r['what']} |" for r in rows]
        lines += [f"| all | {total:.0f} | | |", ""]
    out = ROOT / "book" / "_preset_times.md"
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
