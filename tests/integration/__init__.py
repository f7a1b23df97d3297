"""Tests of dbquota's integration (see each module's docstring)."""
