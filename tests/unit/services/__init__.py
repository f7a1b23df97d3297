"""Tests of dbquota's services (see each module's docstring)."""
