"""The SQLite billing cache on real files in a temporary folder.

Checks: WAL mode and the schema version; that a v1 file is migrated in place keeping its
rows, and a v2 file keeping its price history (v3 adds requests prices); that requests
prices (vCPU, memory, per storage class with the default class) are stored with history,
read back highest-per-class over a window and survive reopening; that a sync's rows are
written in ONE transaction (a bad row leaves none of that sync behind) and that writing
does not block the event loop (no blocking sqlite3 call on it); latest-per-cluster with
when each was observed, history buckets; the highest price per class over a window,
counting the price in force when the window starts, over the catalogs in the newest
catalog's currency (and those naming none) only; compaction that keeps the newest price
and cost, and the currency of the catalog of each price kept; and that a file which is
not a database, or fails its check, or has a newer schema, is moved aside (kept) and
replaced by a working cache.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from dbquota import errors
from dbquota.adapters import cache as cache_
from dbquota.domain.billing import ClusterCost, PriceBook


def cost(cid: str, compute: float, at: float, storage: float = 1.0) -> ClusterCost:
    return ClusterCost(cluster_id=cid, compute=compute, storage=storage, observed_at=at)


def book(at: float, large: float, storage: float = 0.1) -> PriceBook:
    return PriceBook(
        instance_hourly={"db.r6g.large": large, "db.t4g.micro": 0.01},
        storage_gib_month=storage,
        observed_at=at,
    )


def record(
    costs: list[ClusterCost], prices: PriceBook | None = None, *, at: float = 0.0, ok: bool = True
) -> cache_.SyncRecord:
    return cache_.SyncRecord(started_at=at, finished_at=at, ok=ok, costs=costs, prices=prices)


def history(path: Path, cluster_id: str) -> list[float]:
    """One cluster's compute costs in the ``samples`` table, oldest first (read from the
    file: the operator itself never reads history back)."""
    with sqlite3.connect(path) as raw:
        query = "SELECT compute FROM samples WHERE cluster_id = ? ORDER BY bucket"
        return [row[0] for row in raw.execute(query, (cluster_id,))]


async def test_new_cache_is_wal_with_the_current_schema(tmp_path: Path) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    await c.close()
    with sqlite3.connect(tmp_path / "c.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == cache_.SCHEMA_VERSION
    assert cache_.SCHEMA_VERSION >= 2


async def test_a_v1_file_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript(cache_.MIGRATIONS[0])
        raw.execute("INSERT INTO latest VALUES ('c1', 5.0, 1.0, 100.0)")
        raw.execute("PRAGMA user_version = 1")
    c = await cache_.Cache.open(path)
    assert c.quarantined is None
    assert (await c.latest())["c1"].compute == 5.0
    assert await c.last_success() is None  # the v2 journal exists and is empty
    await c.close()


async def test_a_v2_file_is_migrated_keeping_its_price_history(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as raw:
        for script in cache_.MIGRATIONS[:2]:
            raw.executescript(script)
        raw.execute("INSERT INTO prices VALUES ('instance', 'db.r6g.large', 100.0, 0.5)")
        raw.execute("INSERT INTO prices VALUES ('storage', '', 100.0, 0.1)")
        raw.execute("PRAGMA user_version = 2")
    c = await cache_.Cache.open(path)
    assert c.quarantined is None
    old = await c.latest_prices()
    assert old is not None
    assert (old.instance_hourly, old.storage_gib_month) == ({"db.r6g.large": 0.5}, 0.1)
    assert (old.vcpu_hourly, old.storage_class_gib_month) == (None, {})  # nothing known yet
    await c.write_sync(record([], requests_book(200, vcpu=0.03), at=200))
    highest = await c.highest_prices(since=0)
    assert highest is not None
    assert highest.instance_hourly["db.r6g.large"] == 0.5  # the v2 history still counts
    assert highest.vcpu_hourly == 0.03
    await c.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == cache_.SCHEMA_VERSION == 4
        indexes = raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        assert ("prices_by_time",) in indexes
        with pytest.raises(sqlite3.IntegrityError):  # the widened CHECK still refuses
            raw.execute("INSERT INTO prices VALUES ('vcpu', '', 300.0, -1.0)")


def requests_book(
    at: float, *, vcpu: float, gp3: float = 0.08, default: float = 0.1, extra: bool = False
) -> PriceBook:
    classes: dict[str | None, float] = {None: default, "gp3": gp3, "standard": 0.04}
    if extra:
        classes["premium-rwo"] = 0.17
    return PriceBook(
        instance_hourly={"db.r6g.large": 0.2},
        storage_gib_month=0.1,
        observed_at=at,
        vcpu_hourly=vcpu,
        memory_gib_hourly=0.0045,
        storage_class_gib_month=classes,
    )


async def test_requests_prices_are_stored_with_history_and_survive_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite3"
    c = await cache_.Cache.open(path)
    rows = await c.write_sync(record([], requests_book(100, vcpu=0.05, gp3=0.12, extra=True)))
    # class, storage, vcpu + memory, 4 storage classes, the catalog's currency, sync
    assert rows == 1 + 1 + 2 + 4 + 1 + 1
    await c.write_sync(record([], requests_book(200, vcpu=0.03, gp3=0.07, default=0.2)))
    await c.write_sync(record([], requests_book(300, vcpu=0.04, gp3=0.08)))
    await c.close()
    c = await cache_.Cache.open(path)
    latest = await c.latest_prices()
    assert latest == requests_book(300, vcpu=0.04, gp3=0.08)
    highest = await c.highest_prices(since=150)  # 100's prices were in force at 150
    assert highest is not None
    assert highest.vcpu_hourly == 0.05
    assert dict(highest.storage_class_gib_month) == {
        None: 0.2,
        "gp3": 0.12,
        "standard": 0.04,
        "premium-rwo": 0.17,
    }
    highest = await c.highest_prices(since=250)
    assert highest is not None
    assert (highest.vcpu_hourly, highest.storage_class_gib_month["gp3"]) == (0.04, 0.08)
    await c.close()


async def test_write_and_read_latest_history_and_staleness(tmp_path: Path) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    rows = await c.write_sync(record([cost("a", 1, 100), cost("b", 2, 100)], book(100, 0.2)))
    # latest, samples, prices (2 classes + storage), the catalog's currency, journal
    assert rows == 2 + 2 + 3 + 1 + 1
    await c.write_sync(record([cost("a", 3, 4000)], at=4000))
    latest = await c.latest()
    assert latest["a"].compute == 3
    assert latest["b"].compute == 2
    assert history(tmp_path / "c.sqlite3", "a") == [1, 3]  # two hourly buckets
    assert {cid: 4100 - cost.observed_at for cid, cost in latest.items()} == {"a": 100, "b": 4000}
    assert await c.last_success() == 4000
    await c.close()


async def test_an_older_observation_never_overwrites_a_newer_latest(tmp_path: Path) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    await c.write_sync(record([cost("a", 9, 500)]))
    await c.write_sync(record([cost("a", 1, 400)]))
    assert (await c.latest())["a"].compute == 9
    await c.close()


async def test_a_sync_is_one_transaction(tmp_path: Path) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    bad_prices = PriceBook(instance_hourly={"x": -1.0}, storage_gib_month=0.1, observed_at=1)
    with pytest.raises(errors.CacheError):
        await c.write_sync(record([cost("a", 1, 1), cost("b", 1, 1)], bad_prices))
    assert await c.latest() == {}
    assert await c.row_counts() == {
        "latest": 0,
        "samples": 0,
        "prices": 0,
        "syncs": 0,
        "catalogs": 0,
    }
    await c.write_sync(record([cost("a", 1, 1)]))  # the connection is usable afterwards
    assert list(await c.latest()) == ["a"]
    await c.close()


async def test_writing_a_large_sync_leaves_the_event_loop_free(tmp_path: Path) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    ticks = 0
    done = False

    async def heartbeat() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    start = ticks
    await c.write_sync(record([cost(f"c{i}", 1, 1) for i in range(50_000)]))
    done = True
    await beat
    # A blocking write would let the heartbeat run at most a handful of times (once per
    # await in write_sync); a write in aiosqlite's thread lets it spin meanwhile.
    assert ticks - start > 50
    await c.close()


async def test_highest_price_over_the_window_counts_the_price_in_force_at_its_start(
    tmp_path: Path,
) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    await c.write_sync(record([], book(100, 0.50, storage=0.2)))  # before the window
    await c.write_sync(record([], book(200, 0.30, storage=0.1)))  # in force at its start
    await c.write_sync(record([], book(300, 0.40, storage=0.1)))
    await c.write_sync(record([], book(400, 0.20, storage=0.1)))
    highest = await c.highest_prices(since=250)
    assert highest is not None
    assert highest.instance_hourly["db.r6g.large"] == 0.40
    highest = await c.highest_prices(since=150)
    assert highest is not None
    assert highest.instance_hourly["db.r6g.large"] == 0.50  # 0.50 was in force at 150
    assert highest.storage_gib_month == 0.2
    latest = await c.latest_prices()
    assert latest is not None
    assert latest.instance_hourly["db.r6g.large"] == 0.20
    assert latest.observed_at == 400
    await c.close()


async def test_compaction_drops_old_history_but_keeps_the_newest_of_each(
    tmp_path: Path,
) -> None:
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    await c.write_sync(record([cost("a", 1, 100)], book(100, 0.5), at=100))
    await c.write_sync(record([cost("b", 1, 10_000)], book(10_000, 0.3), at=10_000))
    deleted = await c.compact(before=5_000)
    assert deleted > 0
    assert set(await c.latest()) == {"a", "b"}  # latest costs are never compacted
    assert history(tmp_path / "c.sqlite3", "a") == []
    highest = await c.highest_prices(since=0)
    assert highest is not None
    assert highest.instance_hourly["db.r6g.large"] == 0.3
    await c.close()


async def test_the_currency_each_catalog_named_is_read_back_with_its_prices(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite3"
    c = await cache_.Cache.open(path)
    assert await c.latest_prices() is None
    await c.write_sync(record([], replace(book(100, 0.5), currency="EUR"), at=100))
    await c.write_sync(record([], replace(book(200, 0.3), currency="USD"), at=200))
    await c.close()
    c = await cache_.Cache.open(path)  # what a restart reads
    latest, highest = await c.latest_prices(), await c.highest_prices(since=0)
    assert latest is not None
    assert highest is not None
    assert (latest.currency, latest.instance_hourly["db.r6g.large"]) == ("USD", 0.3)
    # The highest prices of the window are in the newest catalog's currency, taken over
    # the catalogs in it: 0.5 EUR is not a higher price than 0.3 USD, it is another unit.
    assert (highest.currency, highest.instance_hourly["db.r6g.large"]) == ("USD", 0.3)
    await c.write_sync(record([], book(300, 0.3), at=300))  # a catalog that names none
    latest = await c.latest_prices()
    assert latest is not None
    assert latest.currency is None  # not the older catalog's
    await c.write_sync(record([], replace(book(400, 0.3), currency="USD"), at=400))
    await c.compact(before=1_000)  # only the newest catalog's row is left ...
    latest = await c.latest_prices()
    assert latest is not None
    assert latest.currency == "USD"  # ... and it still names it
    await c.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT observed_at, currency FROM catalogs").fetchall() == [
            (400.0, "USD")
        ]


async def test_the_highest_prices_leave_out_catalogs_in_another_currency(
    tmp_path: Path,
) -> None:
    """The provider priced in EUR, then USD. A catalog naming no currency (or stored
    before currencies were) is not known to be in another one: it counts."""
    c = await cache_.Cache.open(tmp_path / "c.sqlite3")
    try:
        euros = replace(book(100, 0.9, storage=0.5), currency="EUR")
        euros = replace(euros, instance_hourly={**euros.instance_hourly, "db.old.class": 5.0})
        await c.write_sync(record([], euros, at=100))
        await c.write_sync(record([], book(150, 0.4), at=150))  # names none
        await c.write_sync(record([], replace(book(200, 0.3), currency="USD"), at=200))
        for since in (0, 120):  # EUR's prices in the window, or in force at its start
            highest = await c.highest_prices(since=since)
            assert highest is not None
            assert highest.currency == "USD"
            assert highest.instance_hourly["db.r6g.large"] == 0.4
            assert "db.old.class" not in highest.instance_hourly
            assert highest.storage_gib_month == 0.1
        await c.write_sync(record([], replace(book(10_000, 0.2), currency="USD"), at=10_000))
        await c.compact(before=5_000)
        # The EUR class's price is kept (the newest of its item), and so is the currency
        # of its catalog: read as unknown, it would count again.
        highest = await c.highest_prices(since=0)
        assert highest is not None
        assert "db.old.class" not in highest.instance_hourly
    finally:
        await c.close()


async def test_a_v3_file_is_migrated_and_its_catalogs_name_no_currency(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    with sqlite3.connect(path) as raw:
        for script in cache_.MIGRATIONS[:3]:
            raw.executescript(script)
        raw.execute("INSERT INTO prices VALUES ('instance', 'db.r6g.large', 100.0, 0.5)")
        raw.execute("INSERT INTO prices VALUES ('storage', '', 100.0, 0.1)")
        raw.execute("PRAGMA user_version = 3")
    c = await cache_.Cache.open(path)
    assert c.quarantined is None
    old = await c.latest_prices()
    assert old is not None
    assert (old.instance_hourly, old.currency) == ({"db.r6g.large": 0.5}, None)  # unknown
    await c.write_sync(record([], replace(book(200, 0.4), currency="USD"), at=200))
    new = await c.latest_prices()
    assert new is not None
    assert new.currency == "USD"
    await c.close()


async def test_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    c = await cache_.Cache.open(path)
    await c.write_sync(record([cost(f"c{i}", i, 1) for i in range(100)], book(1, 0.2)))
    await c.close()
    c = await cache_.Cache.open(path)
    assert len(await c.latest()) == 100
    await c.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer-schema"])
async def test_an_unusable_file_is_quarantined_kept_and_replaced(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        c = await cache_.Cache.open(path)
        await c.write_sync(record([cost(f"c{i}", i, 1) for i in range(3000)]))
        await c.close()
        if damage == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[:4096] + b"\x00" * 100 + data[8192:])
        else:
            with sqlite3.connect(path) as raw:
                raw.execute(f"PRAGMA user_version = {cache_.SCHEMA_VERSION + 1}")
    original = path.read_bytes()
    c = await cache_.Cache.open(path)
    assert c.quarantined is not None
    assert c.quarantined.moved_to.read_bytes() == original  # kept for a post-mortem
    assert "QUARANTINED" in caplog.text
    assert await c.latest() == {}
    await c.write_sync(record([cost("fresh", 1, 1)]))
    assert list(await c.latest()) == ["fresh"]
    await c.close()


async def test_rebuild_moves_a_file_aside_while_running(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    c = await cache_.Cache.open(path)
    await c.write_sync(record([cost("a", 1, 1)]))
    quarantine = await c.rebuild("test")
    assert quarantine.moved_to.exists()
    assert await c.latest() == {}
    await c.close()


async def test_a_file_that_cannot_be_opened_is_an_error_not_a_quarantine(tmp_path: Path) -> None:
    folder = tmp_path / "is-a-folder.sqlite3"
    folder.mkdir()
    with pytest.raises(errors.CacheError, match="cannot open"):
        await cache_.Cache.open(folder)
    assert folder.is_dir()  # left where it was
