"""Services: ingestion, admission and reservation, reconciliation and leases; they
orchestrate I/O around the pure domain. Layers and each module's room:
``docs/architecture.md``."""
