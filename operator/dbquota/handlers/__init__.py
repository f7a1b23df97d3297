"""Handlers: the kopf adapters and the operator's start-up; the only kopf importers besides
the entry point. Layers and each module's room: ``docs/architecture.md``."""
