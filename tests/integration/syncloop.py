"""A child process for the crash test: sync from the simulator into a cache, forever.

``python -m tests.integration.syncloop URL CACHE`` prints ``committed N`` after each sync
whose transaction committed; the test kills it with SIGKILL in the middle of a later one.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from dbquota import settings
from dbquota.services import ingesting


async def main(url: str, path: Path) -> None:
    base = settings.Settings()
    cfg = replace(
        base,
        billing=replace(base.billing, url=url, rate_limit=0, page_size=5000),
        cache=replace(base.cache, path=path),
    )
    async with ingesting.running(cfg) as ing:
        await ing.wait_ready()
        n = 0
        while True:
            await ing.sync_once()
            n += 1
            print(f"committed {n}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
