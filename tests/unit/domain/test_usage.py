"""Quota totals: read from the status, moved by admissions, recounted from the claims.

Checks that junk in a status reads as zero; that adding a CREATE's reservation counts its
cost, one claim and its storage, and an UPDATE's only its growth; that a recount counts a
priced claim at its price until billing samples it after the charge, then at its billed
cost (a billed cost of 0, a cluster listed before it accrues, stands in for nothing: the
claim keeps its price, another kind's object its estimate), and an unpriced claim in the
caps only (in nothing while an escrow holds it); that a billed cost stands in for one
object only (a billing id two objects name, in the namespace or beyond it, counts each at
its own price, so naming a cheap claim's cluster frees no budget); and two hypothesis
properties that make the two writers agree:

- the webhook's incremental totals (:func:`usage.add`) equal a recount from the objects
  with the same reservations in flight, whatever claims, prices and reservations, also
  for claims created before the replica that admitted them from its escrow wrote their
  reservations, and updated through another replica before that write (the CREATE's
  reservation joins the UPDATE's, whose growth is no longer lost);
- a reservation confirmed (its claim's status now shows the price) changes no total;

and that adding many reservations at once (a replica's view of a busy quota) comes to the
same totals as adding them one by one.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import billing, quotas, reservations, usage
from dbquota.domain.resources import QuotaStatus, Reservation
from dbquota.kits import steps, timestamps

T0 = timestamps.from_rfc3339("2026-11-27T09:00:00Z")
STAMP = "2026-11-27T09:00:00Z"


def claim(name: str, **fields: object) -> reservations.ClaimRef:
    base: dict[str, object] = {
        "name": name,
        "uid": f"uid-{name}",
        "cluster_id": f"ns/{name}",
        "storage_gib": 100,
        "reserved_at": T0,
    }
    base.update(fields)
    return reservations.ClaimRef(**base)  # type: ignore[arg-type]


def hold(
    name: str, delta: float, *, storage: int = 50, new: bool = True, **extra: object
) -> Reservation:
    r = Reservation(
        claim=name,
        uid=f"uid-{name}",
        generation=1,
        cost=delta,
        delta=delta,
        storageGiB=storage,
        newClaim=new,
        reservedAt=STAMP,
    )
    r.update(extra)  # type: ignore[typeddict-item]
    return r


def test_junk_in_the_status_reads_as_zero() -> None:
    got = usage.of_status({"spend": {"observed": "x", "reserved": -5}, "used": {"claims": None}})
    assert got == quotas.Usage()
    assert usage.of_status({}) == quotas.Usage()


def test_adding_a_create_and_an_update() -> None:
    status = QuotaStatus(
        spend={"observed": 100.0, "reserved": 50.0, "remaining": 850.0},
        used={"claims": 2, "storageGiB": 200},
    )
    after = usage.add(
        status,
        [hold("new", 200.0), hold("grown", 25.0, storage=10, new=False, generation=2)],
        budget=1000.0,
    )
    assert after["spend"] == {"observed": 100.0, "reserved": 275.0, "remaining": 625.0}
    assert after["used"] == {
        "claims": 3,
        "storageGiB": 260,
        "degradedClaims": 0,
        "degradedStorageGiB": 0,
    }
    assert [r["claim"] for r in after["reservations"]] == ["new", "grown"]


def test_a_reservation_replaces_an_earlier_one_of_the_same_object() -> None:
    first = usage.add(QuotaStatus(), [hold("a", 100.0)], budget=1000.0)
    second = usage.add(first, [hold("a", 125.0, storage=60, generation=2)], budget=1000.0)
    assert second["spend"]["reserved"] == 125.0
    assert second["used"]["claims"] == 1
    assert second["used"]["storageGiB"] == 60
    assert len(second["reservations"]) == 1


def update(name: str, *, charged: float, growth: float, storage: int = 10) -> Reservation:
    """An UPDATE's reservation from a replica that saw none of the claim in flight."""
    return reservations.hold(
        claim_name=name,
        uid=f"uid-{name}",
        generation=2,
        charged=charged,
        cost=growth,
        storage_gib=storage,
        pricing="Live",
        degraded=False,
        new_claim=False,
        holder="b",
        now=T0 + 1,
    )


