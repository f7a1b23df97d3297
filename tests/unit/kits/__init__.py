"""Tests of dbquota's kits (see each module's docstring)."""
