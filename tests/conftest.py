import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from vqvae_lib import VQVAE, evaluate_vqvae, load_images, train
from vqvae_lib.presets import get_preset
from vqvae_lib.recipes import build_vqvae

os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist (`make unit`: one worker per core) each worker gets one thread; alone, CI's two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for a module of tiny networks, which gain nothing from a second: on a shared 2-core
    machine two threads ran the digit classifier's training 7x slower (142 s against 19 s, load average 6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def input_dependence(model, embedding, indices, i, j, labels=None) -> torch.Tensor:
    """Which embedded input slots the logits at grid position (i, j) depend on, by autograd: a bool
    tensor over ``embedding``'s output positions for the first grid (its output minus the channel axis)."""
    captured = {}

    def hook(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = embedding.register_forward_hook(hook)
    try:
        logits = model(indices) if labels is None else model(indices, labels)
        logits[0, :, i, j].sum().backward()
    finally:
        handle.remove()
    return captured["emb"].grad[0].abs().sum(-1) > 0


SMALL_VQVAE_CODES = 16


@pytest.fixture(scope="module")
def vqvae():
    """An untrained VQ-VAE with 16 codes of size 4, for tests of shapes and wiring."""
    torch.manual_seed(0)
    return VQVAE(num_codes=SMALL_VQVAE_CODES, code_dim=4, hidden_channels=16, res_channels=8,
                 num_res_layers=1).eval()


def rejects_under_python_O(module: str, wrong: dict, setup: str = "import torch") -> None:
    """Run every check of ``vqvae_lib.exercises.<module>`` on a wrong answer in one ``python -O`` subprocess
    (asserts stripped) and fail unless each raises ``Incorrect`` with its hint: a check must not rely on
    ``assert``, and none may go untested.

    wrong: {check name: [(arguments before ``verbose=False``, as source; a regex the hint must match), ...]}.
    setup: source run first (imports, small models the arguments name).
    """
    script = "\n".join([
        setup,
        "import re",
        "from vqvae_lib.exercises import Incorrect",
        f"from vqvae_lib.exercises import {module} as chapter",
        "if __debug__:",
        '    raise SystemExit("asserts are on: run under python -O")',
        f"cases = {wrong!r}",
        'checks = sorted(name for name in dir(chapter) if name.startswith("check_"))',
        "if checks != sorted(cases):",
        '    raise SystemExit(f"checks without a wrong answer to refuse: {sorted(set(checks) - set(cases))}")',
        "for name, answers in cases.items():",
        "    for args, hint in answers:",
        "        try:",
        '            eval(f"chapter.{name}({args}, verbose=False)")',
        "        except Incorrect as err:",
        "            if not re.search(hint, str(err)):",
        '                raise SystemExit(f"{name}({args}): the hint {str(err)!r} does not say {hint!r}")',
        '            print(name, "refused")',
        "        else:",
        '            raise SystemExit(f"{name}({args}) accepted a wrong answer under python -O")',
    ])
    # Optimised bytecode is a cache of its own (.opt-1.pyc): keep it between runs, or torch compiles again.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "vqvae-book-pycache-O")
    run = subprocess.run([sys.executable, "-O", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("refused") == sum(len(answers) for answers in wrong.values()), run.stdout


def short_ci_run(model_changes: dict, steps: int, train_images: int = 2000, model_seed: int = 0):
    """The quantizers' learning tests: the ci VQ-VAE with ``model_changes`` (its quantizer, num_codes, ...),
    its weights from ``model_seed``, trained ``steps`` steps (the ci batch size and learning rate, seed 0) on
    the first ``train_images`` training digits. Returns (model, test_set, untrained, trained, seconds, history):
    ``evaluate_vqvae`` on the whole test split before and after."""
    preset = get_preset("ci")
    preset["vqvae"]["model"].update(model_changes)
    train_set, test_set = load_images("mnist-5k", "train", limit=train_images), load_images("mnist-5k", "test")
    model = build_vqvae(preset, train_set, model_seed)
    untrained = evaluate_vqvae(model, test_set, device="cpu")
    settings = preset["vqvae"]["train"]
    start = time.perf_counter()
    history = train(model, train_set, steps=steps, batch_size=settings["batch_size"], lr=settings["lr"],
                    progress=False, device="cpu", seed=0)
    seconds = time.perf_counter() - start
    return model, test_set, untrained, evaluate_vqvae(model, test_set, device="cpu"), seconds, history


def saved_and_loaded(model, x, directory):
    """Save ``model`` (a VQVAE) with ``save_pretrained``, load it back, and check the copy is the same model
    on ``x``: equal config, reconstructions, indices and encodings in eval mode. Returns (loaded, out, out_loaded)
    for a test's own checks."""
    model.eval().save_pretrained(directory)
    loaded = VQVAE.from_pretrained(directory).eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert loaded.config == model.config
    assert torch.equal(a.x_recon, b.x_recon) and torch.equal(a.vq.indices, b.vq.indices)
    assert torch.equal(model.encode(x), loaded.encode(x))
    return loaded, a, b


SAY = re.compile(r'\bsay\(r?("""|' + r"''')(.*?)\1\)", re.S)  # a say() call; group 2: its template


def notebook_prose(path: Path, stored_outputs: bool = False) -> list[str]:
    """What a notebook writes as prose: its markdown cells, the templates of its say() calls and, with
    ``stored_outputs``, the Markdown outputs stored in it (what those templates rendered to)."""
    texts = []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            texts.append(source)
            continue
        texts += [m.group(2) for m in SAY.finditer(source)]
        if stored_outputs:
            texts += ["".join(o["data"]["text/markdown"]) for o in cell.get("outputs", [])
                      if "text/markdown" in o.get("data", {})]
    return texts


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def save_cifar10_stand_in(folder, n_train: int = 40, n_test: int = 20, seed: int = 0) -> str:
    """A few random 32x32 colour images in uoft-cs/cifar10's schema ("img", "label" of its ten class names), train
    and test splits, saved with save_to_disk: what ``$VQVAE_LOCAL_DATA="cifar10=<folder>"`` loads offline."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR10_CLASSES)})

    def split(n):
        return datasets.Dataset.from_dict(
            {"img": [Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)],
             "label": [i % 10 for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(folder))
    return str(folder)
