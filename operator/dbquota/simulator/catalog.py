"""The simulator's data: clusters and a price catalog, deterministic from a seed.

Clusters are ``cluster-00000`` … plus any extra ids; each has an instance class, a
replica count and a storage size drawn from the seed. Unit prices move every
``price_period`` seconds (by up to ±15 % around each class's base price, deterministically
from the seed and the period number), so the highest price seen over a window differs
from the current one; with ``price_period`` 0 they never move. A cluster's monthly
run-rate is its class's hourly price x 730 x replicas (compute) plus its GiB x the
storage price (storage).

The catalog also prices requests, for databases that run as pods: a vCPU-hour, a GiB-hour
of memory, and a GiB-month per storage class (:data:`BASE_STORAGE_CLASS_GIB_MONTH`) plus
the cluster's default class; they move by up to ±15 % per period like the rest, drawn
after the instance and storage prices so that those stay what they were for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

HOURS_PER_MONTH = 730.0

BASE_HOURLY = {
    "db.t4g.micro": 0.016,
    "db.t4g.medium": 0.065,
    "db.m6g.large": 0.152,
    "db.m6g.xlarge": 0.304,
    "db.m6g.2xlarge": 0.608,
    "db.r6g.large": 0.215,
    "db.r6g.xlarge": 0.43,
    "db.r6g.2xlarge": 0.86,
    "db.r6g.4xlarge": 1.72,
    "db.x2g.large": 0.334,
}
BASE_STORAGE_GIB_MONTH = 0.115
BASE_VCPU_HOURLY = 0.0336
BASE_MEMORY_GIB_HOURLY = 0.0045
BASE_STORAGE_CLASS_GIB_MONTH = {"gp3": 0.08, "premium-rwo": 0.17, "standard": 0.04}
BASE_DEFAULT_STORAGE_CLASS_GIB_MONTH = 0.10
STORAGE_SIZES = (20, 50, 100, 200, 500, 1000, 2000)


@dataclass(frozen=True)
class Cluster:
    """One simulated database cluster."""

    cluster_id: str
    instance_class: str
    replicas: int
    storage_gib: int


@dataclass(frozen=True)
class Prices:
    """The catalog in force during one price period."""

    period: int
    instance_hourly: dict[str, float]
    storage_gib_month: float
    vcpu_hourly: float
    memory_gib_hourly: float
    storage_class_gib_month: dict[str, float]
    default_storage_class_gib_month: float


class Catalog:
    """Clusters and prices from one seed."""

    def __init__(
        self, *, clusters: int, seed: int, extra_ids: tuple[str, ...] = (), price_period: float
    ) -> None:
        rng = random.Random(seed)  # noqa: S311 - simulated data, not secrets
        classes = sorted(BASE_HOURLY)
        ids = [f"cluster-{i:05d}" for i in range(clusters)] + [
            i for i in extra_ids if i and not i.startswith("cluster-")
        ]
        self.clusters = [
            Cluster(
                cluster_id=cid,
                instance_class=rng.choice(classes),
                replicas=rng.randint(1, 3),
                storage_gib=rng.choice(STORAGE_SIZES),
            )
            for cid in ids
        ]
        self.by_id = {c.cluster_id: c for c in self.clusters}
        self.seed = seed
        self.price_period = price_period
        self._bias = {cls: 0.9 + 0.2 * rng.random() for cls in classes}
        self._prices: Prices | None = None

    def prices(self, now: float) -> Prices:
        """The catalog of the period ``now`` falls in (computed once per period)."""
        period = int(now // self.price_period) if self.price_period > 0 else 0
        if self._prices is None or self._prices.period != period:
            rng = random.Random(f"{self.seed}:{period}")  # noqa: S311
            hourly = {
                cls: round(base * self._bias[cls] * (0.85 + 0.3 * rng.random()), 5)
                for cls, base in sorted(BASE_HOURLY.items())
            }
            storage = round(BASE_STORAGE_GIB_MONTH * (0.85 + 0.3 * rng.random()), 5)

            def move(base: float) -> float:
                return round(base * (0.85 + 0.3 * rng.random()), 6)

            self._prices = Prices(
                period=period,
                instance_hourly=hourly,
                storage_gib_month=storage,
                vcpu_hourly=move(BASE_VCPU_HOURLY),
                memory_gib_hourly=move(BASE_MEMORY_GIB_HOURLY),
                storage_class_gib_month={
                    name: move(base) for name, base in sorted(BASE_STORAGE_CLASS_GIB_MONTH.items())
                },
                default_storage_class_gib_month=move(BASE_DEFAULT_STORAGE_CLASS_GIB_MONTH),
            )
        return self._prices

    def cost(self, cluster: Cluster, now: float) -> tuple[float, float]:
        """(compute, storage) monthly run-rate of ``cluster`` at ``now``."""
        prices = self.prices(now)
        compute = prices.instance_hourly[cluster.instance_class] * HOURS_PER_MONTH
        return round(compute * cluster.replicas, 2), round(
            cluster.storage_gib * prices.storage_gib_month, 2
        )
