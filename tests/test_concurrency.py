"""Two runs on the same records at the same time, against both simulators, in-process.

Lookup-before-create is check-then-act: two runs that both look a record up before either
creates it both create it. The engine therefore writes each record under the link store's
per-record guard and reads the link again under it (``Flow._process``); a create the target
refuses because the record *already exists* is looked up again and adopted, never parked
(``Flow.create_or_adopt``); and the customers flow's refusal memory never overwrites a link
that has a target.

Every scenario is reproducible, not timing luck: the two runs take turns at Visma.net one
request each (``bench.faults.LockStep``), which makes the worst interleaving -- both look a
record up before either creates it -- happen every time. A run waiting for a record's guard
steps aside so the holder can finish (``bench.faults.GatedLinks``). The "without the guard"
controls prove the lock-step really produces the race the guard prevents.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from bbvisma.engine import Action, RecordResult, RunReport, SourceItem
from bbvisma.errors import ApiError
from bbvisma.flows.customers import CustomersFlow
from bbvisma.linkstore import LinkStore, MemoryLinkStore
from bench.faults import SUBJECTS, FaultSink, GatedLinks, LockStep
from bench.measure import flow_class
from bench.rig import Rig, SqliteDocumentCache, make_rig

RECORDS = 6
BATCH = 4


class UnguardedLinks(LinkStore):
    """A memory store without the per-record guard (the ABC's no-op): the controls."""

    def __init__(self) -> None:
        self.inner = MemoryLinkStore()

    def get(self, entity, source_key):
        return self.inner.get(entity, source_key)

    def get_many(self, entity, source_keys):
        return self.inner.get_many(entity, source_keys)

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True):
        return self.inner.put(entity, source_key, target_key, content_hash, meta, durable=durable)

    def find_by_target(self, entity, target_key):
        return self.inner.find_by_target(entity, target_key)


# --------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------
def rig_for(flow: str, links: LinkStore | None = None) -> Rig:
    """Generated debtors (and receipts over their own products for the document flows);
    for orders, the products already exist in Visma.net (their own flow is tested apart)."""
    rig = make_rig(
        debtor_count=RECORDS,
        receipt_count=0 if flow == "customers" else RECORDS,
        pool_size=RECORDS,
        bb_quota=None,
    )
    if links is not None:
        rig.links = links
    if flow == "orders":
        products = flow_class("products")(rig.context("products", batch_size=BATCH)).run()
        assert products.ok, products.summary()
        rig.documents.close()
        rig.documents = SqliteDocumentCache()  # the orders download their files themselves
    return rig


def at_once(rig: Rig, *flows: str) -> list[tuple[RunReport, FaultSink]]:
    """Start one run per flow type in its own thread, in lock-step at Visma.net; return each
    run's report and sink (every result kept), in the order given."""
    gate = LockStep()
    links = GatedLinks(rig.links, gate)
    rig.visma_app.gate = gate
    barrier = threading.Barrier(len(flows))
    out: list[Any] = [None] * len(flows)
    failures: list[BaseException] = []

    def start(index: int, flow: str) -> None:
        gate.join()
        barrier.wait()
        sink = FaultSink()
        try:
            ctx = rig.context(flow, sink=sink, batch_size=BATCH, links=links)
            out[index] = (flow_class(flow)(ctx).run(), sink)
        except BaseException as exc:  # handed to the test thread, which raises it
            failures.append(exc)
        finally:
            gate.done()

    threads = [threading.Thread(target=start, args=(i, f)) for i, f in enumerate(flows)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    rig.visma_app.gate = None
    assert not any(t.is_alive() for t in threads), "a run hangs"
    if failures:
        raise failures[0]
    return out


def results_of(runs: list[tuple[RunReport, FaultSink]]) -> list[RecordResult]:
    return [result for _report, sink in runs for result in sink.results]


def actions(runs: list[tuple[RunReport, FaultSink]]) -> Counter[str]:
    return Counter(result.action.value for result in results_of(runs))


def customer_links_all_have_a_target(rig: Rig) -> None:
    keys = SUBJECTS["customers"].source_keys(rig)
    links = rig.links.get_many("customer", keys)
    assert set(links) == keys
    for key, link in links.items():
        assert link.target_key, (key, link)
        assert SUBJECTS["customers"].target_exists(rig, link.target_key), (key, link)
        assert "refused" not in link.meta, (key, link.meta)


def customers_in_visma(rig: Rig) -> Counter[str]:
    """Visma.net customers per generated debtor name (each must be there exactly once)."""
    names = {d["name"] for d in rig.bb_sim.company(rig.api_key).debtors.values()}
    with rig.visma_sim.lock:
        return Counter(c["name"] for c in rig.visma_sim.customers.values() if c["name"] in names)


def invoice_refs(rig: Rig) -> Counter[str]:
    """Visma.net invoices per external reference."""
    with rig.visma_sim.lock:
        return Counter(doc.get("externalReference") for doc in rig.visma_sim.invoices.values())


# --------------------------------------------------------------------------------------------
# Two runs of the same flow
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["customers", "products", "orders"])
def test_two_runs_of_a_flow_at_once_write_each_record_once_and_the_other_run_skips_it(flow):
    rig = rig_for(flow)
    try:
        runs = at_once(rig, flow, flow)
        subject = SUBJECTS[flow]
        keys = subject.source_keys(rig)
        assert subject.duplicates(rig) == 0, subject.describe_duplicates(rig)
        assert subject.in_visma(rig) == keys
        # each record: one run created it, the other waited, saw its link and skipped
        assert actions(runs) == Counter({"create": len(keys), "skip": len(keys)})
        for result in results_of(runs):
            assert result.target_key and subject.target_exists(rig, str(result.target_key))
        assert all(report.ok for report, _sink in runs)
    finally:
        rig.close()