def test_a_create_written_after_the_update_of_its_claim_keeps_the_growth() -> None:
    """The leader admitted a CREATE from its escrow (its reservation written up to 5 s
    later); another replica admitted the claim's UPDATE meanwhile and wrote it. The
    CREATE's late write used to replace the UPDATE's reservation: reserved 150 -> 100,
    and generation 2 left no reservation, so the growth was lost for good."""
    for charged in (100.0, 0.0):  # the claim showed the CREATE's price already, or none
        grown = update("a", charged=charged, growth=50.0)
        status = usage.add(QuotaStatus(), [grown], budget=1000.0)
        status = usage.add(status, [hold("a", 100.0)], budget=1000.0)  # the late write
        assert status["spend"]["reserved"] == 150.0
        assert (status["used"]["claims"], status["used"]["storageGiB"]) == (1, 60)
        (kept,) = status["reservations"]
        assert (kept["generation"], kept["cost"]) == (2, 150.0)


def cost(name: str, at: float, total: float = 170.0) -> billing.ClusterCost:
    return billing.ClusterCost(cluster_id=f"ns/{name}", compute=total, storage=0.0, observed_at=at)


def test_a_recount_counts_each_claim_once() -> None:
    got = steps.finish(
        usage.recount(
            claims=[
                claim("fresh", cost=165.0),  # sampled before its charge: its price counts
                claim("billed", cost=165.0),  # sampled after: its billed cost counts
                claim("unpriced"),  # in the caps only: its cost is in a reservation or escrow
                claim("degraded", cost=10.0, degraded=True, storage_gib=30),
            ],
            held=[hold("coming", 40.0), hold("unpriced", 20.0)],
            costs={"ns/fresh": cost("fresh", T0 - 30), "ns/billed": cost("billed", T0 + 2)},
        )
    )
    assert got.billed == {"billed"}
    assert got.usage == quotas.Usage(
        observed=170.0,
        reserved=165.0 + 10.0 + 40.0 + 20.0,
        claims=5,
        storage_gib=330 + 50,
        degraded_claims=1,
        degraded_storage_gib=30,
    )


def test_an_update_built_on_its_create_in_flight_is_counted_once() -> None:
    """The claim shows its CREATE's price (199.13, 100 GiB) and the UPDATE to 300 GiB was
    built on the CREATE's reservation, not confirmed yet: that reservation holds the whole
    claim, 219.98 and 300 GiB. The recount counted the CREATE beside it: 419.11, 400 GiB."""
    shown = claim("a", cost=199.13, priced_generation=1, storage_gib=100)
    whole = hold("a", 219.98, storage=300, generation=2)
    got = steps.finish(usage.recount(claims=[shown], held=[whole], costs={})).usage
    assert (got.reserved, got.claims, got.storage_gib) == (219.98, 1, 300)
    applied = replace(shown, generation=2, storage_gib=300)  # the object updated since
    got = steps.finish(usage.recount(claims=[applied], held=[whole], costs={})).usage
    assert (got.reserved, got.claims, got.storage_gib) == (219.98, 1, 300)


def test_a_billed_cost_of_zero_does_not_stand_in_for_the_price() -> None:
    """Providers list a new cluster at 0 before it accrues: a claim admitted at 500 used
    to count 0 once billing listed it so, its whole price free for more claims. It keeps
    counting at its price until billing shows a positive run-rate, which then replaces the
    price, down as well as up."""
    admitted = claim("new", cost=500.0)
    at_zero = {"ns/new": cost("new", T0 + 10, total=0.0)}
    got = steps.finish(usage.recount(claims=[admitted], held=[], costs=at_zero))
    assert got.billed == frozenset()
    assert (got.usage.observed, got.usage.reserved) == (0.0, 500.0)
    for billed in (120.0, 900.0):
        costs = {"ns/new": cost("new", T0 + 10, total=billed)}
        got = steps.finish(usage.recount(claims=[admitted], held=[], costs=costs))
        assert got.billed == {"new"}
        assert (got.usage.observed, got.usage.reserved) == (billed, 0.0)


def test_an_object_of_another_kind_billed_at_zero_counts_at_its_estimate() -> None:
    pg = claim("Cluster/pg", owned=False, cluster_id="ns/pg", storage_gib=10)
    got = steps.finish(
        usage.recount(
            claims=[pg],
            held=[],
            costs={"ns/pg": cost("pg", T0, total=0.0)},
            estimate=lambda _: (300.0, False),
        )
    )
    assert got.billed == frozenset()
    assert (got.usage.observed, got.usage.reserved) == (0.0, 300.0)


