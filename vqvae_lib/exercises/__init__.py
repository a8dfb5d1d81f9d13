"""Check functions for the chapters' exercises: each tells a reader whether their answer is right.

One module per chapter (``ch01`` ... ``ch08``), one convention for all of them:

* ``check_<name>(answer, ..., verbose=True) -> True``: ``answer`` is the reader's function or value.
  A right answer prints ``"Correct!"`` (unless ``verbose=False``) and returns True.
* A wrong answer raises :class:`Incorrect` whose message is the hint. Checks never use ``assert``,
  so they still fail under ``python -O``.
* A stub that is not done yet raises ``NotImplementedError``; the notebooks catch only that one.
"""
from __future__ import annotations


class Incorrect(Exception):
    """A reader's answer is wrong; the message says why and how to fix it."""


def require(condition, hint: str) -> None:
    """Raise :class:`Incorrect` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise Incorrect(hint)


def correct(verbose: bool, message: str = "Correct!") -> bool:
    """The common ending of a check: print the verdict when verbose, return True."""
    if verbose:
        print(message)
    return True
