import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)  # CI's machine; also keeps timings comparable


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def grads_reached(loss, groups: dict) -> dict:
    """Backprop ``loss`` and say, per named parameter group, whether any gradient is non-zero."""
    params = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    by_param = {id(p): g for p, g in zip(params, grads)}
    return {name: any(by_param.get(id(p)) is not None and by_param[id(p)].abs().sum() > 0 for p in ps)
            for name, ps in groups.items()}