def test_naming_a_billed_cluster_frees_no_budget() -> None:
    """spec.clusterId is the tenant's to choose: a 5,000 claim naming the cluster of a 50
    one, once billing shows it, counts at its own price, and so does the cheap one."""
    cheap = claim("cheap", cost=50.0)
    alias = claim("alias", cost=5000.0, cluster_id="ns/cheap", reserved_at=T0 + 1)
    costs = {"ns/cheap": cost("cheap", T0 + 10, total=48.0)}
    for claims in ([cheap, alias], [alias, cheap]):
        got = steps.finish(usage.recount(claims=claims, held=[], costs=costs))
        assert got.billed == frozenset()
        assert (got.usage.observed, got.usage.reserved) == (0.0, 5050.0)
    alone = steps.finish(usage.recount(claims=[cheap], held=[], costs=costs))
    assert alone.billed == {"cheap"}
    assert (alone.usage.observed, alone.usage.reserved) == (48.0, 0.0)


def test_a_cluster_named_in_another_namespace_counts_at_the_price() -> None:
    """The alias may name a cluster of another tenant's: the claim index says so."""
    alias = claim("alias", cost=5000.0, cluster_id="other/cheap")
    costs = {"other/cheap": cost("cheap", T0 + 10, total=48.0)}
    got = steps.finish(
        usage.recount(claims=[alias], held=[], costs=costs, shared={"other/cheap"}.__contains__)
    )
    assert got.billed == frozenset()
    assert (got.usage.observed, got.usage.reserved) == (0.0, 5000.0)


def test_objects_of_other_kinds_sharing_a_cluster_count_at_their_estimates() -> None:
    twins = [
        claim("Cluster/a", owned=False, cluster_id="ns/pg", storage_gib=10),
        claim("Cluster/b", owned=False, cluster_id="ns/pg", storage_gib=10),
    ]
    costs = {"ns/pg": cost("pg", T0, total=1.0)}
    got = steps.finish(
        usage.recount(claims=twins, held=[], costs=costs, estimate=lambda _: (300.0, False))
    )
    assert (got.usage.observed, got.usage.reserved) == (0.0, 600.0)


