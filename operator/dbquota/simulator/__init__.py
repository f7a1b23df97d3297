"""The billing simulator: a real HTTP billing provider with runtime fault injection.

``dbquota billing-sim --port P --clusters N --seed S`` serves the billing provider API
that ingestion calls (per-cluster metrics, bulk pages, a price catalog whose prices move
over time) from deterministic data, and takes faults at run time through
``POST /_faults``; ``docs/simulator.md`` documents both. Modules: :mod:`.catalog` (the
data), :mod:`.faults` (what goes wrong), :mod:`.server` (the aiohttp app and process
entry point).

This package imports nothing from the operator's layers; it stands apart like a real
provider. :func:`add_arguments` is here (without aiohttp) so that ``dbquota --help`` does
not load the web server.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``dbquota billing-sim``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8089, help="port, 0 = pick a free one (default %(default)s)"
    )
    parser.add_argument(
        "--clusters", type=int, default=100, help="clusters to simulate (default %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the generated data (default %(default)s)"
    )
    parser.add_argument(
        "--cluster-id",
        action="append",
        default=[],
        metavar="ID",
        help="an extra cluster id to serve (repeatable), e.g. team-a/orders-db",
    )
    parser.add_argument(
        "--price-period",
        type=_period,
        default=60.0,
        help="seconds between two price changes of the catalog, 0 = prices never move "
        "(default %(default)g)",
    )
    parser.add_argument(
        "--no-bulk",
        action="store_true",
        help="serve no bulk listing (GET /metrics answers 404), as some providers do",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="require 'Authorization: Bearer <token>' with the token in this file",
    )
    parser.add_argument(
        "--faults",
        default="",
        metavar="JSON",
        help='a fault to start with, as POST /_faults takes it (e.g. \'{"mode": "flap"}\')',
    )


def _period(text: str) -> float:
    """A ``--price-period``: seconds, at least 0 (0 = prices never move)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value
