"""vqvae_lib.prose: the run's sentences fill in exactly what was glued, and refuse what was not."""
import pytest
import torch

from vqvae_lib import prose


@pytest.fixture(autouse=True)
def empty_facts(monkeypatch):
    monkeypatch.setattr(prose, "FACTS", {})


def test_say_fills_each_placeholder_with_its_formatted_value():
    prose.glue("ch5_test_nmse", 0.060349)
    prose.glue("ch5_codes_used", 64)
    prose.glue("ch7_best", "EMA")
    prose.glue("ch8_bits", torch.tensor(2.6281))  # a 0-d tensor formats like its number
    shown = prose.say("NMSE {ch5_test_nmse:.4f}, {ch5_codes_used} of $K = 64$ codes, {ch7_best}, "
                      "{ch8_bits:.2f} bits; $\\frac{1}{2}$ and $\\mathbb{E}_{q}$ stay")
    assert shown.data == ("NMSE 0.0603, 64 of $K = 64$ codes, EMA, 2.63 bits; "
                          "$\\frac{1}{2}$ and $\\mathbb{E}_{q}$ stay")
    assert prose.fill("{ch5_codes_used:,d} and {ch5_test_nmse:.1%}") == "64 and 6.0%"


def test_say_refuses_a_name_nothing_glued():
    prose.glue("ch5_test_nmse", 0.06)
    with pytest.raises(KeyError, match="ch5_test_nmes"):
        prose.say("NMSE {ch5_test_nmes:.3f}")


@pytest.mark.parametrize("name", ["nmse", "ch_nmse", "ch5", "5_nmse", "ch5-nmse", 5])
def test_glue_refuses_a_name_say_could_not_fill(name):
    with pytest.raises(ValueError, match="ch<chapter>_<what>"):
        prose.glue(name, 1.0)
