"""The ci recipe must really learn, for every seed: the figures the README and the closing notes quote.

Run by `make test`: the seeds spread over the xdist workers, each trained once. The report is
_build/reports/learning.json.
"""
import json
import math
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from vqvae_lib import VQVAE, evaluate, train
from vqvae_lib.presets import get_preset
from vqvae_lib.recipes import build_prior, code_datasets, train_settings, train_vqvae

REPORT = Path(__file__).resolve().parents[1] / "_build" / "reports" / "learning.json"
# Three seeds each run (28 s of a core apiece); seeds 3 and 4 met the bar too when measured (README).
SEEDS = range(3)
# The ci preset's own bar, for every seed: a lucky initialisation must not be needed.
MAX_NMSE, MIN_PERPLEXITY = 0.08, 30.0


def write_report(key, value, seed=None):
    """Add ``value`` under ``key`` (or under ``key[seed]``) to the shared report; xdist workers take turns."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{REPORT}.lock"):
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        if seed is None:
            report[key] = value
        else:
            report.setdefault(key, {})[str(seed)] = value
        REPORT.write_text(json.dumps(report, indent=2))
    print(key, seed, value)


def timed_recipe(out, seed, preset="ci"):
    start = time.perf_counter()
    metrics = train_vqvae("mnist-5k", preset, out, seed=seed, progress=False, device="cpu")
    return {**metrics, "train_seconds": round(time.perf_counter() - start, 1)}


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory, worker_id):
    """A folder every xdist worker of this run shares (each worker's own basetemp sits inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def seed_run(root: Path, seed: int) -> dict:
    """The ci recipe's run for ``seed``, trained once per test run: whichever worker asks first trains it
    (in ``root/learning-seed<seed>``), a worker asking meanwhile waits and reads the result."""
    out, result = root / f"learning-seed{seed}", root / f"learning-seed{seed}.json"
    with FileLock(f"{out}.lock"):
        if not result.is_file():
            result.write_text(json.dumps(timed_recipe(out, seed)))
    return json.loads(result.read_text()) | {"dir": out}


@pytest.mark.parametrize("seed", SEEDS)
def test_ci_recipe_learns_for_every_seed(runs_root, seed):
    run = seed_run(runs_root, seed)
    row = {k: run[k] for k in ("test_nmse", "test_perplexity", "codes_used", "train_seconds")}
    write_report("vqvae_ci_seeds", row, seed=seed)
    assert row["test_nmse"] <= MAX_NMSE and row["test_perplexity"] >= MIN_PERPLEXITY, \
        f"seed {seed} misses NMSE <= {MAX_NMSE} or perplexity >= {MIN_PERPLEXITY}: {row}"


def test_remedies_beat_the_plain_quantizer(runs_root, tmp_path, monkeypatch):
    """The same recipe and seed with k-means init and restarts off reconstructs worse."""
    plain = get_preset("ci")
    plain["vqvae"]["model"]["quantizer"] = dict(kmeans_init=False, restart_after=0)
    monkeypatch.setattr("vqvae_lib.recipes.get_preset", lambda name=None: plain)
    without = timed_recipe(tmp_path / "plain", seed=0)
    write_report("vqvae_ci_plain_seed0", {k: without[k] for k in ("test_nmse", "test_perplexity", "codes_used")})
    assert without["test_nmse"] > seed_run(runs_root, 0)["test_nmse"]


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_prior_beats_the_unigram_prior(runs_root, kind):
    """Chapter 6's PixelCNN and chapter 8's transformer, class-conditional, each with the ci preset's settings for
    its kind, on the codes of seed 0's ci VQ-VAE: the context must be worth a bit per code over the unigram prior."""
    vqvae = VQVAE.from_pretrained(seed_run(runs_root, 0)["dir"])
    codes = code_datasets(vqvae, "mnist-5k", device="cpu")
    preset = get_preset("ci")
    prior = build_prior(preset, vqvae.quantizer.num_codes, num_classes=10, seed=0, kind=kind)
    train(prior, codes["train"], **train_settings(preset, "prior", kind=kind), seed=0, progress=False, device="cpu")
    bits = evaluate(prior, codes["test"], device="cpu")["bits_per_code"]
    counts = torch.bincount(codes["train"].tensors[0].flatten(), minlength=64).double() + 1  # add-one smoothing
    p = counts / counts.sum()
    unigram = float(-torch.log2(p[codes["test"].tensors[0].flatten()]).mean())
    write_report(f"{kind}_prior_ci_seed0", {"test_bits_per_code": round(bits, 3),
                                            "unigram_bits_per_code": round(unigram, 3),
                                            "uniform_bits_per_code": math.log2(64)})
    assert bits < unigram - 1.0