def test_two_customers_runs_at_once_leave_every_debtor_linked_and_nothing_parked():
    rig = rig_for("customers")
    try:
        at_once(rig, "customers", "customers")
        customer_links_all_have_a_target(rig)
        assert set(customers_in_visma(rig).values()) == {1}
        # the quiet run after: nothing left to do
        again = CustomersFlow(rig.context("customers", batch_size=BATCH)).run()
        assert again.counts["skip"] == RECORDS and again.items == RECORDS
    finally:
        rig.close()


@pytest.mark.parametrize("guarded", [True, False], ids=["with_guard", "without_guard"])
def test_two_orders_runs_race_for_each_invoice_and_only_the_guard_prevents_duplicates(guarded):
    """The customers exist already, so the two runs race for the invoices alone: in lock-step
    both look each invoice up before either creates it. Visma.net does not refuse a second
    invoice with the same external reference, so without the guard (the control: a link
    store with the ABC's no-op guard) every invoice is there twice -- the race is real and
    reproduced every time; with it, once."""
    rig = rig_for("orders", None if guarded else UnguardedLinks())
    try:
        customers = CustomersFlow(rig.context("customers", batch_size=BATCH)).run()
        assert customers.counts["create"] == RECORDS
        at_once(rig, "orders", "orders")
        refs = invoice_refs(rig)
        assert len(refs) == RECORDS
        assert set(refs.values()) == {1 if guarded else 2}, refs
    finally:
        rig.close()


# --------------------------------------------------------------------------------------------
# The orders flow creating a customer while the customers flow handles the same debtor
# --------------------------------------------------------------------------------------------
class GuardsCounted(MemoryLinkStore):
    """The memory store, counting who asked for each record's guard."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[tuple[str, str]] = Counter()

    def guard(self, entity, source_key):
        self.asked[(entity, source_key)] += 1
        return super().guard(entity, source_key)


def adopted_after_refusal(results: list[RecordResult]) -> list[str]:
    return [
        r.source_key
        for r in results
        if isinstance(r.response, dict) and r.response.get("matched_by") == "refused_as_existing"
    ]


@pytest.mark.parametrize("guarded", [True, False], ids=["with_guard", "without_guard"])
def test_orders_creating_a_customer_race_the_customers_run_without_duplicates_or_parks(guarded):
    """The orders run creates the customer of its first receipt (debtor 10001) through the
    customers flow while the customers run starts with that very debtor: in lock-step both
    look it up before either creates it. With the guard, one of them waits, sees the other's
    link and does not create; without it (the control), the second POST is refused as
    "already exists" -- and adopted, not parked. Either way: one customer per debtor, every
    debtor linked, every invoice on its debtor's customer."""
    links = GuardsCounted() if guarded else UnguardedLinks()
    rig = rig_for("orders", links)
    try:
        runs = at_once(rig, "orders", "customers")
        (orders, _), (customers, customers_sink) = runs
        assert orders.ok and customers.ok, (orders.summary(), customers.summary())
        assert orders.counts["create"] == RECORDS  # every receipt became one invoice
        assert customers.counts["park"] == 0 and customers.counts["error"] == 0
        assert set(customers_in_visma(rig).values()) == {1}, customers_in_visma(rig)
        customer_links_all_have_a_target(rig)
        linked = {
            link.target_key
            for link in rig.links.get_many(
                "customer", SUBJECTS["customers"].source_keys(rig)
            ).values()
        }
        with rig.visma_sim.lock:
            invoiced = {doc["customer"]["number"] for doc in rig.visma_sim.invoices.values()}
        assert invoiced == linked, (invoiced, linked)
        assert SUBJECTS["orders"].duplicates(rig) == 0
        if guarded:
            # both runs wanted to write debtor 10001 and met at its guard; nothing collided
            assert links.asked[("customer", "10001")] == 2
            assert adopted_after_refusal(customers_sink.results) == []
        else:
            assert adopted_after_refusal(customers_sink.results) == ["10001"]
    finally:
        rig.close()


