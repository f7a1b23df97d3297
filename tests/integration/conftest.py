"""Fixtures that start the real billing simulator (``dbquota billing-sim``) in its own
process on a free port, talk to its control API, and stop it after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.simulating import Simulator, launch, stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Start simulators with extra flags; every one is stopped after the test."""
    started: list[Simulator] = []

    def start(*flags: str, clusters: int = 200, seed: int = 7) -> Simulator:
        with (tmp_path / f"sim-{len(started)}.log").open("w") as log:
            sim = launch(*flags, log=log, clusters=clusters, seed=seed)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        stop(sim.process)


@pytest.fixture
def simulator(start_simulator: Callable[..., Simulator]) -> Simulator:
    """A simulator with 200 clusters and a bulk listing."""
    return start_simulator()
