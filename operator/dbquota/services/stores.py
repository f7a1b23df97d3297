"""What the services read and write Kubernetes objects through, as Protocols.

:class:`dbquota.adapters.kube.Kube` implements each; unit tests pass small fakes that
need no ``type: ignore``. Also the replica's name, which its escrow entries and Leases
carry.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from dbquota.domain.resources import QuotaObject
from dbquota.errors import KubeError


class QuotaStore(Protocol):
    """Where a quota is read and its status written by compare-and-swap (the apiserver;
    a dict in unit tests). :class:`dbquota.adapters.kube.Kube` is one."""

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        """The quota, status and ``resourceVersion`` included."""
        ...

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        """Merge-patch ``status``; a compare-and-swap when ``resource_version`` is given
        (``Conflict`` when the quota changed since)."""
        ...


class ReservationConflictError(KubeError):
    """The quota kept changing under us until the deadline: the client should retry."""


class QuotaGoneError(KubeError):
    """The quota object a ledger served was deleted, or replaced by a new object of the
    same name: the ledger reserved nothing more on it, and writes nothing more anywhere."""


def holder_id() -> str:
    """A name for this process's escrow entries and lease: host (pod) name, pid, a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
