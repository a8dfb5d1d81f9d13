"""Check functions for the chapters' exercises: each tells a reader whether their answer is right.

One module per chapter (``ch01`` ... ``ch07``); each check returns True or raises AssertionError
with a hint, and prints a short verdict.
"""
