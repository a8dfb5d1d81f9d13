import os

import pytest
import torch

from vqvae_lib import VQVAE

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)  # CI's machine; also keeps timings comparable


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


SMALL_VQVAE_CODES = 16


@pytest.fixture(scope="module")
def vqvae():
    """An untrained VQ-VAE with 16 codes of size 4, for tests of shapes and wiring."""
    torch.manual_seed(0)
    return VQVAE(num_codes=SMALL_VQVAE_CODES, code_dim=4, hidden_channels=16, res_channels=8,
                 num_res_layers=1).eval()


def rejects_under_python_O(module: str, check: str, wrong: str, imports: str = "import torch") -> None:
    """Run ``check(wrong)`` from ``vqvae_lib.exercises.<module>`` in a ``python -O`` subprocess (asserts
    stripped) and fail unless it raises ``Incorrect``: a check must not rely on ``assert``."""
    import subprocess
    import sys

    script = "\n".join([
        imports,
        "from vqvae_lib.exercises import Incorrect",
        f"from vqvae_lib.exercises.{module} import {check}",
        'assert False, "asserts must be off under -O"',
        "try:",
        f"    {check}({wrong}, verbose=False)",
        "except Incorrect as err:",
        '    print("rejected:", err)',
        "else:",
        '    raise SystemExit("accepted a wrong answer")',
    ])
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rejected:" in run.stdout