World = tuple[list[reservations.ClaimRef], list[Reservation], list[Reservation], frozenset[str]]
"""Existing claims, reservations already counted, new ones a write adds, and the claims
among the existing whose reservation is among the new (admitted from escrow: the claim was
created before the replica wrote its reservation; and, ``late``, updated meanwhile through
another replica, whose reservation for the UPDATE is counted already)."""


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Existing claims, reservations already counted, and new ones an admission adds."""
    claims: list[reservations.ClaimRef] = []
    counted: list[Reservation] = []
    fresh: list[Reservation] = []
    escrowed: set[str] = set()
    for i in range(draw(st.integers(min_value=0, max_value=12))):
        name = f"c{i}"
        kind = draw(
            st.sampled_from(
                ("priced", "unpriced-held", "coming", "growing", "escrowed", "late", "chained")
            )
        )
        storage = draw(st.integers(min_value=1, max_value=500))
        price = round(draw(st.floats(min_value=0, max_value=5000)), 2)
        target = fresh if draw(st.booleans()) else counted
        if kind == "escrowed":  # created, its reservation still in the replica's memory
            claims.append(claim(name, storage_gib=storage))
            fresh.append(hold(name, price, storage=storage))
            escrowed.add(f"uid-{name}")
        elif kind == "late":  # ... and updated through another replica before that write
            growth = round(draw(st.floats(min_value=0, max_value=500)), 2)
            more = draw(st.integers(min_value=0, max_value=100))
            shown = draw(st.booleans())  # the leader priced it from memory, or no one yet
            claims.append(
                claim(name, generation=2, storage_gib=storage + more)
                if not shown
                else claim(
                    name, generation=2, storage_gib=storage + more, cost=price, priced_generation=1
                )
            )
            counted.append(
                update(name, charged=price if shown else 0.0, growth=growth, storage=more)
            )
            fresh.append(hold(name, price, storage=storage))
            escrowed.add(f"uid-{name}")
        elif kind == "priced":
            claims.append(claim(name, cost=price, priced_generation=1, storage_gib=storage))
        elif kind == "unpriced-held":
            claims.append(claim(name, storage_gib=storage))
            counted.append(hold(name, price, storage=storage))
        elif kind == "coming":
            target.append(hold(name, price, storage=storage))
        elif kind == "chained":  # priced; an UPDATE built on its CREATE, not confirmed yet
            claims.append(claim(name, cost=price, priced_generation=1, storage_gib=storage))
            whole = round(price + draw(st.floats(min_value=0, max_value=500)), 2)
            more = storage + draw(st.integers(min_value=0, max_value=100))
            if target is fresh:
                counted.append(hold(name, price, storage=storage))
            target.append(hold(name, whole, storage=more, generation=2))
        else:  # an UPDATE admitted, the object not updated yet
            claims.append(claim(name, cost=price, priced_generation=1, storage_gib=storage))
            growth = round(draw(st.floats(min_value=0, max_value=500)), 2)
            more = draw(st.integers(min_value=0, max_value=100))
            target.append(
                hold(name, growth, storage=more, new=False, generation=2, cost=price + growth)
            )
    return claims, counted, fresh, frozenset(escrowed)


@given(worlds())
def test_adding_reservations_equals_recounting_with_them(world: World) -> None:
    """Also for claims created before their reservation was written (admitted from
    escrow): the recount before the write leaves them to the escrow, the write adds them,
    and the recount after it counts them once."""
    claims, counted, fresh, escrowed = world
    before = steps.finish(
        usage.recount(claims=claims, held=counted, costs={}, in_escrow=escrowed)
    ).usage
    spend, used = usage.fields(before, budget=1e9)
    status = QuotaStatus(spend=spend, used=used, reservations=counted)
    written = usage.add(status, fresh, budget=1e9)
    added = usage.of_status(written)
    recounted = steps.finish(
        usage.recount(claims=claims, held=written.get("reservations") or [], costs={})
    ).usage
    assert abs(added.reserved - recounted.reserved) < 0.01 * (1 + len(fresh))
    assert (added.claims, added.storage_gib) == (recounted.claims, recounted.storage_gib)


@given(worlds(), st.data())
def test_confirming_a_reservation_changes_no_total(world: World, data: st.DataObject) -> None:
    claims, counted, _, _ = world
    held = [r for r in counted if any(c.uid == r["uid"] for c in claims)]
    if not held:
        return
    confirmed = data.draw(st.sampled_from(held))
    if confirmed["generation"] > 1:  # an UPDATE is confirmed once the object changed
        gib = confirmed["storageGiB"]  # the growth, or the whole (built on the CREATE)
        claims = [
            replace(
                c,
                generation=2,
                storage_gib=gib + (0 if confirmed.get("newClaim") else c.storage_gib),
            )
            if c.uid == confirmed["uid"]
            else c
            for c in claims
        ]
    before = steps.finish(usage.recount(claims=claims, held=counted, costs={})).usage
    after_claims = [
        replace(c, cost=confirmed["cost"], priced_generation=confirmed["generation"])
        if c.uid == confirmed["uid"]
        else c
        for c in claims
    ]
    rest = [r for r in counted if r is not confirmed]
    after = steps.finish(usage.recount(claims=after_claims, held=rest, costs={})).usage
    assert abs(after.reserved - before.reserved) < 0.01
    assert (after.claims, after.storage_gib) == (before.claims, before.storage_gib)


@given(worlds(), st.lists(st.booleans(), min_size=12, max_size=12))
def test_adding_many_at_once_equals_adding_them_one_by_one(
    world: World, degraded: list[bool]
) -> None:
    _, counted, fresh, _ = world
    fresh = [{**r, "degraded": d} for r, d in zip(fresh, degraded, strict=False)]
    # Some objects held twice: the later replaces. Not a CREATE written late, after the
    # UPDATE of its claim (the ``late`` worlds): it joins that UPDATE's reservation, and
    # the view a replica keeps meets no such write (it admits CREATEs only).
    updated = {r["uid"] for r in counted if r["generation"] > 1}
    fresh += [r for r in fresh[: len(fresh) // 2] if r["uid"] not in updated]
    start = quotas.Usage(reserved=10.0, claims=3, storage_gib=30)
    held = reservations.by_uid(counted)
    at_once = usage.joined(start, fresh, held)
    one_by_one, seen = start, reservations.by_uid(counted)
    for r in fresh:
        one_by_one = usage.with_hold(one_by_one, r, replacing=seen.pop(r["uid"], None))
        seen[r["uid"]] = r
    assert at_once == one_by_one
    assert list(held) == list(seen)  # a replaced reservation moved to the end
