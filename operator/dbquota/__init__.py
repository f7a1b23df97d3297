"""dbquota: Kubernetes database cost quotas that stay enforced when billing APIs fail.

The package is layered (checked by import-linter, see ``pyproject.toml``;
``docs/architecture.md`` gives each module's room and the paths of a review and a sync):

- ``handlers``  thin kopf adapters: the only place besides ``cli`` that imports kopf
- ``services``  ingestion loop, reservation and reconciliation: orchestrates I/O
- ``adapters``  one third-party client each (httpx, aiosqlite, kubernetes-asyncio, prometheus)
- ``domain``    pure: pricing, degradation policy, verdicts, conditions
- ``kits``      generic pieces with no domain words (circuit breaker, clock, certificates)
"""

__version__ = "0.1.0"
