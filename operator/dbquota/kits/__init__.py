"""Kits: generic pieces with no domain words (circuit breaker, retries, clock, coalescing,
certificates, timestamps). Layers and each module's room: ``docs/architecture.md``."""
