"""Tests of the billing simulator's pure parts (see each module's docstring)."""