# --------------------------------------------------------------------------------------------
# A create refused because the record exists already
# --------------------------------------------------------------------------------------------
class CreatedMeanwhile:
    """The Visma.net client, except that someone else creates the same customer just before
    this run's POST reaches Visma.net (another system, or a run not sharing our guard):
    Visma.net then answers 400 "A customer with the ID ... already exists"."""

    def __init__(self, visma: Any):
        self._visma = visma
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._visma, name)

    def create_customer(self, payload):
        self._visma.create_customer(payload)  # the other one's create
        try:
            return self._visma.create_customer(payload)
        except ApiError as exc:
            self.refused.append(exc.message)
            raise


def test_a_customer_create_refused_as_already_existing_is_adopted_and_linked():
    rig = rig_for("customers")
    try:
        visma = CreatedMeanwhile(rig.visma)
        sink = FaultSink()
        ctx = rig.context("customers", sink=sink, batch_size=BATCH, visma=visma)
        report = CustomersFlow(ctx).run()
        assert len(visma.refused) == RECORDS
        assert all("already exists" in text for text in visma.refused)
        assert report.counts["create"] == RECORDS and report.ok
        for result in sink.results:
            assert result.response["adopted"] is True
            assert result.response["matched_by"] == "refused_as_existing"
        customer_links_all_have_a_target(rig)
        assert set(customers_in_visma(rig).values()) == {1}
    finally:
        rig.close()


def test_without_the_guard_the_second_runs_refused_creates_are_adopted_not_parked():
    """Two customers runs in lock-step without the guard: both look a debtor up, both POST,
    Visma.net refuses the second POST as a duplicate. That refusal is adopted (looked up and
    linked), never parked, and never overwrites the first run's link."""
    rig = rig_for("customers", UnguardedLinks())
    try:
        runs = at_once(rig, "customers", "customers")
        results = results_of(runs)
        assert not [r for r in results if r.action in (Action.PARK, Action.ERROR)]
        adopted = [
            r
            for r in results
            if isinstance(r.response, dict)
            and r.response.get("matched_by") == "refused_as_existing"
        ]
        assert adopted, "the lock-step should make at least one create collide"
        customer_links_all_have_a_target(rig)
        assert set(customers_in_visma(rig).values()) == {1}
    finally:
        rig.close()


def test_a_refusal_never_overwrites_a_link_that_has_a_target():
    rig = rig_for("customers")
    try:
        flow = CustomersFlow(rig.context("customers"))
        item = SourceItem("10001", None, {"name": "ACME GmbH"})
        refusal = ApiError("Visma.net 400 on POST /v1/customer: Country 'XX' not found.")
        # linked by another run meanwhile: the refusal must leave that link alone
        rig.links.put("customer", "10001", "10001", "h-other", {"by": "other run"})
        with pytest.raises(ApiError), flow.remember_refusal(item, {"name": "ACME GmbH"}):
            raise refusal
        kept = rig.links.get("customer", "10001")
        assert (kept.target_key, kept.content_hash, kept.meta) == (
            "10001",
            "h-other",
            {"by": "other run"},
        )
        # no link with a target: the refusal is remembered (no call next time, same data)
        item2 = SourceItem("10002", None, {"name": "Beta GmbH"})
        with pytest.raises(ApiError), flow.remember_refusal(item2, {"name": "Beta GmbH"}):
            raise refusal
        remembered = rig.links.get("customer", "10002")
        assert remembered.target_key is None and "Country 'XX'" in remembered.meta["refused"]
    finally:
        rig.close()
