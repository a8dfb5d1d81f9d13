"""The Colab path in miniature: every chapter executes with the gpu preset's sizes and a smoke run's budgets.

``VQVAE_PRESET=gpu VQVAE_SMOKE=1`` keeps K = 512, D = 64, 128 channels, the 9-block transformers and the
batch sizes of the gpu preset and cuts every step budget, sample count and repeat to a few, so a CPU runs each
chapter in seconds to about two minutes; a shape, memory-layout or dtype error of the gpu sizes stops the chapter.
The chapters run in book order in a scratch copy of notebooks/, so nothing here touches the stored outputs
or the ci runs. `make smoke` runs two groups side by side (pytest-xdist, one worker and one CPU thread
each): chapters 4-8 (6-8 load chapter 5's model from their scratch runs/), then 10; and the others, chapter
11 after 9, whose plain-VQ runs it loads from runs/cache. Chapter 10's gpu data set, CIFAR-10, is replaced by a
40-image stand-in in its schema ($VQVAE_LOCAL_DATA).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest
from conftest import save_cifar10_stand_in
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# One worker runs these, in this order (6-8 load chapter 5's model); the other the rest, 11 after 9: about
# the same time each (317 s and 311 s of chapters, measured 2026-12-06).
ONE_WORKER = ("04", "05", "06", "07", "08", "10")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke") / "notebooks"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    # chapter 10's gpu data set, CIFAR-10, is a Hub download: a stand-in in its schema takes its place
    cifar10 = save_cifar10_stand_in(work.parent / "cifar10")
    # one thread per kernel: two kernels on two cores, neither waiting on the other's threads
    settings = dict(VQVAE_PRESET="gpu", VQVAE_SMOKE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
                    VQVAE_LOCAL_DATA=f"cifar10={cifar10}")
    with pytest.MonkeyPatch.context() as env:  # the kernels inherit these; restored afterwards
        for key, value in settings.items():
            env.setenv(key, value)
        yield work


def run_with_the_gpu_sizes(chapter: Path, scratch: Path) -> None:
    notebook = nbformat.read(scratch / chapter.name, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(scratch)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "preset: gpu" in printed, "the chapter did not run under the gpu preset"
    print(f"{chapter.stem}: {time.perf_counter() - start:.0f} s under gpu smoke")


def chapters(on_one_worker: bool) -> list:
    return [pytest.param(p, id=p.stem) for p in CHAPTERS if (p.name[:2] in ONE_WORKER) == on_one_worker]


# A class per worker: `--dist loadscope` sends each class's tests to one worker, in order. (`--dist loadgroup`
# with xdist_group marks would say the same, but under pytest 9.2 it silently distributes the tests one by one:
# pytest-xdist issue 1386.)
class TestChapterFiveAndTheChaptersOnItsModel:
    @pytest.mark.parametrize("chapter", chapters(on_one_worker=True))
    def test_runs_with_the_gpu_sizes(self, chapter, scratch):
        run_with_the_gpu_sizes(chapter, scratch)


class TestTheOtherChapters:
    @pytest.mark.parametrize("chapter", chapters(on_one_worker=False))
    def test_runs_with_the_gpu_sizes(self, chapter, scratch):
        run_with_the_gpu_sizes(chapter, scratch)
