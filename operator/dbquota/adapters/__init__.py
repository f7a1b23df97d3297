"""Adapters: one third-party client each (httpx, aiosqlite, kubernetes-asyncio,
prometheus-client), mutually independent, turning foreign errors into ours. Layers and
each module's room: ``docs/architecture.md``."""
