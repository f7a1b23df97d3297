"""Unit tests of dbquota.handlers."""
