"""Kits: generic pieces with no domain words (circuit breaker, retries, clock, coalescing,
certificates, timestamps, log lines). Layers and each module's room: ``docs/architecture.md``."""
