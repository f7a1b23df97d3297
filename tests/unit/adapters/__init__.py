"""Tests of dbquota's adapters (see each module's docstring)."""
