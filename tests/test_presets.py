"""The presets and the smoke run's cut of them (VQVAE_SMOKE=1)."""
from __future__ import annotations

import pytest

from vqvae_lib.presets import (
    PRESETS,
    REPEATS,
    SAMPLE_COUNTS,
    SMOKE_REPEATS,
    SMOKE_SAMPLES,
    SMOKE_STEPS,
    STEP_BUDGETS,
    get_preset,
    smoke,
)


def leaves(node, path=()):
    """(path, value) for every non-dict value of a nested dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, node


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_smoke_run_cuts_budgets_counts_repeats_and_seeds_and_keeps_the_sizes(name):
    full, cut = dict(leaves(get_preset(name))), dict(leaves(smoke(get_preset(name))))
    assert cut.pop(("smoke",)) is True and full.keys() == cut.keys()
    caps = {**dict.fromkeys(STEP_BUDGETS, SMOKE_STEPS), **dict.fromkeys(SAMPLE_COUNTS, SMOKE_SAMPLES),
            **dict.fromkeys(REPEATS, SMOKE_REPEATS)}
    for path, value in full.items():
        key = path[-1]
        if key in caps:
            assert cut[path] == min(value, caps[key]), path
        elif key == "seeds":
            assert cut[path] == value[:1], path
        elif key == "num_codes" and isinstance(value, list):
            assert cut[path] == value[-1:], path
        else:
            assert cut[path] == value, path  # model sizes, batch sizes, learning rates: the preset's
    # every kind of cut happens somewhere, so a renamed key cannot slip past the caps above
    assert {path[-1] for path in full} >= set(caps) | {"seeds"}


def test_every_comparison_budget_says_how_many_steps_it_times():
    for name, preset in PRESETS.items():
        for budget in ("prior_comparison", "quantizer_comparison"):
            assert preset[budget]["timed_steps"] >= 1, (name, budget)
