"""Domain: pure decisions and data (pricing, degradation policies, verdicts, statuses); no
I/O, no asyncio, no kopf. Layers and each module's room: ``docs/architecture.md``."""
