"""Unit tests of the pure domain layer (mirrors ``operator/dbquota/domain/``)."""
